"""Tests of the Triton flash-attention kernels (`deit_scratch.flash_attention`, notebook 16).

On a machine without CUDA the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set below before the kernels are
defined); with CUDA they run compiled on the GPU. References are computed in float64. Outputs and gradients are written
into NaN-filled buffers, so that a tile the kernels forget to write fails the comparison.
"""
import copy, os, subprocess, sys
import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")   # before triton is imported

import deit_scratch.flash_attention as fa
from deit_scratch.attention import ATTENTION_FUNCTIONS, eager_attention
from deit_scratch.config import DeiTConfig
from deit_scratch.heads import DeiTForImageClassificationWithTeacher

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton; if triton was imported earlier anyway, the
# kernel tests fail with the library's clear error rather than being skipped
needs_triton = pytest.mark.skipif(not fa.HAS_TRITON, reason="triton is not installed (pip install triton)")
NAN = float("nan")

def attention64(q, k, v, scale=None):
    "softmax(scale·QKᵀ)V computed in float64 throughout"
    q, k, v = q.double(), k.double(), v.double()
    return torch.softmax(q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale), -1) @ v

def rel_err(a, ref) -> float:
    "max |a - ref| / max |ref| (absolute difference where ref is exactly zero)"
    scale = ref.abs().max().item()
    return (a.double() - ref.double()).abs().max().item() / (scale if scale > 0 else 1.0)

def qkv_views(B, H, N, D, dtype, n=3, layout="deit"):
    "`n` fresh random (B, H, N, D) tensors; layout 'deit': views of (B, N, H, D) tensors, as DeiTAttention passes them"
    if layout == "deit": return torch.randn(n, B, N, H, D, device=DEVICE).to(dtype).transpose(2, 3).unbind(0)
    return tuple(torch.randn(B, H, N, D, device=DEVICE).to(dtype) for _ in range(n))

class PoisonTorch:
    "Stand-in for the `torch` module inside deit_scratch.flash_attention: every `empty`/`empty_like` comes back NaN-filled"
    def __getattr__(self, name): return getattr(torch, name)
    @staticmethod
    def empty(*args, **kwargs): return torch.empty(*args, **kwargs).fill_(NAN)
    @staticmethod
    def empty_like(*args, **kwargs): return torch.empty_like(*args, **kwargs).fill_(NAN)

@pytest.fixture
def poison(monkeypatch): monkeypatch.setattr(fa, "torch", PoisonTorch())

# -- the kernels against float64 ------------------------------------------------------------------------------------
TOKENS, HEAD_DIMS = (1, 7, 64, 198, 578), (16, 32, 64)

def run_forward(q, k, v, **kwargs):
    B, H, N, D = q.shape
    out = torch.full((B, N, H, D), NAN, device=q.device, dtype=q.dtype).transpose(1, 2)   # (B, H, N, D) view, poisoned
    lse = torch.full((B, H, N), NAN, device=q.device)
    res = fa.flash_attention_forward(q, k, v, out=out, lse=lse, **kwargs)
    assert res[0] is out and res[1] is lse
    return out, lse

def run_backward(q, k, v, out, lse, dout, **kwargs):
    bufs = [torch.full_like(t, NAN) for t in (q, k, v)]
    res = fa.flash_attention_backward(q, k, v, out, lse, dout, dq=bufs[0], dk=bufs[1], dv=bufs[2], **kwargs)
    assert all(r is b for r, b in zip(res, bufs))
    return bufs

def reference(q, k, v, dout, scale=None):
    "float64 output, log-sum-exp and gradients"
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    o = attention64(*ref, scale=scale)
    o.backward(dout.double())
    s = ref[0].detach() @ ref[1].detach().transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    return o.detach(), torch.logsumexp(s, -1), [r.grad for r in ref]

@needs_triton
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("N", [*TOKENS[:-1], pytest.param(TOKENS[-1], marks=pytest.mark.slow)])   # 578: DeiT at 384 px
def test_forward_backward_fp32(N, D):
    B, H = (2, 3) if N == 198 else (1, 2)
    q, k, v, dout = qkv_views(B, H, N, D, torch.float32, n=4)
    out, lse = run_forward(q, k, v)
    grads = run_backward(q, k, v, out, lse, dout)
    o_ref, lse_ref, g_ref = reference(q, k, v, dout)
    assert out.shape == (B, H, N, D) and out.dtype == torch.float32 and lse.shape == (B, H, N) and lse.dtype == torch.float32
    assert rel_err(out, o_ref) < 1e-4
    assert rel_err(lse, lse_ref) < 1e-5
    for name, g, r in zip("qkv", grads, g_ref):
        assert g.shape == (B, H, N, D) and g.dtype == torch.float32
        assert rel_err(g, r) < 1e-4, (name, rel_err(g, r))

