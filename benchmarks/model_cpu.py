#!/usr/bin/env python
"""CPU forward-pass timing of deit-scratch against transformers, side by side in one process, reported as ratios.

    .venv/bin/python benchmarks/model_cpu.py [--preset deit_tiny_distilled_patch16_224] [--batches 1 2 4 8] [--repeats 5]

Both models hold the same random weights (ours saved, loaded by transformers). For each batch size and attention
implementation it prints the median time of `repeats` runs (after one warm-up) and ours / transformers (< 1: we are faster).
"""
import argparse, statistics, tempfile, time
import torch
from deit_scratch import DeiTConfig, DeiTForImageClassificationWithTeacher

def median_time(f, repeats:int) -> float:
    f()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="deit_tiny_distilled_patch16_224")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    import transformers
    torch.manual_seed(0)
    ours = DeiTForImageClassificationWithTeacher(DeiTConfig.from_preset(a.preset)).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = {impl: transformers.DeiTForImageClassificationWithTeacher.from_pretrained(d, attn_implementation=impl).eval()
                  for impl in ("eager", "sdpa")}
    size = ours.config.image_size
    print(f"{a.preset}, torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, fp32")
    print(f"{'batch':>5} {'impl':>6} {'ours ms':>9} {'hf ms':>9} {'ours/hf':>8}")
    for b in a.batches:
        x = torch.randn(b, 3, size, size)
        for impl in ("eager", "sdpa"):
            ours.set_attn_implementation(impl)
            with torch.inference_mode():
                t_ours = median_time(lambda: ours(x), a.repeats)
                t_hf = median_time(lambda: theirs[impl](x), a.repeats)
                diff = (ours(x).logits - theirs[impl](x).logits).abs().max().item()
            print(f"{b:>5} {impl:>6} {t_ours*1e3:>9.1f} {t_hf*1e3:>9.1f} {t_ours/t_hf:>8.2f}   (max |logit diff| {diff:.1e})")

if __name__ == "__main__":
    main()
