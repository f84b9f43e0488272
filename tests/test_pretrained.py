"""Every checkpoint format in, transformers' format out (deit_scratch.pretrained, notebook 10).

References are built here from random weights: transformers 5.23 models (DeiT* and ViT*) saved by transformers,
facebookresearch/deit / timm `.pth` files made from them by the documented key mapping (timm itself is not installed),
and the small committed fixtures written by transformers 4.56.2 (tests/make_fixtures.py checkpoints).
Parity is checked on logits (and the other outputs) within 1e-5 in float32; round trips must be bit-identical.
"""
import argparse, json, re, sys, warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import deit_scratch as ds
import deit_scratch.pretrained as P
from deit_scratch.config import DeiTConfig, imagenet_id2label
from deit_scratch.heads import DeiTForImageClassification, DeiTForImageClassificationWithTeacher, DeiTForMaskedImageModeling
from deit_scratch.encoder import DeiTModel
from deit_scratch.image_processor import DeiTImageProcessor
from deit_test_utils import randomise, compare_outputs, max_diff, WORST

FIXTURES = Path(__file__).parent/"fixtures"/"v4_checkpoints"
ATOL = 1e-5
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
            encoder_stride=8, num_labels=5)

def pixels(n=2, size=32, seed=0): return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

def hf_model(cls_name, cfg=TINY, seed=0, **model_kw):
    "A randomised transformers 5 model in eval mode (eager attention: the reference)"
    config_cls = transformers.ViTConfig if cls_name.startswith("ViT") else transformers.DeiTConfig
    torch.manual_seed(seed)
    m = getattr(transformers, cls_name)(config_cls(**cfg), **model_kw)
    randomise(m, seed)
    m.set_attn_implementation("eager")
    return m.eval()

def on_disk(hf, tmp):
    "transformers' on-disk state dict (legacy names) of `hf`"
    hf.save_pretrained(tmp)
    return load_file(str(Path(tmp)/"model.safetensors"))

def to_fb(sd:dict) -> dict:
    "transformers' on-disk names -> facebookresearch/deit / timm names, written out independently of deit_scratch"
    out = {}
    for k,v in sd.items():
        k = re.sub(r"^(deit|vit)\.", "", k)
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)", k)
        if m:
            i,rest = m.groups()
            if rest.startswith("attention.attention."):
                continue                                           # fused below
            rest = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.output.dense": "attn.proj",
                    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2"}[rest.rsplit(".", 1)[0]] + "." + rest.rsplit(".", 1)[1]
            out[f"blocks.{i}.{rest}"] = v
            continue
        k = {"embeddings.cls_token": "cls_token", "embeddings.distillation_token": "dist_token",
             "embeddings.position_embeddings": "pos_embed"}.get(k, k)
        k = k.replace("embeddings.patch_embeddings.projection.", "patch_embed.proj.").replace("layernorm.", "norm.")
        k = re.sub(r"^(cls_classifier|classifier)\.", "head.", k).replace("distillation_classifier.", "head_dist.")
        out[k] = v
    layers = {int(m[1]) for k in sd if (m := re.search(r"encoder\.layer\.(\d+)\.", k))}
    pre = next((p for p in ("deit.", "vit.") if any(k.startswith(p) for k in sd)), "")
    for i in layers:
        for kind in ("weight", "bias"):
            parts = [sd.get(f"{pre}encoder.layer.{i}.attention.attention.{n}.{kind}") for n in ("query", "key", "value")]
            if parts[0] is not None: out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts, 0)   # rows [q; k; v]
    return out

def record(name, worst): WORST[name] = max(WORST[name], worst)

# -- config, presets, class names ------------------------------------------------------------------------------------

def test_imagenet_id2label():
    names = imagenet_id2label()
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca" and names[281] == "tabby, tabby cat"
    assert P.imagenet_id2label is imagenet_id2label
    assert DeiTConfig.from_preset("deit_base_distilled_patch16_384").id2label == names
    assert DeiTConfig.from_preset("deit_tiny_patch16_224", num_labels=10).id2label[0] == "LABEL_0"
    data = json.loads((Path(ds.__file__).parent/"imagenet_classes.json").read_text(encoding="utf-8"))
    assert data == {str(k): v for k,v in names.items()}
    assert "include deit_scratch/*.json" in (Path(__file__).parents[1]/"MANIFEST.in").read_text()

