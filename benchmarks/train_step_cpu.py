#!/usr/bin/env python
"""The course's training step on this CPU: where its time goes, and which settings make it faster (issues 20 and 24).

The Fashion-MNIST student of notebooks 13-14 (width 96, 6 blocks, 3 heads, 4 px patches: 50 tokens), one training
step as the Trainer takes it (forward, label-smoothed loss, backward, gradient clipping, AdamW, EMA), on random
batches, in interleaved rounds (median img/s), against today's default (SDPA attention, fp32, batch 32, unfused
AdamW) in the same run. Also the bf16 and fp32 rate of the matrix products at the step's own shapes.

    .venv/bin/python benchmarks/train_step_cpu.py                  # ~4 min on 2 cores; writes benchmarks/train_step_cpu.json
    .venv/bin/python benchmarks/train_step_cpu.py --rounds 2 --out /tmp/x.json   # quicker
    .venv/bin/python benchmarks/train_step_cpu.py --accuracy                  # the real Trainer, 3 seeds, uncompiled and compiled
                                                                              # (~6 min; writes benchmarks/train_speed_accuracy.json)

A measurement, not a test: nothing here is asserted.
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path
import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from deit_scratch.heads import DeiTForImageClassification
from deit_scratch.training import LabelLoss, fashion_student_config, init_for_training
from deit_scratch.encoder import native_bf16

def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"native bf16 {native_bf16('cpu')}")

def step_of(m:nn.Module, lr:float, bf16=False, compile=False, batch=32, fused=False, ema_decay=None, **opt_kw):
    "One training step of `m` on a random batch of 28 px gray images, as the Trainer takes it, as a function of nothing"
    opt = torch.optim.AdamW(m.parameters(), lr=lr, fused=fused or None, **opt_kw)
    ema = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True) if ema_decay else None
    loss_fn, net = LabelLoss(0.1), (torch.compile(m) if compile else m)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    def step():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = loss_fn(x, net(x), y)
        opt.zero_grad(set_to_none=True); loss.backward()
        nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=fused or None)
        opt.step(); loss.item()
        if ema is not None: ema.update_parameters(m)
    return step

def make_step(attn="sdpa", **kw):
    "The course student's step (its recipe: lr 7e-4, weight decay 0.05, EMA 0.995)"
    torch.manual_seed(0)
    m = init_for_training(DeiTForImageClassification(fashion_student_config(attn_implementation=attn))).train()
    return step_of(m, 7e-4, ema_decay=0.995, weight_decay=0.05, **kw)

CONFIGS = {   # name: settings (the first is today's default)
    "today: sdpa fp32 b32": dict(),
    "fused AdamW + foreach clip, fp32 b32": dict(fused=True),
    "torch.compile, fp32 b32": dict(compile=True, fused=True),
    "sdpa bf16 autocast b32": dict(bf16=True, fused=True),
    "eager attention, bf16 autocast b32": dict(attn="eager", bf16=True, fused=True),
    "eager attention, bf16, compiled b32": dict(attn="eager", bf16=True, compile=True, fused=True),
    "eager attention, bf16, compiled b64": dict(attn="eager", bf16=True, compile=True, fused=True, batch=64),
    "eager attention, bf16, compiled b128": dict(attn="eager", bf16=True, compile=True, fused=True, batch=128),
    "sdpa fp32 b128": dict(batch=128),
}

def make_teacher_step(fused=True, batch=64, **kw):
    "One training step of notebook 13's ConvNet teacher (its recipe: lr 2e-3, no EMA)"
    from deit_scratch.training import ConvNet
    torch.manual_seed(0)
    return step_of(ConvNet().train(), 2e-3, fused=fused, batch=batch, **kw)

TEACHER_CONFIGS = {"teacher: fp32 b64, AdamW for-loop": dict(fused=False), "teacher: fp32 fused": dict(),
                   "teacher: bf16 autocast, for-loop (the default before on native-bf16 CPUs)": dict(bf16=True, fused=False),
                   "teacher: bf16 fused": dict(bf16=True), "teacher: fp32 compiled": dict(compile=True),
                   "teacher: bf16 compiled (the default now, runs >= 300 steps)": dict(bf16=True, compile=True)}

def gemm_rates(shapes=((1600, 96, 384), (1600, 384, 96), (1600, 96, 288)), n=100) -> list:
    "GFLOP/s of `a @ b` in fp32 and bf16 at the step's own shapes (batch 32 x 50 tokens = 1600 rows)"
    out = []
    for M, K, N in shapes:
        row = {"shape": [M, K, N]}
        for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(M, K).to(dt), torch.randn(K, N).to(dt)
            for _ in range(10): a @ b
            t0 = time.perf_counter()
            for _ in range(n): a @ b
            row[f"{name}_gflops"] = 2 * M * K * N * n / (time.perf_counter() - t0) / 1e9
        out.append(row)
    return out

def profile_top(step, k=6) -> list:
    "The `k` operators with the most self CPU time in 5 steps, with their share"
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import profile
    with profile() as p:
        for _ in range(5): step()
    ev = sorted(p.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ev)
    return [(e.key[:60], round(e.self_cpu_time_total / total, 3)) for e in ev[:k]]

def accuracy_runs(compile:bool, seeds=(0, 1, 2), n=5000, epochs=3) -> list:
    "img/s and test accuracy of the course student trained by `train()` (its recipe, bf16 where native), one run per seed"
    from deit_scratch.data import fashion_mnist, eval_transform
    from deit_scratch.training import evaluate, STUDENT_RECIPE, student_transform
    from deit_scratch.distillation import train
    tr_ds, te = fashion_mnist("train", transform=student_transform(), n=n), fashion_mnist("test", transform=eval_transform())
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        m = init_for_training(DeiTForImageClassification(fashion_student_config()))
        t = train(m, tr_ds, None, seed=seed, progress=False, compile=compile, **{**STUDENT_RECIPE, "epochs": epochs})
        out.append({"compile": compile, "seed": seed, "amp": str(t.amp), "acc": evaluate(t.model, te)["acc_logits"],
                    "images_per_s": sum(r["images_per_s"] for r in t.history) / len(t.history)})
        print(out[-1], flush=True)
    return out

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    ap.add_argument("--accuracy", action="store_true", help="train the student for real instead (3 seeds, uncompiled and compiled)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.accuracy:
        runs = accuracy_runs(False) + accuracy_runs(True)
        Path(__file__).with_name("train_speed_accuracy.json").write_text(json.dumps(
            {"machine": machine(), "threads": a.threads, "date": time.strftime("%Y-%m-%d"), "runs": runs}, indent=1) + "\n")
        raise SystemExit(0)
    print(machine(), f"| {a.threads} threads", flush=True)
    steps = {k: (make_step(**v), v.get("batch", 32)) for k, v in CONFIGS.items()}
    steps.update({k: (make_teacher_step(**v), 64) for k, v in TEACHER_CONFIGS.items()})
    compile_s = {}
    for k, (s, _) in steps.items():
        t0 = time.perf_counter(); [s() for _ in range(3)]; compile_s[k] = time.perf_counter() - t0
    res = {k: [] for k in steps}
    for _ in range(a.rounds):                                        # interleaved: drift hits every setting alike
        for k, (s, b) in steps.items():
            n = max(3, 320 // b)
            t0 = time.perf_counter(); [s() for _ in range(n)]; res[k].append(n * b / (time.perf_counter() - t0))
    base = statistics.median(res[next(iter(res))])                 # students against the student's old default,
    tbase = statistics.median(res[next(iter(TEACHER_CONFIGS))])    # teachers against the teacher's
    rows = [{"config": k, "images_per_s": statistics.median(v), "ratio": statistics.median(v) / (tbase if k in TEACHER_CONFIGS else base),
             "warmup_s": compile_s[k], "rounds": v} for k, v in res.items()]
    for r in rows: print(f"{r['config']:42s} {r['images_per_s']:6.0f} img/s  x{r['ratio']:.2f}  (first 3 steps {r['warmup_s']:.1f} s)")
    gem = gemm_rates()
    for g in gem: print(f"GEMM {g['shape']}: fp32 {g['fp32_gflops']:.0f} GFLOP/s, bf16 {g['bf16_gflops']:.0f} GFLOP/s")
    prof = {k: profile_top(steps[k][0]) for k in ("today: sdpa fp32 b32", "sdpa bf16 autocast b32")}
    for k, v in prof.items(): print(k, "->", v)
    Path(a.out).write_text(json.dumps({"machine": machine(), "threads": a.threads, "date": time.strftime("%Y-%m-%d"),
                                       "steps": rows, "gemm": gem, "profile_top": prof}, indent=1) + "\n")
