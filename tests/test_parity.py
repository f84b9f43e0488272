"""deit_scratch computes what transformers 5 computes (fp32, CPU, max |diff| <= 1e-5 on every returned field).

For each configuration the transformers model is built with random weights, every parameter that transformers
initialises to a constant (tokens, positions, biases, LayerNorms) is randomised, it is saved with
`save_pretrained`, and our `from_pretrained` loads that directory. The reference runs in eager mode (it is the
only transformers 5 mode that returns attention maps); ours runs under both "eager" and "sdpa".
"""
import itertools, json
from pathlib import Path
import pytest
import torch
from safetensors.torch import load_file

transformers = pytest.importorskip("transformers", minversion="5.0",
                                   reason="parity tests need transformers>=5 (the dev requirement pins transformers==5.23.0)")
import deit_scratch as ds
from deit_test_utils import randomise, compare_outputs, flatten, max_diff

ATOL = 1e-5
IMPLS = ["eager", "sdpa"]

# sizes, head counts 2/3/4/6, patch 4/8/16, image 24..384, qkv_bias off, relu/gelu_new/gelu, 1 or 3 channels
CONFIGS = {
    "h32-nh4-p8-img32-gelu": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  image_size=32, patch_size=8, encoder_stride=8),
    "h48-nh3-p16-img48-noqkvbias-gelu_new": dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                                                 image_size=48, patch_size=16, encoder_stride=16, qkv_bias=False, hidden_act="gelu_new"),
    "h24-nh2-p4-img24-c1-relu-k5": dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40,
                                        image_size=24, patch_size=4, encoder_stride=4, num_channels=1, hidden_act="relu", num_labels=5),
    "h36-nh6-p8-img32-eps1e-6-k3": dict(hidden_size=36, num_hidden_layers=2, num_attention_heads=6, intermediate_size=72,
                                        image_size=32, patch_size=8, encoder_stride=8, layer_norm_eps=1e-6, num_labels=3),
    "h24-nh2-p16-img384": dict(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                               image_size=384, patch_size=16, encoder_stride=16),
    "h64-nh4-p16-img64-c1-pool48relu-k7": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                               image_size=64, patch_size=16, encoder_stride=16, num_channels=1,
                                               pooler_output_size=48, pooler_act="relu", num_labels=7),
}