@pytest.mark.parametrize("name,count", [("deit_tiny_patch16_224", 5_717_416), ("deit_small_patch16_224", 22_050_664),
                                        ("deit_base_patch16_224", 86_567_656), ("deit_base_patch16_384", 86_859_496)])
def test_vit_preset_parameter_counts(name, count):
    "the non-distilled presets are ViTs: timm's vit/deit counts (transformers' ViTForImageClassification agrees)"
    config = DeiTConfig.from_preset(name)
    assert config.model_type == "vit" and not config.use_distillation_token
    with torch.device("meta"): model = DeiTForImageClassification(config)
    assert model.num_parameters() == count
    with torch.device("meta"):
        ref = transformers.ViTForImageClassification(transformers.ViTConfig(**{k: v for k,v in config.to_dict().items() if k != "model_type"}))
    assert sum(p.numel() for p in ref.parameters()) == count

def test_vit_config_round_trip():
    c = DeiTConfig.from_dict({**transformers.ViTConfig(**TINY).to_dict()})
    assert c.model_type == "vit" and c.num_prefix_tokens == 1
    assert c.to_dict()["model_type"] == "vit" and "use_distillation_token" not in c.to_dict()
    with pytest.raises(ValueError, match="model_type 'bert'"): DeiTConfig.from_dict({"model_type": "bert"})

def test_teacher_needs_the_distillation_token():
    with pytest.raises(ValueError, match="use DeiTForImageClassification"):
        DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY, use_distillation_token=False))

# -- the ViT architecture (non-distilled checkpoints) ------------------------------------------------------------------

VIT_CLASSES = [("ViTForImageClassification", DeiTForImageClassification, {}),
               ("ViTModel", DeiTModel, {}),
               ("ViTForMaskedImageModeling", DeiTForMaskedImageModeling, {})]

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("hf_name,ours_cls,kw", VIT_CLASSES, ids=[c[0] for c in VIT_CLASSES])
def test_vit_parity(tmp_path, hf_name, ours_cls, kw, impl):
    hf = hf_model(hf_name, seed=3)
    hf.save_pretrained(tmp_path)
    ours = P.load_model(tmp_path, attn_implementation=impl)
    assert type(ours) is ours_cls and ours.config.model_type == "vit"
    x = pixels()
    args = {}
    if hf_name == "ViTForMaskedImageModeling": args["bool_masked_pos"] = torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) < 0.5
    if hf_name == "ViTForImageClassification": args["labels"] = torch.tensor([1, 3])
    with torch.no_grad():
        ref = hf(x, **args, output_hidden_states=True, output_attentions=impl == "eager")
        out = ours(x, **args, output_hidden_states=True, output_attentions=impl == "eager")
        record(f"{hf_name} (ViT variant)", compare_outputs(ref, out, ATOL, hf_name))
        ref = hf(pixels(size=48), interpolate_pos_encoding=True)              # another size, interpolated at run time
        out = ours(pixels(size=48), interpolate_pos_encoding=True)
        record(f"{hf_name} (ViT variant)", compare_outputs(ref, out, ATOL, hf_name + " interpolated"))

@pytest.mark.parametrize("hf_name,ours_cls,kw", VIT_CLASSES, ids=[c[0] for c in VIT_CLASSES])
def test_vit_saved_by_us_loads_in_transformers(tmp_path, hf_name, ours_cls, kw):
    torch.manual_seed(0)
    ours = randomise(ours_cls(DeiTConfig(**TINY, use_distillation_token=False, attn_implementation="eager")), 4).eval()
    ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path/"config.json").read_text())
    assert cfg["model_type"] == "vit" and cfg["architectures"] == [hf_name]
    assert all(k.startswith("vit.") or not k.startswith("deit.") for k in load_file(str(tmp_path/"model.safetensors")))
    hf,info = getattr(transformers, hf_name).from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    with torch.no_grad(): record(f"{hf_name} (ViT variant)", compare_outputs(hf.eval()(pixels()), ours(pixels()), ATOL, hf_name))
    back = type(ours).from_pretrained(tmp_path)                                # ours -> ours: bit-identical
    for k,v in ours.state_dict().items(): assert torch.equal(back.state_dict()[k], v), k

