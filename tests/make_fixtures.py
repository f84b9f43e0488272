"""Generate the committed head_mask fixtures under tests/fixtures/v4_head_mask/ (NOT a test module).

transformers 5 removed `head_mask`, so the reference for it is transformers 4.56.2. This script must run
with a virtual environment that has transformers==4.56.2 + torch + safetensors, e.g.:

    python -m venv /tmp/v4venv && /tmp/v4venv/bin/pip install "transformers==4.56.2" torch safetensors
    /tmp/v4venv/bin/python tests/make_fixtures.py          # run from the repository root

It (re)writes, for each model NAME below:
    tests/fixtures/v4_head_mask/NAME/config.json           # transformers' save_pretrained
    tests/fixtures/v4_head_mask/NAME/model.safetensors
    tests/fixtures/v4_head_mask/NAME_cases.safetensors     # inputs, head masks and 4.56.2's outputs

Keys of NAME_cases.safetensors: `pixel_values`; for each case C: `C.head_mask`, then the outputs of
`model(pixel_values, head_mask=..., output_hidden_states=True, output_attentions=True)`:
`C.logits`, `C.cls_logits`, `C.distillation_logits` (teacher) or `C.last_hidden_state`, `C.pooler_output`
(DeiTModel), `C.hidden_states.I` and `C.attentions.I`. Case `none` has no head mask.
The metadata records the versions and, per model, the number of layers and heads.

The models use attn_implementation="eager": 4.56.2's SDPA path passes head_mask as an additive
attention mask, which is wrong. In 4.56.2, hidden_states[-1] is AFTER the final LayerNorm (it equals
last_hidden_state); transformers 5 and deit_scratch return it BEFORE the final LayerNorm, and
tests/test_head_mask.py compares accordingly. The fixtures are kept tiny (well under 300 KB in all).
"""
import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent/"fixtures"/"v4_head_mask"

MODELS = {
    # name: (transformers class, config kwargs, model kwargs)
    "teacher": ("DeiTForImageClassificationWithTeacher",
                dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, image_size=12,
                     patch_size=4, encoder_stride=4, num_labels=3, hidden_act="gelu"), {}),
    "base_pooler": ("DeiTModel",
                    dict(hidden_size=12, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24, image_size=12,
                         patch_size=4, encoder_stride=4, qkv_bias=False, hidden_act="gelu_new"), dict(add_pooling_layer=True)),
}

def head_mask_cases(layers:int, heads:int) -> dict:
    "1-D (heads,) and 2-D (layers, heads) masks with zeros and fractional values"
    g = torch.Generator().manual_seed(layers*10 + heads)
    per_head = torch.ones(heads); per_head[0] = 0.0; per_head[-1] = 0.5
    frac = torch.rand(layers, heads, generator=g)*1.5                     # fractional values in [0, 1.5)
    frac[0, 1 % heads] = 0.0
    zeros = torch.ones(layers, heads); zeros[-1] = 0.0; zeros[0, 0] = 0.0  # every head of the last layer off
    return {"none": None, "heads_1d": per_head, "layers_heads_frac": frac, "layers_heads_zeros": zeros}

def randomise(model, seed:int):
    "transformers zero-initialises tokens, positions and biases: give every parameter a non-trivial value"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name,p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if any(s in name for s in ("cls_token", "distillation_token", "mask_token", "position_embeddings")): p.copy_(0.5*r)
            elif "layernorm" in name and name.endswith("weight"): p.copy_(1 + 0.2*r)
            elif name.endswith("bias"): p.copy_(0.1*r)
            else:
                fan_in = p[0].numel()
                boost = 2.0 if any(s in name for s in ("query", "key")) else 1.0   # sharper attention
                p.copy_(boost*r/fan_in**0.5)

