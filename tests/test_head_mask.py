"""head_mask against transformers 4.56.2 (transformers 5 removed it), from committed fixtures.

The fixtures in tests/fixtures/v4_head_mask/ were written by tests/make_fixtures.py (see its docstring to
regenerate them) with transformers 4.56.2 in eager mode: a saved model per directory and, next to it,
NAME_cases.safetensors with the inputs, the head masks and 4.56.2's outputs. No transformers needed here.
"""
import json
from pathlib import Path
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import deit_scratch as ds
from deit_test_utils import max_diff, WORST

ATOL = 1e-5
FIXTURES = Path(__file__).resolve().parent/"fixtures"/"v4_head_mask"
MODELS = {"teacher": ds.DeiTForImageClassificationWithTeacher, "base_pooler": ds.DeiTModel}
CASES = ["none", "heads_1d", "layers_heads_frac", "layers_heads_zeros"]

def load_cases(name):
    path = FIXTURES/f"{name}_cases.safetensors"
    with safe_open(str(path), "pt") as f: meta = f.metadata()
    return load_file(str(path)), meta

def expected(tensors, case, field):
    "One output field of one case; tuples come back as lists"
    if f"{case}.{field}" in tensors: return tensors[f"{case}.{field}"]
    items,i = [],0
    while f"{case}.{field}.{i}" in tensors: items.append(tensors[f"{case}.{field}.{i}"]); i += 1
    return items or None

def test_fixtures_are_small_and_from_4_56_2():
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert total < 300_000, f"fixtures take {total} bytes"
    for name,cls in MODELS.items():
        _,meta = load_cases(name)
        assert meta["transformers"] == "4.56.2" and meta["model_class"] == cls.__name__
        assert json.loads((FIXTURES/name/"config.json").read_text())["transformers_version"] == "4.56.2"

@pytest.mark.parametrize("output_attentions", [True, False], ids=["with-attentions", "no-attentions"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", MODELS)
def test_head_mask_matches_transformers_4_56_2(name, case, impl, output_attentions):
    tensors,meta = load_cases(name)
    model = MODELS[name].from_pretrained(FIXTURES/name, attn_implementation=impl)
    L,H = int(meta["num_hidden_layers"]), int(meta["num_attention_heads"])
    head_mask = tensors.get(f"{case}.head_mask")
    if head_mask is not None: assert head_mask.shape in ((H,), (L, H))
    with torch.no_grad():
        # under sdpa without output_attentions, a head mask makes every layer fall back to the eager kernel
        out = model(tensors["pixel_values"], head_mask=head_mask, output_hidden_states=True, output_attentions=output_attentions)
    errs = {}
    for field in ("logits", "cls_logits", "distillation_logits", "last_hidden_state", "pooler_output"):
        ref = expected(tensors, case, field)
        if ref is not None: errs[field] = max_diff(ref, getattr(out, field))
    # transformers 4.56.2's hidden_states[-1] is AFTER the final LayerNorm (it equals last_hidden_state), while ours
    # (like transformers 5) is BEFORE it: compare ours[:-1] with theirs[:-1], and their last one with our final
    # LayerNorm applied to our last hidden state (that is our last_hidden_state).
    ref_hs = expected(tensors, case, "hidden_states")
    assert len(ref_hs) == len(out.hidden_states) == L + 1
    errs["hidden_states[:-1]"] = max(max_diff(a, b) for a,b in zip(ref_hs[:-1], out.hidden_states[:-1]))
    deit = model.deit if hasattr(model, "deit") else model
    with torch.no_grad(): errs["hidden_states[-1]"] = max_diff(ref_hs[-1], deit.layernorm(out.hidden_states[-1]))
    if output_attentions:
        ref_att = expected(tensors, case, "attentions")
        assert len(ref_att) == len(out.attentions) == L
        errs["attentions"] = max(max_diff(a, b) for a,b in zip(ref_att, out.attentions))
        if head_mask is not None:   # a zero in the mask silences that head's probabilities entirely
            hm = head_mask.expand(L, H) if head_mask.ndim == 1 else head_mask
            for layer,att in enumerate(out.attentions):
                for h in range(H):
                    if hm[layer, h] == 0: assert att[:, h].abs().max() == 0
    else:
        assert out.attentions is None
    worst = max(errs.values())
    WORST[f"head_mask vs 4.56.2 ({type(model).__name__})"] = max(WORST[f"head_mask vs 4.56.2 ({type(model).__name__})"], worst)
    assert worst <= ATOL, errs

def test_head_mask_changes_the_output():
    "The fixture cases are not trivial: masking heads moves the logits"
    tensors,_ = load_cases("teacher")
    for case in CASES[1:]: assert max_diff(tensors[f"{case}.logits"], tensors["none.logits"]) > 1e-3

def test_head_mask_ones_is_identity():
    model = ds.DeiTForImageClassificationWithTeacher.from_pretrained(FIXTURES/"teacher", attn_implementation="sdpa")
    x = load_cases("teacher")[0]["pixel_values"]
    L,H = model.config.num_hidden_layers,model.config.num_attention_heads
    with torch.no_grad(): assert max_diff(model(x).logits, model(x, head_mask=torch.ones(L, H)).logits) <= 1e-6

@pytest.mark.parametrize("shape", [(3,), (5,), (2, 3), (3, 4), (2, 4, 1), (1, 2, 4), ()], ids=str)
def test_bad_head_mask_shape(shape):
    model = ds.DeiTForImageClassificationWithTeacher.from_pretrained(FIXTURES/"teacher")   # 2 layers, 4 heads
    x = load_cases("teacher")[0]["pixel_values"]
    with pytest.raises(ValueError, match=r"head_mask must have shape \(num_heads,\) = \(4,\) or \(num_layers, num_heads\) = \(2, 4\)"):
        model(x, head_mask=torch.ones(shape))