def test_vit_checkpoint_into_the_teacher_model(tmp_path):
    hf_model("ViTForImageClassification").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs the distillation token"):
        DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path)

def test_distilled_checkpoint_with_the_vit_flag(tmp_path):
    hf_model("DeiTForImageClassification").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)does not fit.*has a distillation token \(DeiT architecture\), the config says use_distillation_token=False"):
        DeiTForImageClassification.from_pretrained(tmp_path, use_distillation_token=False)

# -- transformers directories (5.x here, 4.56.2 in the fixtures) ------------------------------------------------------

DEIT_CLASSES = [("DeiTForImageClassificationWithTeacher", DeiTForImageClassificationWithTeacher),
                ("DeiTForImageClassification", DeiTForImageClassification),
                ("DeiTForMaskedImageModeling", DeiTForMaskedImageModeling), ("DeiTModel", DeiTModel)]

@pytest.mark.parametrize("save_kw", [{}, {"safe_serialization": False}, {"max_shard_size": "20KB"}], ids=["safetensors", "bin", "sharded"])
@pytest.mark.parametrize("hf_name,ours_cls", DEIT_CLASSES, ids=[c[0] for c in DEIT_CLASSES])
def test_load_model_picks_the_saved_class(tmp_path, hf_name, ours_cls, save_kw):
    hf = hf_model(hf_name, seed=5)
    try: hf.save_pretrained(tmp_path, **save_kw)
    except TypeError: pytest.skip(f"transformers {transformers.__version__} has no {save_kw}")
    ours = P.load_model(tmp_path, attn_implementation="eager")
    assert type(ours) is ours_cls and not ours.training
    if hf_name == "DeiTModel": assert ours.pooler is not None                     # transformers' DeiTModel saves its pooler
    with torch.no_grad(): record(hf_name, compare_outputs(hf(pixels()), ours(pixels()), ATOL, hf_name))

@pytest.mark.parametrize("name,ours_cls", [("teacher_bin", DeiTForImageClassificationWithTeacher),
                                           ("vit_classifier_bin", DeiTForImageClassification), ("vit_model_sharded", DeiTModel)])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_written_by_transformers_4(name, ours_cls, impl):
    "fixtures from transformers 4.56.2: pytorch_model.bin, the ViT format, a sharded safetensors index"
    ours = P.load_model(FIXTURES/name, attn_implementation=impl)
    assert type(ours) is ours_cls
    ref = load_file(str(FIXTURES/f"{name}_outputs.safetensors"))
    with torch.no_grad(): out = ours(ref.pop("pixel_values"))
    assert set(ref) == set(out.keys())
    for k,v in ref.items():
        assert out[k].shape == v.shape and out[k].dtype == v.dtype
        record(f"{ours_cls.__name__} vs 4.56.2 files", max_diff(out[k], v))
        assert max_diff(out[k], v) <= ATOL, k

def test_bare_model_into_task_models_and_back(tmp_path):
    hf = hf_model("DeiTModel", seed=6)
    hf.save_pretrained(tmp_path/"trunk")
    with pytest.warns(UserWarning, match=r"Newly initialised.*cls_classifier\.weight"):
        teacher = DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path/"trunk", attn_implementation="eager")
    with torch.no_grad(): ref,out = hf(pixels()), teacher.deit(pixels())
    assert ref.pooler_output is not None and out.pooler_output is None          # the task model's trunk has no pooler
    assert max_diff(ref.last_hidden_state, out.last_hidden_state) <= ATOL
    teacher.save_pretrained(tmp_path/"teacher")
    trunk = DeiTModel.from_pretrained(tmp_path/"teacher", add_pooling_layer=False)
    for k,v in teacher.deit.state_dict().items(): assert torch.equal(trunk.state_dict()[k], v), k

