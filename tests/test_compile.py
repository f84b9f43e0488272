"""The opt-in `torch.compile` fast path (notebook 06's `compile_model`): same numbers as eager, a clear fallback."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

import deit_scratch as ds
from deit_scratch.encoder import compile_model, compile_reason

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8, num_labels=5)

def test_compiled_model_matches_eager_and_keeps_its_class():
    assert compile_reason("cpu") is None, "torch.compile needs g++ here (.ci/run installs it)"
    torch.manual_seed(0)
    eager = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).eval()
    fast = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)).eval(); fast.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert compile_model(fast, example=x) is fast and fast._compiled_call_impl is not None
    with torch.inference_mode(): torch.testing.assert_close(fast(x).logits, eager(x).logits, rtol=0, atol=1e-5)
    assert type(fast) is ds.DeiTForImageClassificationWithTeacher and fast.state_dict().keys() == eager.state_dict().keys()

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