def main():
    import transformers
    from safetensors.torch import save_file
    assert transformers.__version__ == "4.56.2", f"run with transformers 4.56.2, not {transformers.__version__}"
    torch.manual_seed(0)
    for i,(name,(cls_name,cfg,model_kw)) in enumerate(MODELS.items()):
        config = transformers.DeiTConfig(**cfg)
        model = getattr(transformers, cls_name)(config, **model_kw)
        randomise(model, seed=100 + i)
        model.set_attn_implementation("eager")
        model.eval()
        d = OUT/name
        model.save_pretrained(d)
        g = torch.Generator().manual_seed(200 + i)
        x = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=g)
        tensors = {"pixel_values": x}
        for case,hm in head_mask_cases(config.num_hidden_layers, config.num_attention_heads).items():
            with torch.no_grad():
                out = model(x, head_mask=hm, output_hidden_states=True, output_attentions=True)
            if hm is not None: tensors[f"{case}.head_mask"] = hm
            for k,v in out.items():
                if isinstance(v, tuple):
                    for j,t in enumerate(v): tensors[f"{case}.{k}.{j}"] = t
                elif v is not None: tensors[f"{case}.{k}"] = v
            if cls_name == "DeiTModel":   # the 4.56.2 quirk the test relies on: last hidden state is post-LayerNorm
                assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
        meta = dict(transformers=transformers.__version__, torch=torch.__version__, model_class=cls_name,
                    num_hidden_layers=str(config.num_hidden_layers), num_attention_heads=str(config.num_attention_heads),
                    model_kwargs=json.dumps(model_kw))
        save_file({k:v.clone().contiguous() for k,v in tensors.items()}, str(OUT/f"{name}_cases.safetensors"), metadata=meta)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total/1024:.1f} KB)")

# -- checkpoints written by transformers 4.56.2 (tests/test_pretrained.py) ----------------------------------------------
# Run:  /tmp/v4venv/bin/python tests/make_fixtures.py checkpoints
# 4.56.2's on-disk format equals 5.x's (same legacy key names, config.json with "torch_dtype" instead of "dtype");
# what these cover beyond the head_mask fixtures: pytorch_model.bin written by 4.x (safe_serialization=False), the
# ViT architecture of the non-distilled checkpoints (model_type "vit", `vit.` prefix) and a sharded safetensors index.
CKPT_OUT = Path(__file__).resolve().parent/"fixtures"/"v4_checkpoints"
CKPT_MODELS = {
    # name: (transformers class, config class, config kwargs, save_pretrained kwargs)
    "teacher_bin": ("DeiTForImageClassificationWithTeacher", "DeiTConfig",
                    dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=16,
                         patch_size=4, encoder_stride=4, num_labels=3), dict(safe_serialization=False)),
    "vit_classifier_bin": ("ViTForImageClassification", "ViTConfig",
                           dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, image_size=16,
                                patch_size=4, encoder_stride=4, num_labels=4), dict(safe_serialization=False)),
    "vit_model_sharded": ("ViTModel", "ViTConfig",
                          dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=12,
                               patch_size=4, encoder_stride=4, qkv_bias=False), dict(max_shard_size="8KB")),
}

def checkpoints():
    import shutil, transformers
    from safetensors.torch import save_file
    assert transformers.__version__ == "4.56.2", f"run with transformers 4.56.2, not {transformers.__version__}"
    shutil.rmtree(CKPT_OUT, ignore_errors=True)
    for i,(name,(cls_name,cfg_name,cfg,save_kw)) in enumerate(CKPT_MODELS.items()):
        torch.manual_seed(i)
        config = getattr(transformers, cfg_name)(**cfg)
        model = getattr(transformers, cls_name)(config)
        randomise(model, seed=300 + i)
        model.set_attn_implementation("eager")
        model.eval()
        model.save_pretrained(CKPT_OUT/name, **save_kw)
        x = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=torch.Generator().manual_seed(400 + i))
        with torch.no_grad(): out = model(x)
        tensors = {"pixel_values": x, **{k: v for k,v in out.items() if isinstance(v, torch.Tensor)}}
        save_file({k: v.contiguous() for k,v in tensors.items()}, str(CKPT_OUT/f"{name}_outputs.safetensors"),
                  metadata=dict(transformers=transformers.__version__, model_class=cls_name))
    total = sum(p.stat().st_size for p in CKPT_OUT.rglob("*") if p.is_file())
    print(f"wrote {CKPT_OUT} ({total/1024:.1f} KB)")

if __name__ == "__main__":
    import sys
    checkpoints() if sys.argv[1:] == ["checkpoints"] else main()