# -- our save_pretrained in transformers, and round trips -------------------------------------------------------------

@pytest.mark.parametrize("hf_name,ours_cls", DEIT_CLASSES, ids=[c[0] for c in DEIT_CLASSES])
def test_ours_to_transformers_to_ours(tmp_path, hf_name, ours_cls):
    torch.manual_seed(0)
    ours = randomise(ours_cls(DeiTConfig(**TINY, attn_implementation="eager")), 7).eval()
    proc = DeiTImageProcessor(crop_size=32, size={"height": 36, "width": 36})
    ours.save_pretrained(tmp_path/"ours", image_processor=proc)
    assert sorted(f.name for f in (tmp_path/"ours").iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert DeiTImageProcessor.from_pretrained(tmp_path/"ours") == proc
    hf = getattr(transformers, hf_name).from_pretrained(tmp_path/"ours", attn_implementation="eager").eval()
    with torch.no_grad(): record(hf_name, compare_outputs(hf(pixels()), ours(pixels()), ATOL, hf_name))
    hf.save_pretrained(tmp_path/"hf")
    back = P.load_model(tmp_path/"hf")
    assert type(back) is ours_cls
    for k,v in ours.state_dict().items(): assert torch.equal(back.state_dict()[k], v), k

# -- facebookresearch/deit and timm checkpoints -----------------------------------------------------------------------

FB_CASES = {  # name: (transformers class whose weights become the .pth, our class that load_model must pick)
    "distilled": ("DeiTForImageClassificationWithTeacher", DeiTForImageClassificationWithTeacher),
    "non_distilled": ("ViTForImageClassification", DeiTForImageClassification),
    "trunk": ("DeiTModel", DeiTModel)}

def fb_checkpoint(tmp_path, case, cfg=TINY, seed=8, wrap=True, name="ckpt.pth"):
    "(transformers reference with eps 1e-6, path of the .pth made from it)"
    hf_name = FB_CASES[case][0]
    kw = {"add_pooling_layer": False} if hf_name == "DeiTModel" else {}
    hf = hf_model(hf_name, {**cfg, "layer_norm_eps": 1e-6}, seed=seed, **kw)
    sd = to_fb(on_disk(hf, tmp_path/"hf"))
    path = tmp_path/name
    torch.save({"model": sd} if wrap else sd, path)
    return hf, path

@pytest.mark.parametrize("wrap", [True, False], ids=["model-wrapper", "bare-dict"])
@pytest.mark.parametrize("case", list(FB_CASES))
def test_fb_checkpoint_parity(tmp_path, case, wrap):
    hf, path = fb_checkpoint(tmp_path, case, wrap=wrap)
    ours = P.load_model(path, num_attention_heads=4, attn_implementation="eager")
    assert type(ours) is FB_CASES[case][1]
    assert ours.config.layer_norm_eps == 1e-6 and ours.config.use_distillation_token == (case != "non_distilled")
    with torch.no_grad():
        ref,out = hf(pixels()), ours(pixels())
        if case == "trunk": ref,out = ref.last_hidden_state, out.last_hidden_state
        else: ref,out = ref.logits, out.logits
    assert out.shape == ref.shape and out.dtype == ref.dtype
    record("facebookresearch/timm .pth", max_diff(out, ref))
    assert max_diff(out, ref) <= ATOL

def test_fb_eps_matters(tmp_path):
    "the same weights with transformers' eps 1e-12 give other logits: the 1e-6 of timm/FB is kept for such files"
    hf = hf_model("DeiTForImageClassificationWithTeacher", {**TINY, "layer_norm_eps": 1e-6}, seed=8)
    with torch.no_grad():                                                 # a small residual stream (std ~1e-3): eps shows
        for n,p in hf.named_parameters():
            if "embeddings" in n: p.mul_(1e-3)
    torch.save(to_fb(on_disk(hf, tmp_path/"hf")), path := tmp_path/"small.pth")
    cfg = DeiTConfig(**TINY)                                              # an explicit config is used as given (eps 1e-12)
    ours = P.load_model(path, config=cfg)
    assert ours.config.layer_norm_eps == 1e-12
    with torch.no_grad(): assert max_diff(ours(pixels()).logits, hf(pixels()).logits) > 1e-5
    ours = P.load_model(path, config=DeiTConfig(**TINY, layer_norm_eps=1e-6))
    with torch.no_grad(): assert max_diff(ours(pixels()).logits, hf(pixels()).logits) <= ATOL

def test_fb_qkv_split_order(tmp_path):
    _, path = fb_checkpoint(tmp_path, "distilled")
    qkv = torch.load(path, weights_only=True)["model"]["blocks.1.attn.qkv.weight"]           # (3C, C)
    ours = P.load_model(path, num_attention_heads=4)
    att = ours.deit.layers[1].attention
    C = 32
    assert torch.equal(att.q_proj.weight, qkv[:C]) and torch.equal(att.k_proj.weight, qkv[C:2*C]) and torch.equal(att.v_proj.weight, qkv[2*C:])

def test_fb_to_ours_to_transformers_is_bit_identical(tmp_path):
    hf, path = fb_checkpoint(tmp_path, "distilled")
    ours = P.load_model(path, num_attention_heads=4)
    ours.save_pretrained(tmp_path/"converted")
    cfg = json.loads((tmp_path/"converted"/"config.json").read_text())
    assert cfg["layer_norm_eps"] == 1e-6 and cfg["architectures"] == ["DeiTForImageClassificationWithTeacher"]
    again = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path/"converted", attn_implementation="eager").eval()
    ref_sd = hf.state_dict()
    for k,v in again.state_dict().items(): assert torch.equal(v, ref_sd[k]), k
    assert torch.equal(P.hf_to_fb(load_file(str(tmp_path/"converted"/"model.safetensors")))["blocks.0.attn.qkv.weight"],
                       torch.load(path, weights_only=True)["model"]["blocks.0.attn.qkv.weight"])

