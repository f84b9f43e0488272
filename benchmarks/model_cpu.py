#!/usr/bin/env python
"""deit-scratch against transformers on the CPU, side by side in one process, reported as ratios (< 1: we are faster).

    .venv/bin/python benchmarks/model_cpu.py                       # the issue-10 goals table (about 15 min on 2 cores)
    .venv/bin/python benchmarks/model_cpu.py --quick               # tiny only, fewer rounds
    .venv/bin/python benchmarks/model_cpu.py --json out.json

Method. Both models hold the same random weights (ours saved, loaded by transformers 5). Every measure runs ours (A)
and the reference (B) **interleaved**, in rounds A, B, B, A; the ratio of a round is mean(A) / mean(B), and the table
reports the median ratio over the rounds, so that a slow spell of a shared machine hits both sides. Next to every
timing, the max |logit difference| to transformers.

Rows:
- inference: ours (sdpa, eager, compiled with `model.compile()`, compiled with the weights frozen into the graph by
  `compile_model(model, freeze=True)`) against transformers with SDPA, fp32;
- the GEMM floor: the forward's matrix products alone (every Linear and the patch convolution as a GEMM, with the
  exact shapes), replayed with `torch.addmm`, against transformers' whole forward: what no rewrite of the rest can beat;
- training step: forward + backward + AdamW of `DeiTForImageClassification` with integer labels, ours against
  transformers' class of the same name, eager and compiled;
- peak memory of that training step: the rise of the process's peak RSS over its RSS before the first of 3 steps,
  each candidate in a fresh subprocess (Linux: the peak is reset through /proc/self/clear_refs, so loading does not
  count), ours / transformers;
- activations kept for backward: the bytes of every tensor autograd saves in one training forward (parameters
  excluded, shared storage counted once), through `torch.autograd.graph.saved_tensors_hooks`: exact, not noisy;
- bf16: only on a CPU with native bf16 (AVX512_BF16 or AMX); elsewhere the row says why it is not measured.

`--profile` adds, for every inference and training shape, a `torch.profiler` table per operator (self CPU ms per call,
ours and transformers) and the bound it implies: the share of transformers' own time spent in the kernels (matrix
products, attention, GELU, patch convolution), that is the ratio ours / transformers of a forward that called the same
kernels and spent no time at all on anything else. A goal below that bound cannot be met with these kernels on this
machine; only faster kernels (or fewer, fused ones) can.
"""
import argparse, copy, json, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deit_scratch import DeiTConfig, DeiTForImageClassification, DeiTForImageClassificationWithTeacher
from deit_scratch.encoder import compile_model, native_bf16

PRESETS = {"tiny": "deit_tiny_distilled_patch16_224", "small": "deit_small_distilled_patch16_224", "base": "deit_base_distilled_patch16_224"}

def machine() -> dict:
    name = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    import transformers
    return dict(cpu=name, capability=torch.backends.cpu.get_cpu_capability(), native_bf16=native_bf16(), threads=torch.get_num_threads(),
                torch=torch.__version__, transformers=transformers.__version__, date=time.strftime("%Y-%m-%d"))

def pair(cls, preset:str, hf_impl:str="sdpa"):
    "Ours and transformers' model of class `cls`, same random weights, eval mode"
    import transformers
    torch.manual_seed(0)
    ours = cls(DeiTConfig.from_preset(preset)).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = getattr(transformers, cls.__name__).from_pretrained(d, attn_implementation=hf_impl).eval()
    return ours, theirs

def interleaved(a, b, rounds:int, inner:int=1) -> tuple:
    "Median over rounds of mean(a)/mean(b), rounds A B B A; also the median seconds of a and of b"
    ra, ta, tb = [], [], []
    def clock(f):
        t0 = time.perf_counter()
        for _ in range(inner): f()
        return (time.perf_counter() - t0) / inner
    a(); b()                                                            # warm-up
    for _ in range(rounds):
        x1 = clock(a); y1 = clock(b); y2 = clock(b); x2 = clock(a)
        ra.append((x1 + x2) / (y1 + y2)); ta.append((x1 + x2) / 2); tb.append((y1 + y2) / 2)
    return statistics.median(ra), statistics.median(ta), statistics.median(tb)