@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N,D", [(1, 16), (7, 32), (198, 64), pytest.param(578, 64, marks=pytest.mark.slow)])
def test_forward_backward_half(N, D, dtype):
    "16-bit inputs (fp32 accumulation): at least as close to float64 as eager attention in the same dtype, within 2x"
    B, H = 1, 2
    q, k, v, dout = qkv_views(B, H, N, D, dtype, n=4)
    out, lse = run_forward(q, k, v)
    grads = run_backward(q, k, v, out, lse, dout)
    o_ref, lse_ref, g_ref = reference(q, k, v, dout)
    e_qkv = [t.detach().clone().requires_grad_() for t in (q, k, v)]    # eager attention in the same dtype
    o_e = eager_attention(*e_qkv)[0]
    o_e.backward(dout)
    floor = 2e-3 if dtype == torch.float16 else 1.6e-2                  # ~ a few units in the last place
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads) and lse.dtype == torch.float32
    assert rel_err(out, o_ref) <= max(2 * rel_err(o_e, o_ref), floor)
    assert rel_err(lse, lse_ref) < 1e-4                                  # the lse is computed in fp32 from rounded inputs
    for g, e, r in zip(grads, e_qkv, g_ref):
        assert rel_err(g, r) <= max(2 * rel_err(e.grad, r), floor)

@needs_triton
@pytest.mark.parametrize("cfg", [fa.FlashConfig(16, 16, 4, 2, 16, 16, 4, 2), fa.FlashConfig(64, 128, 4, 2, 32, 64, 4, 2),
                                 fa.FlashConfig(256, 256, 8, 2, 256, 256, 8, 2)], ids=["tiny-tiles", "mixed", "huge-tiles"])
@pytest.mark.slow
def test_tile_configs(cfg):
    "Any tile sizes give the same result: many partial tiles (16), unequal tiles, tiles larger than the sequence"
    q, k, v, dout = qkv_views(1, 2, 198, 32, torch.float32, n=4, layout="contiguous")
    out, lse = run_forward(q, k, v, config=cfg)
    grads = run_backward(q, k, v, out, lse, dout, config=cfg)
    o_ref, _, g_ref = reference(q, k, v, dout)
    assert rel_err(out, o_ref) < 1e-4
    for g, r in zip(grads, g_ref): assert rel_err(g, r) < 1e-4

@needs_triton
def test_scale_and_head_dim_128():
    "An explicit scale, and head width 128"
    q, k, v, dout = qkv_views(1, 1, 70, 128, torch.float32, n=4, layout="contiguous")
    out, lse = run_forward(q, k, v, scale=0.3)
    grads = run_backward(q, k, v, out, lse, dout, scale=0.3)
    o_ref, lse_ref, g_ref = reference(q, k, v, dout, scale=0.3)
    assert rel_err(out, o_ref) < 1e-4 and rel_err(lse, lse_ref) < 1e-5
    for g, r in zip(grads, g_ref): assert rel_err(g, r) < 1e-4

@needs_triton
def test_autograd_function(poison):
    "flash_attention through autograd, with every buffer the module allocates poisoned; a non-linear loss"
    q, k, v = [t.requires_grad_() for t in qkv_views(2, 3, 198, 64, torch.float32)]
    w = torch.randn(2, 3, 198, 64, device=DEVICE)
    out = fa.flash_attention(q, k, v)
    (out ** 2 * w).sum().backward()
    ref = [t.detach().double().requires_grad_() for t in (q, k, v)]
    o_ref = attention64(*ref)
    (o_ref ** 2 * w.double()).sum().backward()
    assert out.shape == (2, 3, 198, 64) and out.stride() == q.stride()    # output in the input's (B, N, H, D) layout
    assert rel_err(out, o_ref) < 1e-4
    for t, r in zip((q, k, v), ref): assert rel_err(t.grad, r.grad) < 1e-4

@needs_triton
def test_registry():
    assert ATTENTION_FUNCTIONS["triton"] is fa.triton_attention
    q, k, v = qkv_views(1, 2, 7, 16, torch.float32)
    out, probs = fa.triton_attention(q, k, v, scale=0.5)
    assert probs is None and rel_err(out, attention64(q, k, v, scale=0.5)) < 1e-4

# -- the plain-PyTorch tiled reference ------------------------------------------------------------------------------
@pytest.mark.parametrize("block_n", [1, 7, 64, 1000])
def test_tiled_attention(block_n):
    q, k, v = torch.randn(3, 2, 3, 50, 16, dtype=torch.float64).unbind(0)
    out, lse = fa.tiled_attention(q, k, v, block_n=block_n)
    assert out.dtype == torch.float64 and out.shape == (2, 3, 50, 16) and lse.shape == (2, 3, 50)
    assert rel_err(out, attention64(q, k, v)) < 1e-12
    assert rel_err(lse, torch.logsumexp(q @ k.transpose(-1, -2) / 4, -1)) < 1e-12