def test_fb_released_size_needs_no_config(tmp_path):
    "at a released size the head count comes from the preset; a file name such as timm's also names it"
    cfg = {k: v for k,v in DeiTConfig.from_preset("deit_tiny_patch16_224").to_dict().items()
           if k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")}
    hf, path = fb_checkpoint(tmp_path, "non_distilled", cfg={**cfg, "num_labels": 1000}, name="deit_tiny_patch16_224-a1311bcf.pth")
    ours = P.load_model(path)
    assert ours.config.num_attention_heads == 3 and ours.config.id2label[1] == "goldfish, Carassius auratus"
    x = pixels(1, 224)
    with torch.no_grad(): d = max_diff(ours(x).logits, hf(x).logits)
    record("facebookresearch/timm .pth", d); assert d <= ATOL

def test_fb_ambiguous_heads(tmp_path):
    _, path = fb_checkpoint(tmp_path, "distilled")
    with pytest.raises(ValueError, match=r"Cannot tell the number of attention heads.*config="):
        P.load_model(path)
    assert P.load_model(path, config=DeiTConfig(**TINY)).config.num_attention_heads == 4
    assert DeiTForImageClassificationWithTeacher.from_pretrained(path, num_attention_heads=2).config.num_attention_heads == 2

def test_fb_preset_name_as_config(tmp_path):
    cfg = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, image_size=224, patch_size=16, num_labels=1000)
    hf, path = fb_checkpoint(tmp_path, "distilled", cfg=cfg, name="checkpoint.pth")
    ours = P.load_model(path, config="deit_tiny_distilled_patch16_224")
    assert ours.config.layer_norm_eps == 1e-6 and ours.config.num_labels == 1000
    with torch.no_grad(): assert max_diff(ours(pixels(1, 224)).logits, hf(pixels(1, 224)).logits) <= ATOL
    with pytest.raises(ValueError, match="Unknown preset 'deit_huge'"): P.load_model(path, config="deit_huge")

