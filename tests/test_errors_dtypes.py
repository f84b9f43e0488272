"""Clear errors for bad inputs and bad checkpoints; half precision; preset sizes; weight init. No transformers needed."""
import json
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import deit_scratch as ds
from deit_test_utils import randomise

CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
           encoder_stride=8, num_labels=10)
CLASSES = [ds.DeiTModel, ds.DeiTForImageClassification, ds.DeiTForImageClassificationWithTeacher, ds.DeiTForMaskedImageModeling]

@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return randomise(ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG)), 0).eval()

@pytest.fixture(scope="module")
def saved(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(d)
    return d

def x(*shape, dtype=torch.float32): return torch.randn(*shape).to(dtype)

# -- inputs --------------------------------------------------------------------------------------------------------

def test_wrong_channel_count(teacher):
    with pytest.raises(ValueError, match=r"channel dimension of the pixel values match with the one set in the configuration\. Expected 3 but got 1"):
        teacher(x(2, 1, 32, 32))

def test_wrong_spatial_size_without_interpolation(teacher):
    with pytest.raises(ValueError, match=r"Input image size \(48\*48\) doesn't match model \(32\*32\).*interpolate_pos_encoding=True"):
        teacher(x(2, 3, 48, 48))
    assert teacher(x(2, 3, 48, 48), interpolate_pos_encoding=True).logits.shape == (2, 10)

@pytest.mark.parametrize("interpolate", [False, True], ids=["no-interp", "interp"])
def test_size_not_divisible_by_patch(teacher, interpolate):
    with pytest.raises(ValueError, match=r"Input image size \(30\*32\) is not divisible by the patch size \(8\*8\)"):
        teacher(x(2, 3, 30, 32), interpolate_pos_encoding=interpolate)

def test_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"The hidden size \(30\) is not a multiple of the number of attention heads \(4\)"):
        ds.DeiTConfig(hidden_size=30, num_attention_heads=4)

def test_image_size_not_divisible_by_patch_in_config():
    with pytest.raises(ValueError, match=r"image_size 30 is not divisible by patch_size 8"):
        ds.DeiTConfig(image_size=30, patch_size=8)

@pytest.mark.parametrize("shape", [(2, 15), (2, 4, 4), (1, 16)], ids=str)
def test_bool_masked_pos_wrong_shape(shape):
    model = ds.DeiTForMaskedImageModeling(ds.DeiTConfig(**CFG)).eval()
    with pytest.raises(ValueError, match=r"bool_masked_pos must have shape \(batch_size, num_patches\) = \(2, 16\)"):
        model(x(2, 3, 32, 32), bool_masked_pos=torch.zeros(shape, dtype=torch.bool))

def test_bool_masked_pos_without_mask_token(teacher):
    with pytest.raises(ValueError, match=r"no mask token.*use_mask_token=True"):
        teacher.deit(x(2, 3, 32, 32), bool_masked_pos=torch.zeros(2, 16, dtype=torch.bool))

def test_empty_batch(teacher):
    with pytest.raises(ValueError, match=r"empty batch"):
        teacher(x(0, 3, 32, 32))

@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool], ids=str)
def test_non_float_tensor(teacher, dtype):
    with pytest.raises(TypeError, match=r"pixel_values must be a floating point tensor, got dtype torch\.(uint8|int64|bool)"):
        teacher(torch.zeros(2, 3, 32, 32, dtype=dtype))

@pytest.mark.parametrize("value", [np.zeros((2, 3, 32, 32), np.float32), [[0.0]], None], ids=["numpy", "list", "None"])
def test_non_tensor_input(teacher, value):
    with pytest.raises(TypeError, match=r"pixel_values must be a torch\.Tensor of shape \(batch, channels, height, width\)"):
        teacher(value)

def test_wrong_number_of_dims(teacher):
    with pytest.raises(ValueError, match=r"pixel_values must have 4 dimensions"):
        teacher(x(3, 32, 32))

def test_unknown_attn_implementation():
    with pytest.raises(ValueError, match=r"Unknown attn_implementation 'flash'"):
        ds.DeiTModel(ds.DeiTConfig(**CFG, attn_implementation="flash"))