# -- clear errors -----------------------------------------------------------------------------------------------------
@needs_triton
def test_bad_inputs():
    q, k, v = qkv_views(1, 2, 7, 16, torch.float32)
    with pytest.raises(ValueError, match="have no dropout"): fa.triton_attention(q, k, v, dropout_p=0.1)
    with pytest.raises(ValueError, match="cannot apply a head_mask"): fa.triton_attention(q, k, v, head_mask=torch.ones(1, 2, 1, 1))
    for D in (8, 48, 256):
        x = torch.randn(1, 2, 7, D, device=DEVICE)
        with pytest.raises(ValueError, match=r"head width \(head_dim\) of 16, 32, 64 or 128"): fa.flash_attention(x, x, x)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"): fa.flash_attention(q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="of one dtype"): fa.flash_attention(q, k.half(), v)
    with pytest.raises(ValueError, match="of one shape"): fa.flash_attention(q, k[:, :, :5], v)
    with pytest.raises(ValueError, match="of one shape"): fa.flash_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="lse must be a contiguous float32"):
        fa.flash_attention_forward(q, k, v, lse=torch.empty(1, 2, 8, device=DEVICE))
    with pytest.raises(ValueError, match="buffers must match q"):
        fa.flash_attention_forward(q, k, v, out=torch.empty(1, 2, 7, 16, device=DEVICE, dtype=torch.float16))
    m = torch.randn(1, 2, 7, 16, device="meta")
    with pytest.raises(RuntimeError, match="not on meta"): fa.flash_attention(m, m, m)

def test_error_without_triton(monkeypatch):
    monkeypatch.setattr(fa, "HAS_TRITON", False)
    x = torch.randn(1, 2, 7, 16)
    with pytest.raises(ImportError, match="pip install triton"): fa.triton_attention(x, x, x)

def test_error_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setattr(fa, "HAS_TRITON", True)
    monkeypatch.setattr(fa, "INTERPRETED", False)
    x = torch.randn(1, 2, 7, 16)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"): fa.triton_attention(x, x, x)

SCRIPT_NO_TRITON = """
import sys; sys.modules["triton"] = None       # `import triton` now fails, as if it were not installed
import torch, deit_scratch
import deit_scratch.flash_attention as fa
from deit_scratch import DeiTConfig, DeiTForImageClassificationWithTeacher
assert not fa.HAS_TRITON and "triton" in fa.ATTENTION_FUNCTIONS
cfg = DeiTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=16)
model = DeiTForImageClassificationWithTeacher(cfg).eval()
model(torch.randn(1, 3, 32, 32))               # sdpa works
model.set_attn_implementation("triton")
try: model(torch.randn(1, 3, 32, 32))
except ImportError as e: print("ImportError:", e)
"""