def test_fb_training_checkpoint_and_ddp_prefix(tmp_path):
    "main.py saves model, optimizer, lr_scheduler, epoch and its argparse.Namespace; DDP adds 'module.'"
    hf, path = fb_checkpoint(tmp_path, "distilled", wrap=False)
    sd = torch.load(path, weights_only=True)
    torch.save({"model": {f"module.{k}": v for k,v in sd.items()}, "optimizer": {"state": {}, "param_groups": []},
                "epoch": 299, "args": argparse.Namespace(model="deit_tiny_distilled_patch16_224", lr=5e-4)}, tmp_path/"train.pth")
    ours = P.load_model(tmp_path/"train.pth", num_attention_heads=4)
    with torch.no_grad(): assert max_diff(ours(pixels()).logits, hf(pixels()).logits) <= ATOL

def test_fb_half_precision_auto_dtype(tmp_path):
    _, path = fb_checkpoint(tmp_path, "distilled", wrap=False)
    torch.save({k: v.half() for k,v in torch.load(path, weights_only=True).items()}, path)
    assert P.load_model(path, num_attention_heads=4, dtype="auto").dtype == torch.float16
    assert P.load_model(path, num_attention_heads=4).dtype == torch.float32

def test_timm_hub_layout(tmp_path):
    "a timm hub repository: model.safetensors with timm names and a config.json naming the architecture"
    cfg = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, image_size=224, patch_size=16, num_labels=1000)
    hf, path = fb_checkpoint(tmp_path, "distilled", cfg=cfg, wrap=False)
    d = tmp_path/"timm"; d.mkdir()
    save_file(torch.load(path, weights_only=True), str(d/"model.safetensors"))
    (d/"config.json").write_text(json.dumps({"architecture": "deit_tiny_distilled_patch16_224", "num_classes": 1000, "num_features": 192}))
    ours = P.load_model(d)
    assert type(ours) is DeiTForImageClassificationWithTeacher and ours.config.layer_norm_eps == 1e-6
    with torch.no_grad(): assert max_diff(ours(pixels(1, 224)).logits, hf(pixels(1, 224)).logits) <= ATOL

# -- overrides: image size (resampled positions) and a new head -------------------------------------------------------

@pytest.mark.parametrize("case", ["distilled", "non_distilled"])
def test_resample_at_load_equals_interpolation_at_run_time(tmp_path, case):
    "224 weights into a 384 model (here 32 -> 48 px): transformers' bicubic, the same as interpolate_pos_encoding"
    hf, path = fb_checkpoint(tmp_path, case)
    ours, report = P.load_model(path, num_attention_heads=4, image_size=48, output_loading_info=True)
    P_ = 2 if case == "distilled" else 1
    assert report["resampled_keys"] == [(("deit." if case == "distilled" else "vit.") + "embeddings.position_embeddings", (1, P_ + 16, 32), (1, P_ + 36, 32))]
    assert ours.config.image_size == 48
    x = pixels(2, 48)
    with torch.no_grad(): d = max_diff(ours(x).logits, hf(x, interpolate_pos_encoding=True).logits)
    record("position resample at load", d); assert d <= ATOL

def test_resample_transformers_directory(tmp_path):
    hf = hf_model("DeiTForImageClassificationWithTeacher", seed=9)
    hf.save_pretrained(tmp_path)
    ours = DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path, image_size=(48, 64), attn_implementation="eager")
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad(): assert max_diff(ours(x).logits, hf(x, interpolate_pos_encoding=True).logits) <= ATOL

def test_new_head_only_when_asked(tmp_path):
    hf = hf_model("DeiTForImageClassificationWithTeacher", seed=10)
    hf.save_pretrained(tmp_path)
    with warnings.catch_warnings(): warnings.simplefilter("error"); same = P.load_model(tmp_path, num_labels=5)   # same size: no notice
    with pytest.warns(UserWarning, match=r"Newly initialised.*cls_classifier\.weight.*distillation_classifier\.weight"):
        ours, rep = P.load_model(tmp_path, num_labels=10, output_loading_info=True)
    assert ours.config.num_labels == 10 and len(rep["reinitialized_keys"]) == 4
    with torch.no_grad(): assert torch.equal(ours.deit(pixels()).last_hidden_state, same.deit(pixels()).last_hidden_state)
    with pytest.raises(ValueError, match=r"shape mismatches: cls_classifier\.weight is \(5, 32\) in the checkpoint, \(10, 32\)"):
        P.load_model(tmp_path, config=DeiTConfig(**{**TINY, "num_labels": 10}))      # a config saying 10 is no request