def test_unknown_activation():
    with pytest.raises(ValueError, match=r"Unknown activation 'swishy'"):
        ds.DeiTModel(ds.DeiTConfig(**CFG, hidden_act="swishy"))

# -- checkpoints ---------------------------------------------------------------------------------------------------

def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        ds.DeiTModel.from_pretrained(tmp_path/"nope")

def test_missing_config(saved, tmp_path):
    (tmp_path/"model.safetensors").write_bytes((saved/"model.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"No config\.json found"):
        ds.DeiTModel.from_pretrained(tmp_path)

def test_missing_weights_file(saved, tmp_path):
    (tmp_path/"config.json").write_text((saved/"config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"No weights found in .*model\.safetensors"):
        ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path)

@pytest.mark.parametrize("damage", ["corrupt", "truncated", "empty"])
def test_damaged_safetensors(saved, tmp_path, damage):
    (tmp_path/"config.json").write_text((saved/"config.json").read_text())
    data = (saved/"model.safetensors").read_bytes()
    data = {"corrupt": b"\x07not a safetensors file" * 50, "truncated": data[:len(data)//2], "empty": b""}[damage]
    (tmp_path/"model.safetensors").write_bytes(data)
    with pytest.raises(ValueError, match=r"Could not read .*model\.safetensors as safetensors .*truncated or corrupt"):
        ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path)

def test_corrupt_config_json(saved, tmp_path):
    (tmp_path/"config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        ds.DeiTModel.from_pretrained(tmp_path)

def _write(tmp_path, saved, sd):
    (tmp_path/"config.json").write_text((saved/"config.json").read_text())
    save_file(sd, str(tmp_path/"model.safetensors"))

def test_strict_missing_key(saved, tmp_path):
    sd = load_file(str(saved/"model.safetensors"))
    del sd["deit.encoder.layer.1.attention.attention.query.weight"]
    _write(tmp_path, saved, sd)
    with pytest.raises(ValueError, match=r"(?s)does not fit DeiTForImageClassificationWithTeacher.*missing keys: \['deit\.layers\.1\.attention\.q_proj\.weight'\]"):
        ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path)
    model,report = ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path, strict=False, output_loading_info=True)
    assert report["missing_keys"] == ["deit.layers.1.attention.q_proj.weight"]

def test_strict_unexpected_key(saved, tmp_path):
    sd = load_file(str(saved/"model.safetensors"))
    sd["deit.encoder.layer.0.extra.weight"] = torch.zeros(3)
    _write(tmp_path, saved, sd)
    # no part of DeiT, nothing missing: named in a warning and ignored, as transformers does (it lists it as unexpected)
    with pytest.warns(UserWarning, match=r"Not used: \['deit\.layers\.0\.extra\.weight'\] is in the checkpoint but no part of DeiTForImageClassificationWithTeacher"):
        _,report = ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path, output_loading_info=True)
    assert report["unexpected_keys"] == ["deit.layers.0.extra.weight"]
    _,report = ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path, strict=False, output_loading_info=True)
    assert report["unexpected_keys"] == ["deit.layers.0.extra.weight"]

def test_strict_shape_mismatch(saved):
    with pytest.raises(ValueError, match=r"shape mismatches: deit\.layers\.0\.mlp\.fc1\.weight is \(64, 32\) in the checkpoint, \(48, 32\) in the model"):
        ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, intermediate_size=48)
    _,report = ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, intermediate_size=48, strict=False, output_loading_info=True)
    assert ("deit.layers.0.mlp.fc1.weight", (64, 32), (48, 32)) in report["mismatched_keys"]

def test_unknown_config_override(saved):
    with pytest.raises(ValueError, match=r"Unknown config fields \['hiden_size'\]"):
        ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, hiden_size=64)

def test_roundtrip_is_exact(teacher, saved):
    loaded = ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved)
    for k,v in teacher.state_dict().items(): assert torch.equal(v, loaded.state_dict()[k]), k
    assert json.loads((saved/"config.json").read_text())["architectures"] == ["DeiTForImageClassificationWithTeacher"]