@pytest.mark.slow
def test_import_without_triton():
    "`import deit_scratch` works without triton; asking for 'triton' then says what to install"
    r = subprocess.run([sys.executable, "-c", SCRIPT_NO_TRITON], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ImportError:" in r.stdout and "pip install triton" in r.stdout

SCRIPT_NO_INTERPRETER = """
import os; os.environ.pop("TRITON_INTERPRET", None)
import torch, deit_scratch.flash_attention as fa
assert fa.HAS_TRITON and not fa.INTERPRETED
x = torch.randn(1, 2, 7, 16)
try: fa.flash_attention(x, x, x)
except RuntimeError as e: print("RuntimeError:", e)
"""

@pytest.mark.slow
@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check")
def test_cpu_without_interpreter_subprocess():
    "CPU tensors with kernels compiled for CUDA: a clear error, not Triton's '0 active drivers'"
    r = subprocess.run([sys.executable, "-c", SCRIPT_NO_INTERPRETER], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert r.returncode == 0, r.stderr
    assert "RuntimeError:" in r.stdout and "TRITON_INTERPRET=1" in r.stdout and "CUDA device" in r.stdout

# -- the whole model ----------------------------------------------------------------------------------------------------
CFG = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256, image_size=48, patch_size=8,
           num_labels=10, initializer_range=0.2)   # head width 64, 36 patches + 2 special tokens = 38 tokens

def small_deit(impl, seed=0):
    "A small DeiT with a large init, random special tokens and position embeddings (zeros make LayerNorm degenerate)"
    torch.manual_seed(seed)
    m = DeiTForImageClassificationWithTeacher(DeiTConfig(**CFG, attn_implementation=impl))
    with torch.no_grad():
        e = m.deit.embeddings
        for p in (e.cls_token, e.distillation_token, e.position_embeddings): p.normal_(0, 0.2)
    return m.to(DEVICE)

def loss_fn(out, y): return (F.cross_entropy(out.cls_logits, y) + F.cross_entropy(out.distillation_logits, y)) / 2

@needs_triton
def test_model_logits_and_grads(poison):
    x, y = torch.randn(2, 3, 48, 48, device=DEVICE), torch.tensor([3, 7], device=DEVICE)
    res = {}
    for impl in ("eager", "triton"):
        m = small_deit(impl)
        out = m(x)
        loss_fn(out, y).backward()
        res[impl] = out.logits.detach(), {n: p.grad for n, p in m.named_parameters()}
    (le, ge), (lt, gt) = res["eager"], res["triton"]
    assert lt.shape == (2, 10) and lt.dtype == torch.float32
    assert rel_err(lt, le) < 1e-5
    for n in ge:
        if n.endswith("k_proj.bias"):   # zero in exact arithmetic (the softmax ignores a shift of a whole row): noise
            assert gt[n].abs().max() < 1e-5 and ge[n].abs().max() < 1e-5
        else: assert rel_err(gt[n], ge[n]) < 1e-4, n

@needs_triton
def test_model_fallbacks():
    "Attention maps and head masks run that layer eagerly, also under 'triton'"
    x = torch.randn(1, 3, 48, 48, device=DEVICE)
    me, mt = small_deit("eager").eval(), small_deit("triton").eval()
    with torch.no_grad():
        oe, ot = me(x, output_attentions=True), mt(x, output_attentions=True)
        assert len(ot.attentions) == 2 and ot.attentions[0].shape == (1, 2, 38, 38)
        assert rel_err(ot.logits, oe.logits) < 1e-5
        hm = torch.tensor([1.0, 0.0], device=DEVICE)
        assert rel_err(mt(x, head_mask=hm).logits, me(x, head_mask=hm).logits) < 1e-5

@needs_triton
def test_model_bf16():
    x = torch.randn(2, 3, 48, 48, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        l64 = small_deit("eager").double()(x.double()).logits
        le = small_deit("eager").bfloat16().eval()(x).logits
        lt = small_deit("triton").bfloat16().eval()(x).logits
    assert lt.dtype == torch.bfloat16
    assert rel_err(lt, l64) <= max(2 * rel_err(le, l64), 2e-2)

@needs_triton
@pytest.mark.parametrize("opt", ["SGD", "AdamW"])
def test_training_steps(opt):
    """Four optimiser steps: at each, from the same weights and optimiser state, 'triton' gives eager's loss, gradients
    and update. Each step restarts from eager's state, so rounding differences are compared, not compounded (4 steps of
    a chaotic trajectory amplify them without bound)."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x, y = torch.randn(4, 3, 48, 48, device=DEVICE, generator=g), torch.tensor([0, 3, 7, 9], device=DEVICE)
    make = lambda m: (torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9) if opt == "SGD" else torch.optim.AdamW(m.parameters(), lr=1e-4))
    me, mt = small_deit("eager").train(), small_deit("triton").train()
    oe, ot = make(me), make(mt)
    # the optimiser's buffers that are linear in the gradients (Adam's normalised step is not: it turns rounding noise on
    # a near-zero gradient, such as the key bias's, which is zero in exact arithmetic, into a full +-lr step)
    linear = ("momentum_buffer",) if opt == "SGD" else ("exp_avg", "exp_avg_sq")
    losses = []
    for step in range(4):
        mt.load_state_dict(me.state_dict()); ot.load_state_dict(copy.deepcopy(oe.state_dict()))   # (its buffers would be shared)
        res = {}
        for impl, m, o in (("eager", me, oe), ("triton", mt, ot)):
            o.zero_grad()
            out = m(x); loss = loss_fn(out, y); loss.backward(); o.step()
            state = [o.state[p] for p in m.parameters()]
            res[impl] = (torch.cat([out.cls_logits, out.distillation_logits]).detach(), loss.item(), {k: torch.cat([s[k].flatten() for s in state]) for k in linear},
                         torch.cat([p.detach().flatten() for p in m.parameters()]))
        (le, losse, be, pe), (lt, losst, bt, pt) = res["eager"], res["triton"]
        losses.append(losst)
        assert rel_err(lt, le) < 1e-5, step                   # as test_model_logits_and_grads
        # the mean of two cross-entropies changes by at most 2 max|logit change| (the gradient of each in its logits,
        # p - onehot, has L1 norm <= 2), plus float32's rounding of the loss itself (a few u)
        assert abs(losst - losse) <= 2 * (lt - le).abs().max().item() + 1e-6 * abs(losse), (step, losst, losse)
        for k in linear: assert rel_err(bt[k], be[k]) < (1e-4 if k != "exp_avg_sq" else 2e-4), (step, k)   # gradients' bound (squared: twice)
        if opt == "SGD": assert rel_err(pt, pe) < 1e-5, step   # the weights move by lr x momentum buffer: lr x 1e-4 relative
    assert losses[-1] < losses[0]
