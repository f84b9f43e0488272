"""ONNX Runtime against our eager model and transformers' on the CPU, in one process.

    .venv/bin/python benchmarks/export_cpu.py [--rounds 7] [--iters 10] [--json benchmarks/export_cpu.json]

DeiT-Ti distilled (random weights, float32, 224 px), batch 1 and 8. Ours is exported with `deit-scratch export`'s
code (`export_model`, dynamic batch and size: the graph a server would load) and run by ONNX Runtime's CPU execution
provider with as many threads as torch uses. Each round times A (ours, eager), B (transformers, eager, SDPA),
C (ONNX Runtime) and D (ours on the path `deit-scratch predict --precision auto` takes for long runs: `for_inference`,
bf16 weights frozen into a compiled graph where the CPU computes bf16 natively, else fp32) in the order A B C D D C B A;
the ratios are medians of per-round ratios. Next to each timing: the max
|logit difference| to our eager model. Prints a Markdown table with the machine; writes JSON.
"""
import argparse, json, os, platform, statistics, tempfile, time, warnings
from pathlib import Path
import torch

def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or "unknown CPU"

def timed(f, iters:int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters): f()
    return (time.perf_counter() - t0) / iters * 1e3

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7); ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", default=str(Path(__file__).with_name("export_cpu.json")))
    a = ap.parse_args()
    import onnxruntime as ort
    import transformers
    from deit_scratch import DeiTConfig, DeiTForImageClassificationWithTeacher
    from deit_scratch.export import export_model
    torch.manual_seed(0)
    cfg = DeiTConfig.from_preset("deit_tiny_distilled_patch16_224")
    ours = DeiTForImageClassificationWithTeacher(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters(): p.normal_(std=0.02)
    tmp = Path(tempfile.mkdtemp())
    ours.save_pretrained(tmp/"ckpt")
    theirs = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(tmp/"ckpt", attn_implementation="sdpa").eval()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(ours, tmp/"served"/"model.onnx")
    export_s = time.perf_counter() - t0
    so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads(); so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(tmp/"served"/"model.onnx"), so, providers=["CPUExecutionProvider"])
    rows, out = [], {"machine": {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(),
                                 "threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort.__version__,
                                 "transformers": transformers.__version__}, "onnx_export_s": round(export_s, 1), "results": []}
    import copy
    from deit_scratch.performance import for_inference
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)
        fast = copy.deepcopy(ours)
        t0 = time.perf_counter(); for_inference(fast, "auto", example=x); compile_s = time.perf_counter() - t0
        with torch.inference_mode():
            ref = ours(x).logits
            fa = lambda: ours(x)
            fb = lambda: theirs(pixel_values=x)
            feed = {"pixel_values": x.numpy()}
            fc = lambda: sess.run(None, feed)
            fd = lambda: fast(x)
            d_fast = (fast(x).logits.float() - ref).abs().max().item()
            d_theirs = (theirs(pixel_values=x).logits - ref).abs().max().item()
            d_ort = (torch.from_numpy(sess.run(None, feed)[0]) - ref).abs().max().item()
            for f in (fa, fb, fc, fd): f(); f()                                 # warm up
            ta, tb, tc, td = [], [], [], []
            for _ in range(a.rounds):
                r = {}
                for name, f in (("a", fa), ("b", fb), ("c", fc), ("d", fd), ("d2", fd), ("c2", fc), ("b2", fb), ("a2", fa)): r[name] = timed(f, a.iters)
                ta.append((r["a"] + r["a2"]) / 2); tb.append((r["b"] + r["b2"]) / 2); tc.append((r["c"] + r["c2"]) / 2); td.append((r["d"] + r["d2"]) / 2)
        res = {"batch": batch, "ours_ms": statistics.median(ta), "transformers_ms": statistics.median(tb), "onnxruntime_ms": statistics.median(tc),
               "ort_over_ours": statistics.median(c / o for c, o in zip(tc, ta)),
               "ort_over_transformers": statistics.median(c / t for c, t in zip(tc, tb)),
               "ours_over_transformers": statistics.median(o / t for o, t in zip(ta, tb)),
               "for_inference_ms": statistics.median(td), "for_inference_precision": str(next(fast.parameters()).dtype).split(".")[-1],
               "for_inference_compile_s": round(compile_s, 1), "for_inference_over_ort": statistics.median(d / c for d, c in zip(td, tc)),
               "max_abs_logit_diff": {"transformers": d_theirs, "onnxruntime": d_ort, "for_inference": d_fast}}
        out["results"].append(res)
        rows.append(f"| {batch} | {res['ours_ms']:.1f} | {res['transformers_ms']:.1f} | {res['onnxruntime_ms']:.1f} | "
                    f"{res['ort_over_ours']:.2f} | {res['ort_over_transformers']:.2f} | {res['ours_over_transformers']:.2f} | "
                    f"{d_theirs:.1e} / {d_ort:.1e} | {res['for_inference_ms']:.1f} ({res['for_inference_precision']}) | "
                    f"**{res['for_inference_over_ort']:.2f}** | {d_fast:.1e} |")
    m = out["machine"]
    print(f"{m['cpu']} ({m['capability']}), {m['threads']} threads; torch {m['torch']}, onnxruntime {m['onnxruntime']}, "
          f"transformers {m['transformers']}; ONNX export took {out['onnx_export_s']} s\n")
    print("| batch | ours eager ms | transformers ms | ONNX Runtime ms | ORT / ours | ORT / transformers | ours / transformers | max abs logit diff (transformers / ORT) "
          "| for_inference ms | for_inference / ORT | its max abs logit diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    Path(a.json).write_text(json.dumps(out, indent=2) + "\n")

if __name__ == "__main__": main()