# -- half precision --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_on_cpu(teacher, dtype, impl):
    half = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig(**CFG, attn_implementation=impl)).eval()
    half.load_state_dict(teacher.state_dict())
    half.to(dtype)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))        # float32: cast inside
    with torch.no_grad():
        ref = teacher(pixels, output_hidden_states=True)
        out = half(pixels, output_hidden_states=True, output_attentions=impl == "eager")
    for k in ("logits", "cls_logits", "distillation_logits"):
        a,b = getattr(out, k),getattr(ref, k)
        assert a.dtype == dtype, f"{k} is {a.dtype}"
        rel = ((a.float() - b).norm() / b.norm()).item()     # bf16 measures ~0.02 here, fp16 ~0.002
        assert rel <= 5e-2, f"{k}: relative error {rel:.3f}"
    assert all(h.dtype == dtype for h in out.hidden_states)
    if impl == "eager": assert all(a.dtype == dtype for a in out.attentions)

def test_from_pretrained_dtype(teacher, saved, tmp_path):
    assert ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, dtype="auto").dtype == torch.float32
    ds.DeiTForImageClassificationWithTeacher.from_pretrained(saved, dtype=torch.float16).save_pretrained(tmp_path)
    assert json.loads((tmp_path/"config.json").read_text())["dtype"] == "float16"
    assert ds.DeiTForImageClassificationWithTeacher.from_pretrained(tmp_path, dtype="auto").dtype == torch.float16

# -- sizes, activations, init ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,count", [("deit_tiny_distilled_patch16_224", 5_910_800), ("deit_small_distilled_patch16_224", 22_436_432),
                                        ("deit_base_distilled_patch16_224", 87_338_192), ("deit_base_distilled_patch16_384", 87_630_032)])
def test_preset_parameter_counts(name, count):
    with torch.device("meta"):
        model = ds.DeiTForImageClassificationWithTeacher(ds.DeiTConfig.from_preset(name))
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.num_parameters() == count

def test_unknown_preset():
    with pytest.raises(ValueError, match=r"Unknown preset 'deit_huge'"):
        ds.DeiTConfig.from_preset("deit_huge")

@pytest.mark.parametrize("act", ["gelu", "relu", "selu", "gelu_new"])
def test_hidden_act_runs(act):
    torch.manual_seed(0)
    model = randomise(ds.DeiTForImageClassification(ds.DeiTConfig(**{**CFG, "hidden_act": act})), 0).eval()
    with torch.no_grad(): out = model(x(2, 3, 32, 32)).logits
    assert out.shape == (2, 10) and torch.isfinite(out).all()

def test_init_statistics_as_transformers_5():
    "Linear/Conv weights normal(0, 0.02), NOT truncated; biases 0; LayerNorm 1/0; cls/dist/pos/mask tokens 0"
    torch.manual_seed(0)
    cfg = ds.DeiTConfig(hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, image_size=32,
                        patch_size=8, encoder_stride=8, num_labels=100)
    for model in (ds.DeiTForImageClassificationWithTeacher(cfg), ds.DeiTForMaskedImageModeling(cfg)):
        checked = 0
        for name,m in model.named_modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                w = m.weight.detach()
                assert abs(w.mean().item()) < 0.002, name
                if w.numel() >= 10_000:
                    assert 0.0185 < w.std().item() < 0.0215, (name, w.std().item())
                    assert w.abs().max().item() > 3*0.02, f"{name}: looks truncated (max |w| {w.abs().max().item():.4f})"
                    checked += 1
                assert m.bias is None or torch.count_nonzero(m.bias) == 0, name
            elif isinstance(m, torch.nn.LayerNorm):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0), name
        assert checked >= 5
        emb = model.deit.embeddings
        for t in (emb.cls_token, emb.distillation_token, emb.position_embeddings, emb.mask_token):
            assert t is None or torch.count_nonzero(t) == 0
    assert model.deit.embeddings.mask_token is not None
