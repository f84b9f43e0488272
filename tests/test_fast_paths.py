"""The fast paths: training with GELU recomputed (notebook 05), and the opt-in `torch.compile` (`compile_model`, also with the weights frozen)."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

import deit_scratch as ds
from deit_scratch.encoder import compile_model, compile_reason, native_bf16

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8, num_labels=5)

@pytest.mark.slow
def test_compiled_model_matches_eager_and_keeps_its_class():
    assert compile_reason("cpu") is None, "torch.compile needs g++ here (.ci/run installs it)"
    torch.manual_seed(0)
    eager = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).eval()
    fast = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).eval(); fast.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert compile_model(fast, example=x) is fast and fast._compiled_call_impl is not None
    with torch.inference_mode(): torch.testing.assert_close(fast(x).logits, eager(x).logits, rtol=0, atol=1e-5)
    assert type(fast) is ds.DeiTForImageClassificationWithTeacher and fast.state_dict().keys() == eager.state_dict().keys()

@pytest.mark.slow
def test_cli_compile_without_a_compiler_warns_and_still_predicts(tmp_path):
    "--compile on a machine without g++ (PATH emptied): one warning line, and the same predictions"
    torch.manual_seed(0)
    ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).save_pretrained(tmp_path/"m")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path/"x.png")
    argv = [sys.executable, "-m", "deit_scratch.cli", "predict", str(tmp_path/"x.png"), "--model", str(tmp_path/"m"), "--json"]
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    plain = subprocess.run(argv, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    bare = subprocess.run(argv + ["--compile"], capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(ROOT), "PATH": str(tmp_path/"empty")})
    assert plain.returncode == 0 and bare.returncode == 0, bare.stderr
    assert json.loads(bare.stdout)["results"] == json.loads(plain.stdout)["results"]
    assert bare.stderr.strip() == ("deit-scratch: warning: torch.compile needs a C++ compiler on the CPU (g++ or clang++; "
                                   "e.g. apt-get install g++): running uncompiled"), bare.stderr

def test_training_gradients_match_transformers():
    "The training fast path (GeluLinear: GELU recomputed in the backward pass) gives transformers' gradients, to 1e-5"
    import tempfile, transformers
    from deit_test_utils import randomise
    torch.manual_seed(0)
    ours = randomise(ds.DeiTForImageClassification(ds.DeiTConfig(**CFG)), 3).train()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.DeiTForImageClassification.from_pretrained(d, attn_implementation="sdpa").train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 1, 4])
    with torch.enable_grad():
        lo, lt = ours(x, labels=y).loss, theirs(x, labels=y).loss
        lo.backward(); lt.backward()
    torch.testing.assert_close(lo, lt, rtol=0, atol=1e-6)
    g_hf = {n: p.grad for n, p in theirs.named_parameters()}
    g_ours = {n: p.grad for n, p in ours.named_parameters()}                   # transformers 5's in-memory names, as ours
    assert set(g_ours) == set(g_hf), set(g_ours) ^ set(g_hf)
    for n, g in g_ours.items(): torch.testing.assert_close(g, g_hf[n], rtol=0, atol=1e-5, msg=n)

@pytest.mark.slow
def test_frozen_compile_matches_transformers_and_never_serves_old_weights():
    "compile_model(freeze=True): transformers' logits to 1e-5, at a second batch size too; changed weights: a warning and their logits"
    import copy, tempfile, transformers
    from deit_test_utils import randomise
    ours = randomise(ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)), 3).eval()
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(d, attn_implementation="sdpa").eval()
    with pytest.raises(ValueError, match=r"for inference .* call model.eval\(\) first"): compile_model(copy.deepcopy(ours).train(), freeze=True)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert compile_model(ours, example=x, freeze=True) is ours and ours._compiled_call_impl is not None
    with torch.inference_mode():
        for xb in (x, x[:1]):                                                    # x[:1]: recompiled, frozen again
            torch.testing.assert_close(ours(xb).logits, theirs(xb).logits, rtol=0, atol=1e-5)
    new = randomise(ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)), 4).eval()
    ours.load_state_dict(new.state_dict())                                       # the graph still holds the old weights
    with pytest.warns(UserWarning, match="weights changed after compile_model"), torch.inference_mode(): got = ours(x).logits
    with torch.inference_mode(): torch.testing.assert_close(got, new(x).logits, rtol=0, atol=1e-6)
    assert ours._compiled_call_impl is None                                      # uncompiled from now on

@pytest.mark.slow
def test_cli_precision_bf16_where_native_and_says_when_it_is_emulated(tmp_path):
    "--precision bf16 runs bf16 weights (probabilities within 2e-2 of fp32: ~10 roundings of 2^-8 through 2 blocks), warning where bf16 is emulated; auto picks bf16 only where native"
    torch.manual_seed(0)
    ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).save_pretrained(tmp_path/"m")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path/"x.png")
    argv = [sys.executable, "-m", "deit_scratch.cli", "predict", str(tmp_path/"x.png"), "--model", str(tmp_path/"m"), "--json", "-k", "5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {p: subprocess.run(argv + ["--precision", p], capture_output=True, text=True, env=env, timeout=120) for p in ("fp32", "bf16", "auto")}
    assert all(r.returncode == 0 for r in runs.values()), {p: r.stderr for p, r in runs.items()}
    docs = {p: json.loads(r.stdout) for p, r in runs.items()}
    assert docs["fp32"]["precision"] == "fp32" and docs["bf16"]["precision"] == "bf16"
    probs = {p: {q["label_id"]: q["prob"] for q in d["results"][0]["predictions"]} for p, d in docs.items()}
    assert set(probs["bf16"]) == set(probs["fp32"]) == set(range(5))                  # all 5 classes, so no rank can drop out
    assert max(abs(probs["bf16"][k] - probs["fp32"][k]) for k in range(5)) <= 2e-2
    assert runs["fp32"].stderr == "" and runs["auto"].stderr == ""
    if native_bf16("cpu"):
        assert runs["bf16"].stderr == "" and docs["auto"]["precision"] == "bf16"
    else:
        assert runs["bf16"].stderr.strip() == (f"deit-scratch: warning: --precision bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}, "
            "without AVX512-BF16 or AMX) does not compute in bf16 natively; it is emulated, several times slower than fp32"), runs["bf16"].stderr
        assert docs["auto"]["precision"] == "fp32" and docs["auto"]["results"] == docs["fp32"]["results"]

@pytest.mark.slow
def test_cli_auto_compiles_long_runs_and_a_short_last_batch_gets_the_same_answers(tmp_path, monkeypatch, capsys):
    "--precision auto compiles from AUTO_COMPILE_IMAGES images on where bf16 is native (for_inference, notebook 17), and pads a short last batch "
    "to the compiled shape: the answers match the uncompiled run within 2e-2 (bf16 where native: other kernels, same roundings)"
    import deit_scratch.cli as cli
    torch.manual_seed(0)
    ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).save_pretrained(tmp_path/"m")
    rng = np.random.default_rng(0)
    paths = [str(tmp_path/f"x{i}.png") for i in range(3)]
    for p in paths: Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
    seen, real = [], cli.for_inference
    def spy(model, precision, compile): seen.append(compile); return real(model, precision, compile=compile)
    monkeypatch.setattr(cli, "for_inference", spy)                                      # records whether each run compiled
    def run(*extra):
        assert cli.main(["predict", *paths, "--model", str(tmp_path/"m"), "--json", "-k", "5", "--batch-size", "2", "--precision", "auto", *extra]) == 0
        doc = json.loads(capsys.readouterr().out)
        return [{q["label_id"]: q["prob"] for q in r["predictions"]} for r in doc["results"]]
    eager = run()
    monkeypatch.setattr(cli, "AUTO_COMPILE_IMAGES", 3)                                  # 3 images: a "long" run now
    compiled = run()
    assert seen == [False, native_bf16("cpu")]                                          # fp32 elsewhere: not compiled
    monkeypatch.setattr(cli, "AUTO_COMPILE_IMAGES", 10**9); compiled = run("--compile")  # asked for: compiled everywhere
    assert seen[-1] is True
    assert len(compiled) == len(eager) == 3                                              # the padded copy is not reported
    for e, c in zip(eager, compiled):
        assert set(e) == set(c) == set(range(5)) and max(abs(e[k] - c[k]) for k in e) <= 2e-2