# -- errors ------------------------------------------------------------------------------------------------------------

def test_wrong_architectures(tmp_path):
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(4, 2), "bert.pooler.dense.weight": torch.zeros(2, 2)}, tmp_path/"bert.bin")
    with pytest.raises(ValueError, match="does not look like a DeiT or ViT checkpoint"): P.load_model(tmp_path/"bert.bin")
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3),
              "fc.weight": torch.zeros(1000, 2048)}
    save_file(resnet, str(tmp_path/"resnet.safetensors"))
    with pytest.raises(ValueError, match="does not look like a DeiT or ViT checkpoint"): P.load_model(tmp_path/"resnet.safetensors")
    save_file({"beit.embeddings.patch_embeddings.projection.weight": torch.zeros(4, 3, 2, 2)}, str(tmp_path/"beit.safetensors"))
    with pytest.raises(ValueError, match="trunk is under 'beit.'"): P.load_model(tmp_path/"beit.safetensors")
    d = tmp_path/"bertdir"; d.mkdir()
    hf_model("DeiTModel").save_pretrained(d)
    (d/"config.json").write_text(json.dumps({**json.loads((d/"config.json").read_text()), "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"): P.load_model(d)
    (d/"config.json").write_text(json.dumps({**transformers.DeiTConfig(**TINY).to_dict(), "architectures": ["DeiTForSomethingElse"]}))
    with pytest.raises(ValueError, match="'DeiTForSomethingElse', which deit_scratch does not implement"): P.load_model(d)

@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not-a-dict", "pickled-code"])
def test_damaged_pth(tmp_path, damage):
    _, path = fb_checkpoint(tmp_path, "distilled")
    data = path.read_bytes()
    class Evil:
        def __reduce__(self): return (print, ("ran",))
    if damage == "truncated": path.write_bytes(data[:len(data)//2])
    elif damage == "garbage": path.write_bytes(b"\x80\x02garbage" * 100)
    elif damage == "empty": path.write_bytes(b"")
    elif damage == "not-a-dict": torch.save([torch.zeros(2)], path)
    else: torch.save({"model": Evil()}, path)
    with pytest.raises(ValueError, match="Could not read|does not hold a state dict"): P.load_model(path, num_attention_heads=4)

def test_config_json_disagrees_with_weights(tmp_path):
    hf_model("DeiTForImageClassification").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path/"config.json").read_text())
    (tmp_path/"config.json").write_text(json.dumps({**cfg, "image_size": 48}))
    with pytest.raises(ValueError, match=r"config\.json and the weights disagree: config\.json's image_size 48 means 36 patch positions, the weights have 16"):
        P.load_model(tmp_path)
    (tmp_path/"config.json").write_text(json.dumps({**cfg, "hidden_size": 64, "num_attention_heads": 4}))
    with pytest.raises(ValueError, match="hidden_size is 32 in the checkpoint, 64 in the config"): P.load_model(tmp_path)

def test_non_square_positions_without_config(tmp_path):
    hf, path = fb_checkpoint(tmp_path, "distilled", wrap=False)
    sd = torch.load(path, weights_only=True)
    sd["pos_embed"] = sd["pos_embed"][:, :2 + 12]                          # 12 patches: not a square grid
    torch.save(sd, path)
    with pytest.raises(ValueError, match="not a square grid: pass config="): P.load_model(path, num_attention_heads=4)

def test_strict_report(tmp_path):
    hf, path = fb_checkpoint(tmp_path, "distilled", wrap=False)
    sd = torch.load(path, weights_only=True)
    del sd["blocks.1.mlp.fc2.bias"]; sd["blocks.0.ls1.gamma"] = torch.ones(32)        # DeiT III's layer scale: not supported
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"(?s)missing keys: \['deit\.layers\.1\.mlp\.fc2\.bias'\].*unexpected keys: \['deit\.blocks\.0\.ls1\.gamma'\]"):
        P.load_model(path, num_attention_heads=4)
    model, rep = P.load_model(path, num_attention_heads=4, strict=False, output_loading_info=True)
    assert rep["missing_keys"] == ["deit.layers.1.mlp.fc2.bias"] and rep["unexpected_keys"] == ["deit.blocks.0.ls1.gamma"]
    assert rep["format"] == "timm"

def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"): P.load_model(tmp_path/"nowhere")
    with pytest.raises(FileNotFoundError, match="does not exist"): P.load_model("no_such_file.pth")
    (tmp_path/"empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No weights found"): P.load_model(tmp_path/"empty")

# -- hub ids ------------------------------------------------------------------------------------------------------------

REPO = "facebook/deit-tiny-distilled-patch16-224"

def fake_cache(tmp_path, hf):
    "huggingface_hub's cache layout: models--org--name/{refs/main, snapshots/<commit>/files}"
    commit = "0123456789abcdef" * 2 + "01234567"
    root = tmp_path/"hub"/"models--facebook--deit-tiny-distilled-patch16-224"
    hf.save_pretrained(root/"snapshots"/commit)
    (root/"refs").mkdir(); (root/"refs"/"main").write_text(commit)
    return tmp_path/"hub"

def test_hub_id_offline_from_the_cache(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub, huggingface_hub.constants, huggingface_hub.errors
    hf = hf_model("DeiTForImageClassificationWithTeacher", seed=11)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(fake_cache(tmp_path, hf)))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    def no_network(*a, **k): raise AssertionError("the network was used")
    monkeypatch.setattr(huggingface_hub, "list_repo_files", no_network)
    ours = ds.DeiTForImageClassificationWithTeacher.from_pretrained(REPO, attn_implementation="eager")
    with torch.no_grad(): assert max_diff(ours(pixels()).logits, hf(pixels()).logits) <= ATOL
    assert type(P.load_model(REPO)) is DeiTForImageClassificationWithTeacher
    with pytest.raises(ValueError, match=r"Cannot get 'facebook/not-there': it is not in the local huggingface_hub cache"):
        P.load_model("facebook/not-there")

def test_hub_id_online_downloads_config_and_one_weights_file(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    import huggingface_hub, huggingface_hub.constants, huggingface_hub.errors
    import deit_scratch.files
    monkeypatch.setattr(deit_scratch.files, "_probe", lambda *a: None)           # "the hub answers" (it is simulated below)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False); monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    remote = tmp_path/"remote"
    hf = hf_model("ViTForImageClassification", seed=12)
    hf.save_pretrained(remote)
    torch.save({}, remote/"pytorch_model.bin")                                  # the hub repos hold both formats
    DeiTImageProcessor().save_pretrained(remote)
    fetched = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path/"empty-cache"))
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo_id, **k: sorted(f.name for f in remote.iterdir()))
    def download(repo_id, filename, local_files_only=False, **k):
        if local_files_only: raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        fetched.append(filename)
        return str(remote/filename)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    ours = P.load_model("facebook/deit-tiny-patch16-224", attn_implementation="eager")
    assert type(ours) is DeiTForImageClassification and ours.config.model_type == "vit"
    assert sorted(fetched) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    with torch.no_grad(): assert max_diff(ours(pixels()).logits, hf(pixels()).logits) <= ATOL

def test_hub_id_without_huggingface_hub(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)                   # import fails
    with pytest.raises(ValueError, match=r"(?s)huggingface_hub is not installed.*pip install huggingface_hub.*git clone https://huggingface.co/facebook/deit-base-distilled-patch16-224"):
        P.load_model("facebook/deit-base-distilled-patch16-224")

def test_is_hub_id():
    assert P.is_hub_id("facebook/deit-base-distilled-patch16-224") and P.is_hub_id("timm/deit_tiny_patch16_224.fb_in1k")
    assert not any(P.is_hub_id(s) for s in ("deit.pth", "dir/model.safetensors", "/abs/path", "./rel/x", "a/b/c", "../x"))