# variant id: (class name, model constructor kwargs)
VARIANTS = {
    "DeiTModel": ("DeiTModel", {}),                                          # with pooler (the default)
    "DeiTModel-nopooler": ("DeiTModel", dict(add_pooling_layer=False)),
    "DeiTModel-masktoken": ("DeiTModel", dict(use_mask_token=True)),         # takes bool_masked_pos
    "Classification": ("DeiTForImageClassification", {}),                  # with single-label labels -> loss
    "WithTeacher": ("DeiTForImageClassificationWithTeacher", {}),
    "MaskedImageModeling": ("DeiTForMaskedImageModeling", {}),              # with bool_masked_pos -> loss
}
CLASS_NAMES = ["DeiTModel", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher", "DeiTForMaskedImageModeling"]

def grid(cfg) -> int: return cfg["image_size"]//cfg["patch_size"]

class Ref:
    "A randomised transformers model saved to `path`, its inputs and its outputs"
    def __init__(self, cfg_id, variant, path, seed):
        cfg = CONFIGS[cfg_id]
        cls_name,model_kw = VARIANTS[variant]
        torch.manual_seed(seed)
        self.cfg,self.variant,self.cls_name,self.model_kw,self.path = cfg,variant,cls_name,model_kw,Path(path)
        self.model = getattr(transformers, cls_name)(transformers.DeiTConfig(**cfg), **model_kw)
        randomise(self.model, seed)
        self.model.set_attn_implementation("eager")
        self.model.eval()
        self.model.save_pretrained(self.path)
        g = torch.Generator().manual_seed(seed + 1)
        C,S = cfg.get("num_channels", 3),cfg["image_size"]
        self.x = torch.randn(2, C, S, S, generator=g)
        self.kw = {}
        if variant == "Classification":
            self.kw["labels"] = torch.randint(0, cfg.get("num_labels", 2), (2,), generator=g)
        if variant in ("DeiTModel-masktoken", "MaskedImageModeling"):
            self.kw["bool_masked_pos"] = torch.rand(2, grid(cfg)**2, generator=g) < 0.5
        with torch.no_grad():
            self.full = self.model(self.x, **self.kw, output_hidden_states=True, output_attentions=True)
            self.plain = self.model(self.x, **self.kw)

def load_ours(variant, path, impl):
    "Our model from the directory transformers wrote (model arguments such as add_pooling_layer go through, as in transformers)"
    cls_name,model_kw = VARIANTS[variant]
    model,report = getattr(ds, cls_name).from_pretrained(path, attn_implementation=impl, output_loading_info=True, **model_kw)
    assert not report["missing_keys"] and not report["unexpected_keys"] and not report["mismatched_keys"], report
    return model

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = {}
    def get(cfg_id, variant):
        if (cfg_id, variant) not in cache:
            seed = 1000*list(CONFIGS).index(cfg_id) + 10*list(VARIANTS).index(variant)
            cache[cfg_id, variant] = Ref(cfg_id, variant, tmp_path_factory.mktemp(f"{cfg_id}-{variant}"), seed)
        return cache[cfg_id, variant]
    return get

@pytest.fixture(scope="module")
def ours_cached(reference):
    cache = {}
    def get(cfg_id, variant, impl):
        if (cfg_id, variant, impl) not in cache: cache[cfg_id, variant, impl] = load_ours(variant, reference(cfg_id, variant).path, impl)
        return cache[cfg_id, variant, impl]
    return get

# -- every field, every configuration, every class, both kernels -------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("cfg_id", CONFIGS)
def test_forward_parity(reference, cfg_id, variant, impl):
    ref = reference(cfg_id, variant)
    ours = load_ours(variant, ref.path, impl)
    assert ours.config.attn_implementation == impl and not ours.training
    with torch.no_grad():
        full = ours(ref.x, **ref.kw, output_hidden_states=True, output_attentions=True)   # sdpa falls back to eager per layer
        plain = ours(ref.x, **ref.kw)                                                      # the fused sdpa kernel itself
    L = ref.cfg["num_hidden_layers"]
    assert len(full.hidden_states) == L + 1 and len(full.attentions) == L
    compare_outputs(ref.full, full, ATOL, f"{cfg_id}/{variant}/{impl} (all outputs)", record=ref.cls_name)
    compare_outputs(ref.plain, plain, ATOL, f"{cfg_id}/{variant}/{impl} (plain)", record=ref.cls_name)

# -- interpolate_pos_encoding ----------------------------------------------------------------------------------------

SIZES = {  # grid g of the config -> (rows, cols) of patches of the input
    "larger": lambda g: (g + 2, g + 2),
    "smaller": lambda g: (max(1, g - 2),)*2,
    "nonsquare": lambda g: (g, g + 1),
    "nonsquare-samecount": lambda g: (2*g, g//2) if g % 2 == 0 else None,   # same patch count, still interpolated
    "same": lambda g: (g, g),                                                 # transformers returns the table as is
}
INTERP_VARIANTS = ["DeiTModel", "DeiTModel-masktoken", "Classification", "WithTeacher", "MaskedImageModeling"]

def interp_params():
    for cfg_id,variant,size in itertools.product(CONFIGS, INTERP_VARIANTS, SIZES):
        rc = SIZES[size](grid(CONFIGS[cfg_id]))
        if rc is None: continue
        # transformers' MIM head reshapes the patch tokens to a square grid: non-square inputs fail there
        if variant == "MaskedImageModeling" and rc[0] != rc[1]: continue
        yield pytest.param(cfg_id, variant, size, id=f"{cfg_id}-{variant}-{size}")

@pytest.mark.parametrize("cfg_id,variant,size", list(interp_params()))
def test_interpolate_pos_encoding(reference, ours_cached, cfg_id, variant, size):
    ref = reference(cfg_id, variant)
    p = ref.cfg["patch_size"]
    rows,cols = SIZES[size](grid(ref.cfg))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, ref.cfg.get("num_channels", 3), rows*p, cols*p, generator=g)
    kw = dict(interpolate_pos_encoding=True, output_hidden_states=True, output_attentions=True)
    if variant == "DeiTModel-masktoken": kw["bool_masked_pos"] = torch.rand(1, rows*cols, generator=g) < 0.5
    with torch.no_grad():
        expected = ref.model(x, **kw)
        for impl in IMPLS:
            ours = ours_cached(cfg_id, variant, impl)
            compare_outputs(expected, ours(x, **kw), ATOL, f"{cfg_id}/{variant}/{size}/{impl}", record=ref.cls_name)
            kw_plain = {k:v for k,v in kw.items() if k not in ("output_hidden_states", "output_attentions")}
            compare_outputs(ref.model(x, **kw_plain), ours(x, **kw_plain), ATOL, f"{cfg_id}/{variant}/{size}/{impl} plain")

# -- losses and problem_type ----------------------------------------------------------------------------------------

LABEL_CASES = {  # id: (num_labels, preset problem_type, labels maker, expected problem_type)
    "regression-labels(B)": (1, None, lambda g: torch.randn(3, generator=g), "regression"),
    "regression-labels(B,1)": (1, None, lambda g: torch.randn(3, 1, generator=g), "regression"),
    "single_label-long": (4, None, lambda g: torch.randint(0, 4, (3,), generator=g), "single_label_classification"),
    "single_label-ignore_index": (4, None, lambda g: torch.tensor([2, -100, 0]), "single_label_classification"),
    "multi_label-float01": (4, None, lambda g: (torch.rand(3, 4, generator=g) < 0.5).float(), "multi_label_classification"),
    "preset-regression-k3": (3, "regression", lambda g: torch.randn(3, 3, generator=g), "regression"),
}

@pytest.mark.parametrize("case", LABEL_CASES)
def test_classification_loss_and_problem_type(tmp_path, case):
    num_labels,preset,make_labels,expected = LABEL_CASES[case]
    cfg = {**CONFIGS["h32-nh4-p8-img32-gelu"], "num_labels": num_labels, "problem_type": preset}
    torch.manual_seed(3)
    hf = randomise(transformers.DeiTForImageClassification(transformers.DeiTConfig(**cfg)), 3).eval()
    hf.save_pretrained(tmp_path/"hf")
    ours = ds.DeiTForImageClassification.from_pretrained(tmp_path/"hf")
    assert ours.config.problem_type == preset
    g = torch.Generator().manual_seed(4)
    x,labels = torch.randn(3, 3, 32, 32, generator=g),make_labels(g)
    with torch.no_grad(): a,b = hf(x, labels=labels),ours(x, labels=labels)
    compare_outputs(a, b, ATOL, case, record="DeiTForImageClassification")
    assert b.loss.ndim == 0 and torch.isfinite(b.loss)
    assert hf.config.problem_type == expected and ours.config.problem_type == expected
    # sticky: written into the config, saved, and still used for the next batch
    ours.save_pretrained(tmp_path/"ours")
    assert json.loads((tmp_path/"ours"/"config.json").read_text())["problem_type"] == expected
    with torch.no_grad(): a,b = hf(x[:2], labels=labels[:2]),ours(x[:2], labels=labels[:2])
    assert max_diff(a.loss, b.loss) <= ATOL

# -- return_dict=False -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", ["all-outputs", "plain"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_return_dict_false(reference, ours_cached, variant, flags):
    cfg_id = "h36-nh6-p8-img32-eps1e-6-k3"
    ref = reference(cfg_id, variant)
    kw = dict(ref.kw, return_dict=False)
    if flags == "all-outputs": kw.update(output_hidden_states=True, output_attentions=True)
    with torch.no_grad(): a = ref.model(ref.x, **kw); b = ours_cached(cfg_id, variant, "sdpa")(ref.x, **kw)
    assert isinstance(b, tuple) and len(a) == len(b), f"transformers returns {len(a)} items, ours {len(b)}"
    for i,(u,v) in enumerate(zip(a, b)):
        assert isinstance(u, torch.Tensor) == isinstance(v, torch.Tensor), f"item {i}: {type(u).__name__} vs {type(v).__name__}"
        if not isinstance(u, torch.Tensor): assert len(u) == len(v), f"item {i}: lengths {len(u)} vs {len(v)}"
    fa,fb = flatten(a),flatten(b)
    assert len(fa) == len(fb)
    assert max(max_diff(u, v) for u,v in zip(fa, fb)) <= ATOL

# -- our save_pretrained loads in transformers -------------------------------------------------------------------------

@pytest.mark.parametrize("cls_name", CLASS_NAMES)
@pytest.mark.parametrize("cfg_id", ["h32-nh4-p8-img32-gelu", "h48-nh3-p16-img48-noqkvbias-gelu_new"])
def test_save_pretrained_loads_in_transformers(reference, tmp_path, cfg_id, cls_name):
    cfg = CONFIGS[cfg_id]
    torch.manual_seed(5)
    ours = randomise(getattr(ds, cls_name)(ds.DeiTConfig(**cfg)), 5).eval()
    ours.save_pretrained(tmp_path)
    hf,info = getattr(transformers, cls_name).from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # the file uses transformers' on-disk (legacy v4) names, exactly the keys transformers itself writes
    variant = {"DeiTForImageClassification": "Classification", "DeiTForImageClassificationWithTeacher": "WithTeacher",
               "DeiTForMaskedImageModeling": "MaskedImageModeling"}.get(cls_name, cls_name)
    assert set(load_file(str(tmp_path/"model.safetensors"))) == set(load_file(str(reference(cfg_id, variant).path/"model.safetensors")))
    x = torch.randn(2, cfg.get("num_channels", 3), cfg["image_size"], cfg["image_size"], generator=torch.Generator().manual_seed(6))
    kw = dict(output_hidden_states=True, output_attentions=True)
    if cls_name == "DeiTForMaskedImageModeling": kw["bool_masked_pos"] = torch.rand(2, grid(cfg)**2, generator=torch.Generator().manual_seed(8)) < 0.5
    with torch.no_grad(): compare_outputs(hf.eval()(x, **kw), ours(x, **kw), ATOL, f"{cfg_id}/{cls_name} saved by us", record=cls_name)

# -- transformers-style model kwargs in from_pretrained ----------------------------------------------------------------

def test_from_pretrained_model_kwargs(reference):
    "transformers: `DeiTModel.from_pretrained(path, add_pooling_layer=False)` / `use_mask_token=True` choose the architecture"
    ref = reference("h32-nh4-p8-img32-gelu", "DeiTModel-masktoken")
    ours = ds.DeiTModel.from_pretrained(ref.path, attn_implementation="eager", add_pooling_layer=True, use_mask_token=True)
    with torch.no_grad(): compare_outputs(ref.plain, ours(ref.x, **ref.kw), ATOL, "use_mask_token=True via from_pretrained")
    ref = reference("h32-nh4-p8-img32-gelu", "DeiTModel-nopooler")
    ours = ds.DeiTModel.from_pretrained(ref.path, add_pooling_layer=False)
    assert ours.pooler is None
    with torch.no_grad(): compare_outputs(ref.plain, ours(ref.x), ATOL, "add_pooling_layer=False via from_pretrained")