def gemm_shapes(model, x) -> list:
    "(M, K, N) of every Linear and of the patch convolution (as a GEMM) in one forward of `model` on `x`"
    shapes = []
    def hook(m, inp, out):
        t = inp[0]
        if isinstance(m, torch.nn.Linear): shapes.append((t.numel() // t.shape[-1], m.in_features, m.out_features))
        else:                                                                           # Conv2d with stride = kernel
            kh, kw = m.kernel_size; B, C, H, W = t.shape
            shapes.append((B * (H // kh) * (W // kw), C * kh * kw, m.out_channels))
    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    with torch.inference_mode(): model(x)
    for h in hs: h.remove()
    return shapes

def gemm_replay(shapes:list):
    "A function doing exactly these matrix products (weights pre-transposed as nn.Linear stores them)"
    ops = [(torch.randn(M, K), torch.randn(N, K), torch.randn(N)) for M, K, N in shapes]
    def run():
        for a, w, b in ops: torch.addmm(b, a, w.t())
    return run

KERNELS = ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise", "aten::mkldnn_convolution", "mkldnn::_convolution_pointwise",
           "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
           "aten::gelu", "aten::gelu_backward", "aten::convolution_backward", "mkl::_mkl_linear", "aten::bmm", "aten::mkldnn_linear")

def op_profile(f, n:int) -> dict:
    "Self CPU milliseconds per call of `f`, by operator, over `n` calls under torch.profiler"
    from torch.profiler import profile, ProfilerActivity
    f()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n): f()
    return {e.key: e.self_cpu_time_total / n / 1e3 for e in prof.key_averages() if e.self_cpu_time_total > 0}

def profile_row(what:str, model:str, batch:int, f_ours, f_ref, n:int, top:int=12) -> dict:
    "Per-operator profile of ours and the reference, and the ratio bound if only the kernels (`KERNELS`) took time"
    po, pr = op_profile(f_ours, n), op_profile(f_ref, n)
    keys = sorted(set(po) | set(pr), key=lambda k: -max(po.get(k, 0), pr.get(k, 0)))
    kernels_ours, kernels_ref = (sum(v for k, v in p.items() if k in KERNELS) for p in (po, pr))
    return dict(measure="profile", what=what, model=model, batch=batch, ours_total_ms=sum(po.values()), ref_total_ms=sum(pr.values()),
                kernels_ours_ms=kernels_ours, kernels_ref_ms=kernels_ref, bound=kernels_ref / sum(pr.values()),
                ops=[(k, po.get(k, 0.0), pr.get(k, 0.0)) for k in keys[:top]])

def profile_table(r:dict) -> str:
    out = [f"**{r['what']}, {r['model']}, batch {r['batch']}**: ours {r['ours_total_ms']:.1f} ms, transformers {r['ref_total_ms']:.1f} ms "
           f"(profiled, self CPU time). The kernels (matrix products, attention, GELU, convolution) take {r['kernels_ours_ms']:.1f} ms "
           f"of ours and {r['kernels_ref_ms']:.1f} ms of transformers': the same kernels and nothing else would be "
           f"**{r['bound']:.2f}** of transformers' time", "", "| operator | ours ms | transformers ms |", "|---|---|---|"]
    out += [f"| `{k}` | {a:.2f} | {b:.2f} |" for k, a, b in r["ops"]]
    return "\n".join(out)

def inference_rows(size:str, batch:int, rounds:int, compiled:bool, profiled:bool=False) -> list:
    ours, theirs = pair(DeiTForImageClassificationWithTeacher, PRESETS[size])
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    rows, n = [], max(2, 16 // batch)
    with torch.inference_mode():
        ref = theirs(x).logits
        for impl in ("sdpa", "eager"):
            ours.set_attn_implementation(impl)
            r, ta, tb = interleaved(lambda: ours(x), lambda: theirs(x), rounds)
            rows.append(dict(measure="inference", model=size, batch=batch, ours=impl, ratio=r, ours_ms=ta * 1e3, ref_ms=tb * 1e3,
                             max_diff=(ours(x).logits - ref).abs().max().item()))
        ours.set_attn_implementation("sdpa")
        floor = gemm_replay(gemm_shapes(ours, x))
        r, ta, tb = interleaved(floor, lambda: theirs(x), rounds)
        rows.append(dict(measure="inference", model=size, batch=batch, ours="GEMM floor", ratio=r, ours_ms=ta * 1e3, ref_ms=tb * 1e3, max_diff=None))
        if profiled: rows.append(profile_row("inference, sdpa", size, batch, lambda: ours(x), lambda: theirs(x), n))
        if compiled:
            with torch.inference_mode(False): frozen = copy.deepcopy(ours)       # normal tensors (with version counters)
            t0 = time.perf_counter(); compile_model(frozen, example=x, freeze=True); ct = time.perf_counter() - t0
            r, ta, tb = interleaved(lambda: frozen(x), lambda: theirs(x), rounds)
            rows.append(dict(measure="inference", model=size, batch=batch, ours="sdpa + compile, weights frozen", ratio=r, ours_ms=ta * 1e3,
                             ref_ms=tb * 1e3, max_diff=(frozen(x).logits - ref).abs().max().item(), compile_s=ct))
            if profiled: rows.append(profile_row("inference, compiled with frozen weights", size, batch, lambda: frozen(x), lambda: theirs(x), n))
            del frozen
            t0 = time.perf_counter(); ours.compile(); ours(x); ct = time.perf_counter() - t0
            r, ta, tb = interleaved(lambda: ours(x), lambda: theirs(x), rounds)
            rows.append(dict(measure="inference", model=size, batch=batch, ours="sdpa + compile", ratio=r, ours_ms=ta * 1e3, ref_ms=tb * 1e3,
                             max_diff=(ours(x).logits - ref).abs().max().item(), compile_s=ct))
    return rows

def train_step_fn(model, x, y, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        model(x, labels=y).loss.backward()
        opt.step()
    return step

def train_rows(size:str, batch:int, rounds:int, compiled:bool, profiled:bool=False) -> list:
    ours, theirs = pair(DeiTForImageClassification, PRESETS[size])
    ours.train(); theirs.train()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(batch, 3, 224, 224, generator=g), torch.randint(0, 1000, (batch,), generator=g)
    so, st = (train_step_fn(m, x, y, torch.optim.AdamW(m.parameters(), lr=1e-4)) for m in (ours, theirs))
    with torch.enable_grad():
        lo, lt = ours(x, labels=y).loss.item(), theirs(x, labels=y).loss.item()
        r, ta, tb = interleaved(so, st, rounds)
        rows = [dict(measure="training step", model=size, batch=batch, ours="sdpa", ratio=r, ours_ms=ta * 1e3, ref_ms=tb * 1e3, max_diff=abs(lo - lt))]
        if profiled: rows.append(profile_row("training step, sdpa", size, batch, so, st, 1))
        if compiled:
            t0 = time.perf_counter(); ours.compile(); so(); ct = time.perf_counter() - t0
            r, ta, tb = interleaved(so, st, rounds)
            rows.append(dict(measure="training step", model=size, batch=batch, ours="sdpa + compile", ratio=r, ours_ms=ta * 1e3,
                             ref_ms=tb * 1e3, max_diff=None, compile_s=ct))
    return rows

MEMORY_CHILD = """
import resource, sys, tempfile, torch
sys.path.insert(0, {root!r})
torch.manual_seed(0)
from deit_scratch import DeiTConfig, DeiTForImageClassification
ours = DeiTForImageClassification(DeiTConfig.from_preset({preset!r}))
if {who!r} == "transformers":
    import transformers
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d); model = transformers.DeiTForImageClassification.from_pretrained(d, attn_implementation="sdpa")
    del ours
else: model = ours
model.train(); opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x, y = torch.randn({batch}, 3, 224, 224), torch.randint(0, 1000, ({batch},))
import ctypes, gc; gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
kib = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
open("/proc/self/clear_refs", "w").write("5")                 # reset the peak RSS (VmHWM) to the current RSS
before = kib("VmRSS")
for _ in range(3):
    opt.zero_grad(set_to_none=True); model(x, labels=y).loss.backward(); opt.step()
print(kib("VmHWM") - before)
"""

def saved_for_backward(model, x, y) -> int:
    "Bytes of the activations autograd keeps for the backward pass of one training forward (parameters excluded; exact)"
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}
    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params: seen[st.data_ptr()] = st.nbytes()
        return t
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, labels=y).loss
    return sum(seen.values())

def activation_row(size:str, batch:int) -> dict:
    ours, theirs = pair(DeiTForImageClassification, PRESETS[size])
    ours.train(); theirs.train()
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(batch, 3, 224, 224, generator=g), torch.randint(0, 1000, (batch,), generator=g)
    o, t = saved_for_backward(ours, x, y) / 2**20, saved_for_backward(theirs, x, y) / 2**20
    return dict(measure="activations kept for backward", model=size, batch=batch, ours="sdpa", ratio=o / t, ours_ms=None, ref_ms=None,
                ours_mib=o, ref_mib=t, max_diff=None)

def memory_row(size:str, batch:int) -> dict:
    def peak(who):
        code = MEMORY_CHILD.format(root=str(ROOT), preset=PRESETS[size], who=who, batch=batch)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return int(out.strip().splitlines()[-1]) / 1024                 # MiB
    o, t = peak("ours"), peak("transformers")
    return dict(measure="peak memory of the training step", model=size, batch=batch, ours="sdpa", ratio=o / t, ours_ms=None, ref_ms=None,
                ours_mib=o, ref_mib=t, max_diff=None)

def bf16_row(size:str, batch:int, rounds:int) -> dict:
    if not native_bf16():
        return dict(measure="bf16 inference vs our fp32", model=size, batch=batch, ours="bf16 autocast", ratio=None, ours_ms=None, ref_ms=None,
                    max_diff=None, note=f"not measured: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16, "
                                         "where bf16 is emulated and several times slower than fp32")
    torch.manual_seed(0)
    m = DeiTForImageClassificationWithTeacher(DeiTConfig.from_preset(PRESETS[size])).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        ref = m(x).logits
        bf = lambda: torch.autocast("cpu", dtype=torch.bfloat16)(m)(x)
        r, ta, tb = interleaved(bf, lambda: m(x), rounds)
        d = (bf().logits.float() - ref).abs().max().item()
    return dict(measure="bf16 inference vs our fp32", model=size, batch=batch, ours="bf16 autocast", ratio=r, ours_ms=ta * 1e3, ref_ms=tb * 1e3, max_diff=d)

def gemm_rate(n:int, rounds:int=5) -> float:
    "TFLOP/s of one large bf16 `torch.mm` (n x n x n): the machine's bf16 matrix-product rate"
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    torch.mm(a, b); ts = []
    for _ in range(rounds):
        t0 = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e12

def forward_flops(model, x) -> float:
    "FLOPs of one forward: its matrix products (Linears, patch convolution) and the attention's two products per block"
    gemms = sum(2 * M * K * N for M, K, N in gemm_shapes(model, x))
    c = model.config; n = c.num_prefix_tokens + c.grid_size[0] * c.grid_size[1]
    return gemms + c.num_hidden_layers * 4 * x.shape[0] * n * n * c.hidden_size

def bf16_auto_rows(size:str, batch:int, rounds:int) -> list:
    "The path `predict --precision auto` takes for long runs (`for_inference`: bf16 weights, frozen, AMX-autotuned GEMMs, C++ "
    "wrapper) and our eager bf16, against transformers with its weights in bf16 (SDPA), same random weights, same run"
    from deit_scratch.performance import for_inference
    ours, theirs = pair(DeiTForImageClassificationWithTeacher, PRESETS[size])
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(): ref32 = ours(x).logits
    flops = forward_flops(ours, x)
    theirs = theirs.to(torch.bfloat16); xb = x.to(torch.bfloat16)
    with torch.inference_mode(False): fast = copy.deepcopy(ours)
    ours = ours.to(torch.bfloat16)
    t0 = time.perf_counter(); for_inference(fast, "auto", example=x); ct = time.perf_counter() - t0
    rows = []
    with torch.inference_mode():
        for name, m, inp, c in (("bf16 weights, eager", ours, xb, None), ("for_inference (predict --precision auto, long runs)", fast, x, ct)):
            r, ta, tb = interleaved(lambda: m(inp), lambda: theirs(xb), rounds)
            rows.append(dict(measure="bf16 inference vs transformers bf16", model=size, batch=batch, ours=name, ratio=r, ours_ms=ta * 1e3,
                             ref_ms=tb * 1e3, max_diff=(m(inp).logits.float() - ref32).abs().max().item(), compile_s=c,
                             ours_tflops=flops / ta / 1e12, ref_tflops=flops / tb / 1e12, gflop=flops / 1e9))
    return rows

def table(rows:list, m:dict) -> str:
    out = [f"Machine: {m['cpu']}, {m['threads']} threads, capability {m['capability']}, native bf16: {m['native_bf16']}; "
           f"torch {m['torch']}, transformers {m['transformers']}; {m['date']}.", "",
           "| measure | model | batch | ours | ours | transformers | ours / transformers | max diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["measure"] == "profile": continue
        fmt = lambda v, unit: "" if v is None else f"{v:.1f} {unit}"
        a = fmt(r.get("ours_ms"), "ms") or fmt(r.get("ours_mib"), "MiB"); b = fmt(r.get("ref_ms"), "ms") or fmt(r.get("ref_mib"), "MiB")
        extra = f" (compile {r['compile_s']:.0f} s)" if r.get("compile_s") else ""
        ratio = "—" if r["ratio"] is None else f"**{r['ratio']:.2f}**"
        diff = r.get("note") or ("" if r["max_diff"] is None else f"{r['max_diff']:.1e}")
        out.append(f"| {r['measure']} | {r['model']} | {r['batch']} | {r['ours']}{extra} | {a} | {b} | {ratio} | {diff} |")
    return "\n".join(out)

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny only, 3 rounds, no compile")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also a torch.profiler table per operator for every inference and training shape")
    ap.add_argument("--only", nargs="*", help="run only these items of the plan, e.g. inference:tiny:1 train:tiny:32")
    ap.add_argument("--bf16", action="store_true", help="only the bf16 table (CPUs with AVX512-BF16 or AMX): the machine's bf16 GEMM rate, "
                    "then ours (eager, and the path predict --precision auto takes) against transformers in bf16 at DeiT-Ti b1, b8 and DeiT-B b8")
    ap.add_argument("--json", default=None, help="default: benchmarks/model_cpu.json (model_cpu_bf16.json with --bf16)")
    a = ap.parse_args()
    a.json = a.json or str(ROOT/"benchmarks"/("model_cpu_bf16.json" if a.bf16 else "model_cpu.json"))
    if a.bf16: return bf16_main(a)
    rounds, compiled = (3, False) if a.quick else (a.rounds, not a.no_compile)
    m = machine(); print(m, flush=True)
    plan = [("inference", "tiny", 1), ("inference", "tiny", 8), ("train", "tiny", 32), ("memory", "tiny", 32)]
    if not a.quick: plan += [("inference", "base", 8), ("bf16", "base", 8)]
    if a.only: plan = [(k, s, int(b)) for k, s, b in (item.split(":") for item in a.only)]
    rows = []
    for kind, size, batch in plan:
        t0 = time.perf_counter()
        if kind == "inference": rows += inference_rows(size, batch, rounds, compiled, a.profile)
        elif kind == "train": rows += train_rows(size, batch, max(3, rounds // 2), compiled, a.profile)
        elif kind == "memory": rows += [activation_row(size, batch), memory_row(size, batch)]
        else: rows.append(bf16_row(size, batch, rounds))
        print(f"{kind} {size} batch {batch}: {time.perf_counter() - t0:.0f} s", flush=True)
        print(table(rows[-6:], m).split("\n", 2)[2], flush=True)
    print("\n" + table(rows, m))
    for r in rows:
        if r["measure"] == "profile": print("\n" + profile_table(r))
    Path(a.json).write_text(json.dumps(dict(machine=m, rows=rows), indent=1) + "\n")

def bf16_main(a):
    m = machine(); print(m, flush=True)
    if not native_bf16():
        print(f"Not measured: this CPU ({m['cpu']}, {m['capability']}) has no AVX512-BF16 or AMX, so bf16 is emulated there, "
              "several times slower than fp32; predict --precision auto keeps fp32 on it."); return
    rate = {n: gemm_rate(n) for n in (2048, 4096)}
    print(f"bf16 GEMM rate (torch.mm, {m['threads']} threads): " + ", ".join(f"{n}^3 {r:.2f} TFLOP/s" for n, r in rate.items()), flush=True)
    rows, plan = [], [(s, b) for s, b in (("tiny", 1), ("tiny", 8), ("base", 8)) if not a.only or f"{s}:{b}" in a.only]
    for size, batch in plan:
        rows += bf16_auto_rows(size, batch, a.rounds)
        for r in rows[-2:]:
            print(f"| {size} | {batch} | {r['ours']} | {r['ours_ms']:.1f} ms | {r['ref_ms']:.1f} ms | **{r['ratio']:.2f}** | "
                  f"{r['ours_tflops']:.2f} / {r['ref_tflops']:.2f} TFLOP/s ({r['ours_tflops'] / max(rate.values()):.0%} of the GEMM rate) | "
                  f"{r['max_diff']:.3f} |" + (f" compile {r['compile_s']:.0f} s" if r["compile_s"] else ""), flush=True)
    Path(a.json).write_text(json.dumps(dict(machine=m, gemm_rate_tflops=rate, rows=rows), indent=1) + "\n")

if __name__ == "__main__":
    main()
