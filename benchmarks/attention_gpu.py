#!/usr/bin/env python
"""GPU benchmark of our Triton flash-attention kernels (deit_scratch.flash_attention, notebook 16) against eager
attention and PyTorch SDPA's FlashAttention-2 backend, at DeiT shapes; then whole-model inference.

    .venv/bin/python benchmarks/attention_gpu.py                 # full run on a CUDA GPU (a few minutes)
    .venv/bin/python benchmarks/attention_gpu.py --tune          # also search tile sizes / warps / stages first
    .venv/bin/python benchmarks/attention_gpu.py --quick         # only the goal shape and batch 1/8 of the model table
    .venv/bin/python benchmarks/attention_gpu.py --smoke         # no GPU: every code path on the CPU, in Triton's
                                                                 # interpreter, tiny shapes, meaningless times

1. Correctness: ours, forward and backward, against attention computed in float64, in fp16 and bf16 (and fp32), next
   to SDPA's own error; the run stops if ours is more than 2x further from float64 than SDPA.
2. Attention alone: batch 64/128/256, heads 3/6/12 (DeiT-Ti/S/B), 198 and 578 tokens (224 and 384 px), head width 64,
   fp16 and bf16, forward (no grad) and forward+backward; median time of `triton.testing.do_bench`, TFLOP/s
   (forward 4·B·H·N²·D, forward+backward 3.5x that, the FlashAttention papers' convention) and time / SDPA-flash time.
   Goal: forward <= 1.25x and forward+backward <= 1.5x SDPA-flash at batch 128, 198 tokens, head width 64, bf16.
3. Model: deit-base-distilled (random weights), inference, batch 1/2/4/8, eager vs sdpa vs triton, fp32 and fp16.
4. Throughput (issue 10): images/s of DeiT-Ti/S/B (the paper's models, no distillation token) in bf16 at batch 256,
   ours (sdpa, triton) against transformers (sdpa) on the same GPU and the paper's V100 figures (2536 / 940 / 292 img/s,
   Table 1); then a bf16 training step (forward + backward + AdamW, autocast, DeiT-Ti, batch 128), ours against
   transformers' model for the same checkpoint (`ViTForImageClassification`, as the Hub's non-distilled DeiT), in
   images/s. transformers is optional: without it, only ours.

    .venv/bin/python benchmarks/attention_gpu.py --quick --throughput-only   # only table 4 (about a minute)

Tables are printed as Markdown, ready for benchmarks/RESULTS.md.
"""
import argparse, contextlib, os, statistics, sys, time

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--batches", nargs="+", type=int, default=[64, 128, 256])
    ap.add_argument("--heads", nargs="+", type=int, default=[3, 6, 12])
    ap.add_argument("--tokens", nargs="+", type=int, default=[198, 578])
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--model-batches", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--model-preset", default="deit_base_distilled_patch16_224")
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model table")
    ap.add_argument("--no-throughput", action="store_true", help="skip the throughput and training-step table")
    ap.add_argument("--throughput-only", action="store_true", help="only the throughput and training-step table")
    ap.add_argument("--throughput-batch", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--tune", action="store_true", help="search FlashConfig at the goal shape and use the best one")
    ap.add_argument("--quick", action="store_true", help="goal shape only, model batches 1 and 8")
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes: checks the code, not the speed")
    return ap.parse_args()

A = parse_args()
# Triton reads TRITON_INTERPRET when triton is imported: decide before importing torch, triton or deit_scratch
if A.smoke: os.environ["TRITON_INTERPRET"] = "1"
elif os.environ.pop("TRITON_INTERPRET", None) not in (None, "0"):
    print("note: ignoring TRITON_INTERPRET (the benchmark compiles the kernels for the GPU)", file=sys.stderr)

import torch
import torch.nn.functional as F
if not A.smoke and not torch.cuda.is_available():
    sys.exit("benchmarks/attention_gpu.py needs an NVIDIA GPU with CUDA: torch.cuda.is_available() is False here "
             f"(torch {torch.__version__}). Run it on a CUDA machine with the CUDA build of PyTorch and triton installed "
             "(`pip install triton`), or pass --smoke to run the same code paths on the CPU in Triton's interpreter "
             "(correctness only, meaningless times).")
try: import triton, triton.testing
except ImportError: sys.exit("benchmarks/attention_gpu.py needs triton: `pip install triton`")
from torch.nn.attention import sdpa_kernel, SDPBackend
import deit_scratch.flash_attention as fa
from deit_scratch.attention import eager_attention
from deit_scratch import DeiTConfig, DeiTForImageClassificationWithTeacher

DEV = "cpu" if A.smoke else "cuda"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
GOAL = dict(B=128, N=198, D=64, dtype="bf16", fwd=1.25, fwd_bwd=1.5)
if A.smoke:   # tiny shapes: the interpreter runs every program instance one after the other in NumPy
    A.batches, A.heads, A.tokens, A.model_batches = [1], [2], [7, 198], [1, 2]
    A.throughput_batch, A.train_batch = 2, 2
    GOAL["B"] = 1
if A.quick: A.batches, A.heads, A.tokens, A.model_batches = [GOAL["B"]], [3, 6, 12], [GOAL["N"]], [1, 8]

# -- helpers ---------------------------------------------------------------------------------------------------------------
def bench(fn, grad_to_none=None) -> float:
    "Median milliseconds of fn(): triton.testing.do_bench on the GPU (CUDA events, L2 flushed between runs)"
    if A.smoke:
        fn(); ts = []
        for _ in range(3):
            t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(ts)
    return triton.testing.do_bench(fn, grad_to_none=grad_to_none, return_mode="median")

def flash_ctx():
    "Force SDPA's FlashAttention-2 backend (on the CPU, where it does not exist, let SDPA choose)"
    return contextlib.nullcontext() if A.smoke else sdpa_kernel(SDPBackend.FLASH_ATTENTION)

def eager(q, k, v): return eager_attention(q, k, v)[0]
def sdpa_flash(q, k, v):
    with flash_ctx(): return F.scaled_dot_product_attention(q, k, v)
def ours(config=None): return lambda q, k, v: fa.flash_attention(q, k, v, config=config)

def qkv(B, H, N, D, dtype, n=3, requires_grad=False):
    "`n` random (B, H, N, D) tensors laid out as DeiTAttention passes them: views of (B, N, H, D)"
    ts = torch.randn(n, B, N, H, D, device=DEV, dtype=dtype).transpose(2, 3).unbind(0)
    return [t.requires_grad_() if requires_grad and i < 3 else t for i, t in enumerate(ts)]

def rel_err(a, ref) -> float:
    return ((a.double() - ref).abs().max() / ref.abs().max()).item()

def fwd_flops(B, H, N, D) -> float: return 4.0 * B * H * N * N * D

def timed(fn, B, H, N, D, dtype):
    "(forward ms, forward+backward ms) of fn on fresh inputs, or None where it runs out of memory"
    res = []
    for backward in (False, True):
        try:
            q, k, v, do = qkv(B, H, N, D, dtype, n=4, requires_grad=backward)
            if backward: res.append(bench(lambda: fn(q, k, v).backward(do), grad_to_none=[q, k, v]))
            else:
                with torch.no_grad(): res.append(bench(lambda: fn(q, k, v)))
        except torch.cuda.OutOfMemoryError: res.append(None)
        finally:
            q = k = v = do = None
            if DEV == "cuda": torch.cuda.empty_cache()
    return res

def fmt(ms): return "OOM" if ms is None else f"{ms:.3f}"

# -- 1. correctness -----------------------------------------------------------------------------------------------------
def check_correctness():
    print("## Correctness (relative error vs float64: max |x - ref| / max |ref|)\n")
    print("| dtype | B | H | N | D | ours out | SDPA out | ours dQ | ours dK | ours dV | SDPA dQ | SDPA dK | SDPA dV |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    shapes = [(2, 12, 198, A.head_dim), (2, 6, 578, A.head_dim), (3, 3, 7, A.head_dim)] if not A.smoke else [(1, 2, 7, 64), (1, 2, 198, 64)]
    for name in sorted(set(A.dtypes) | {"fp32"}):
        dtype = DTYPES[name]
        for B, H, N, D in shapes:
            q, k, v, do = qkv(B, H, N, D, dtype, n=4)
            ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
            o_ref = torch.softmax(ref[0] @ ref[1].transpose(-1, -2) * D ** -0.5, -1) @ ref[2]
            o_ref.backward(do.double())
            errs = {}
            for impl, fn in (("ours", ours()), ("sdpa", sdpa_flash if dtype != torch.float32 else
                                                   lambda q, k, v: F.scaled_dot_product_attention(q, k, v))):
                x = [t.detach().clone().requires_grad_() for t in (q, k, v)]
                o = fn(*x)
                o.backward(do)
                errs[impl] = [rel_err(o.detach(), o_ref.detach())] + [rel_err(t.grad, r.grad) for t, r in zip(x, ref)]
            floor = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
            bad = [i for i in range(4) if errs["ours"][i] > max(2 * errs["sdpa"][i], floor)]
            ok &= not bad
            e, s = errs["ours"], errs["sdpa"]
            print(f"| {name} | {B} | {H} | {N} | {D} | {e[0]:.1e} | {s[0]:.1e} | {e[1]:.1e} | {e[2]:.1e} | {e[3]:.1e} "
                  f"| {s[1]:.1e} | {s[2]:.1e} | {s[3]:.1e} |" + ("  <-- too far" if bad else ""))
    print()
    if not ok: sys.exit("ours is more than 2x further from float64 than SDPA somewhere above: not timing a wrong kernel")

# -- optional: tuning ---------------------------------------------------------------------------------------------------
def tune():
    "Grid search of FlashConfig at the goal shape: forward parameters first, then backward ones; returns the best config"
    B, N, D, dtype = GOAL["B"], GOAL["N"], GOAL["D"], DTYPES[GOAL["dtype"]]
    H = 12
    base = fa.default_config(D, dtype)
    def try_cfg(cfg, backward):
        try: return timed(ours(cfg), B, H, N, D, dtype)[int(backward)]
        except Exception: return None   # e.g. triton's OutOfResources (shared memory) for large tiles
    fwd_grid = [dict(block_m=m, block_n=n, num_warps=w, num_stages=s) for m in (64, 128) for n in (32, 64, 128)
                for w in (4, 8) for s in (2, 3, 4)]
    bwd_grid = [dict(bwd_block_big=b, bwd_block_small=sm, bwd_num_warps=w, bwd_num_stages=s) for b in (64, 128)
                for sm in (16, 32, 64) for w in (4, 8) for s in (2, 3, 4, 5)]
    if A.smoke: fwd_grid, bwd_grid = fwd_grid[:2], bwd_grid[:2]
    print(f"## Tuning at B={B}, H={H}, N={N}, D={D}, {GOAL['dtype']}\n")
    res = [(try_cfg(fa.FlashConfig(**{**base.__dict__, **g}), False), g) for g in fwd_grid]
    res = sorted([r for r in res if r[0] is not None], key=lambda r: r[0])
    for t, g in res[:5]: print(f"forward  {t:.3f} ms  {g}")
    best = fa.FlashConfig(**{**base.__dict__, **res[0][1]})
    res = [(try_cfg(fa.FlashConfig(**{**best.__dict__, **g}), True), g) for g in bwd_grid]
    res = sorted([r for r in res if r[0] is not None], key=lambda r: r[0])
    for t, g in res[:5]: print(f"fwd+bwd  {t:.3f} ms  {g}")
    best = fa.FlashConfig(**{**best.__dict__, **res[0][1]})
    print(f"\nbest: {best} (default: {base})\n")
    return best

# -- 2. attention alone -------------------------------------------------------------------------------------------------
def attention_table(config):
    print("## Attention alone (median ms; TFLOP/s; x = time / SDPA-flash time)\n")
    print(f"{'ours' if config is None else 'ours with ' + str(config)}\n")
    print("| dtype | N | H | B | eager fwd | SDPA fwd | ours fwd | ours TFLOP/s | ours x SDPA | eager fwd+bwd | SDPA fwd+bwd "
          "| ours fwd+bwd | ours TFLOP/s | ours x SDPA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    goal_rows = []
    for name in A.dtypes:
        dtype = DTYPES[name]
        for N in A.tokens:
            for H in A.heads:
                for B in A.batches:
                    D = A.head_dim
                    te, ts, to = (timed(fn, B, H, N, D, dtype) for fn in (eager, sdpa_flash, ours(config)))
                    f = fwd_flops(B, H, N, D)
                    tflops = lambda ms, mult: "-" if ms is None else f"{mult * f / ms / 1e9:.1f}"
                    ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}"
                    print(f"| {name} | {N} | {H} | {B} | {fmt(te[0])} | {fmt(ts[0])} | {fmt(to[0])} | {tflops(to[0], 1)} "
                          f"| {ratio(to[0], ts[0])} | {fmt(te[1])} | {fmt(ts[1])} | {fmt(to[1])} | {tflops(to[1], 3.5)} "
                          f"| {ratio(to[1], ts[1])} |")
                    if (B, N, D, name) == (GOAL["B"], GOAL["N"], GOAL["D"], GOAL["dtype"]): goal_rows.append((H, ts, to))
    print()
    if A.smoke: goal_rows = []; print("goal check skipped: --smoke times are meaningless\n")
    for H, ts, to in goal_rows:
        if None in (*ts, *to): continue
        rf, rb = to[0] / ts[0], to[1] / ts[1]
        print(f"goal at B={GOAL['B']}, H={H}, N={GOAL['N']}, D={GOAL['D']}, {GOAL['dtype']}: forward {rf:.2f}x SDPA "
              f"(goal <= {GOAL['fwd']}: {'met' if rf <= GOAL['fwd'] else 'MISSED'}), forward+backward {rb:.2f}x "
              f"(goal <= {GOAL['fwd_bwd']}: {'met' if rb <= GOAL['fwd_bwd'] else 'MISSED'})")
    print()

# -- 3. the whole model -------------------------------------------------------------------------------------------------
def model_table():
    preset = A.model_preset
    cfg = DeiTConfig.from_preset(preset) if not A.smoke else DeiTConfig(hidden_size=128, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=256, image_size=64, patch_size=16)
    name = preset if not A.smoke else "small smoke-test DeiT"
    print(f"## Model: {name}, random weights, inference (median ms; speedup = eager time / time)\n")
    print("| dtype | batch | eager | sdpa | triton | sdpa speedup | triton speedup | max abs logit diff triton vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    model = DeiTForImageClassificationWithTeacher(cfg).to(DEV).eval()
    for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        model.to(dtype)
        for B in A.model_batches:
            x = torch.randn(B, 3, cfg.image_size, cfg.image_size, device=DEV, dtype=dtype)
            t, logits = {}, {}
            with torch.inference_mode():
                for impl in ("eager", "sdpa", "triton"):
                    model.set_attn_implementation(impl)
                    logits[impl] = model(x).logits.float()
                    t[impl] = bench(lambda: model(x))
            diff = (logits["triton"] - logits["eager"]).abs().max().item()
            print(f"| {name} | {B} | {t['eager']:.2f} | {t['sdpa']:.2f} | {t['triton']:.2f} | {t['eager'] / t['sdpa']:.2f} "
                  f"| {t['eager'] / t['triton']:.2f} | {diff:.1e} |")
    print()

# -- 4. throughput in bf16, and a training step ----------------------------------------------------------------------------
PAPER_V100 = {"deit_tiny_patch16_224": 2536, "deit_small_patch16_224": 940, "deit_base_patch16_224": 292}   # img/s, Table 1

def transformers_twin(model):
    """transformers' model for `model`'s checkpoint (saved and reloaded through AutoModelForImageClassification), or None
    if transformers is missing. Without the distillation token that is `ViTForImageClassification`, as on the Hub."""
    try: import transformers
    except ImportError: return None
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return transformers.AutoModelForImageClassification.from_pretrained(d, attn_implementation="sdpa").to(DEV)

def smoke_config(**kw):
    return DeiTConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, image_size=64, patch_size=16, **kw)

def throughput_table():
    from deit_scratch import DeiTForImageClassification
    B = A.throughput_batch
    print(f"## Throughput: bf16 inference at batch {B}, images/s (random weights; the paper: V100, AMP, largest batch)\n")
    print("| model | ours sdpa | ours triton | transformers sdpa | ours sdpa / transformers (time) | paper V100 | ours sdpa / V100 | max abs logit diff ours vs transformers |")
    print("|---|---|---|---|---|---|---|---|")
    for preset, paper in PAPER_V100.items():
        cfg = DeiTConfig.from_preset(preset) if not A.smoke else smoke_config(use_distillation_token=False)
        torch.manual_seed(0)
        model = DeiTForImageClassification(cfg).eval()
        theirs = transformers_twin(model)
        model = model.to(DEV, torch.bfloat16)
        if theirs is not None: theirs = theirs.to(torch.bfloat16).eval()
        x = torch.randn(B, 3, cfg.image_size, cfg.image_size, device=DEV, dtype=torch.bfloat16)
        ips, logits = {}, {}
        with torch.inference_mode():
            for impl in ("sdpa", "triton"):
                model.set_attn_implementation(impl)
                logits[impl] = model(x).logits.float(); ips[impl] = B / bench(lambda: model(x)) * 1e3
            model.set_attn_implementation("sdpa")
            if theirs is not None: logits["hf"] = theirs(x).logits.float(); ips["hf"] = B / bench(lambda: theirs(x)) * 1e3
        hf = ips.get("hf")
        hf_cells = (f"{hf:.0f}", f"{hf / ips['sdpa']:.2f}", f"{(logits['sdpa'] - logits['hf']).abs().max().item():.1e}") if hf else ("—",) * 3
        print(f"| {preset} | {ips['sdpa']:.0f} | {ips['triton']:.0f} | {hf_cells[0]} | {hf_cells[1]} | {paper} | {ips['sdpa'] / paper:.2f} "
              f"| {hf_cells[2]} |")
        del model, theirs
        if DEV == "cuda": torch.cuda.empty_cache()
    print()
    B = A.train_batch
    preset = "deit_tiny_patch16_224"
    print(f"## Training step: {preset}, bf16 autocast, batch {B}, forward + backward + AdamW, images/s\n")
    print("| | ours sdpa | ours triton | transformers sdpa | ours sdpa / transformers (time) | loss diff ours vs transformers |")
    print("|---|---|---|---|---|---|")
    cfg = DeiTConfig.from_preset(preset) if not A.smoke else smoke_config(use_distillation_token=False)
    torch.manual_seed(0)
    model = DeiTForImageClassification(cfg).train()
    theirs = transformers_twin(model)
    model.to(DEV)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, 3, cfg.image_size, cfg.image_size, generator=g).to(DEV)
    y = torch.randint(0, cfg.num_labels, (B,), generator=g).to(DEV)
    def stepper(m):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(DEV, dtype=torch.bfloat16): loss = m(x, labels=y).loss
            loss.backward(); opt.step()
            return loss
        return step
    with torch.autocast(DEV, dtype=torch.bfloat16): first = {"ours": model(x, labels=y).loss.item()}
    ips = {}
    for impl in ("sdpa", "triton"):
        model.set_attn_implementation(impl); ips[impl] = B / bench(stepper(model)) * 1e3
    if theirs is not None:
        theirs.train()
        with torch.autocast(DEV, dtype=torch.bfloat16): first["hf"] = theirs(x, labels=y).loss.item()
        ips["hf"] = B / bench(stepper(theirs)) * 1e3
    hf = ips.get("hf")
    hf_cells = (f"{hf:.0f}", f"{hf / ips['sdpa']:.2f}", f"{abs(first['ours'] - first['hf']):.1e}") if hf else ("—",) * 3
    print(f"| images/s | {ips['sdpa']:.0f} | {ips['triton']:.0f} | {hf_cells[0]} | {hf_cells[1]} | {hf_cells[2]} |")
    print()

def main():
    dev = "CPU, Triton interpreter (--smoke: times are meaningless)" if A.smoke else torch.cuda.get_device_name()
    print(f"# deit-scratch attention benchmark\n\n{dev}; torch {torch.__version__}, triton {triton.__version__}, "
          f"CUDA {torch.version.cuda}\n")
    torch.manual_seed(0)
    if not A.throughput_only:
        check_correctness()
        config = tune() if A.tune else None
        attention_table(config)
        if not A.no_model: model_table()
    if not A.no_throughput: throughput_table()

if __name__ == "__main__":
    main()
