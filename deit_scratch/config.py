"""The DeiT configuration: every hyper-parameter of the model in one object, compatible with transformers' `config.json`"""
import copy, json
from pathlib import Path

def to_pair(x) -> tuple:
    "`x` as a `(height, width)` pair: an int `n` becomes `(n, n)`"
    if isinstance(x, int): return (x, x)
    x = tuple(x)
    if len(x) != 2 or not all(isinstance(v, int) for v in x): raise ValueError(f"Expected an int or a pair of ints, got {x!r}")
    return x

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")

class DeiTConfig:
    "Configuration of a DeiT model; accepts (and writes) every field of transformers' `DeiTConfig`"
    model_type = "deit"
    def __init__(self,
                 hidden_size:int=768,                 # width of every token vector (C)
                 num_hidden_layers:int=12,            # number of transformer blocks
                 num_attention_heads:int=12,          # heads per attention layer; must divide `hidden_size`
                 intermediate_size:int=3072,          # hidden width of the MLP (usually 4 * hidden_size)
                 hidden_act:str="gelu",               # MLP activation: "gelu", "relu", "selu", "gelu_new", ...
                 hidden_dropout_prob:float=0.0,       # dropout on embeddings and on each residual branch
                 attention_probs_dropout_prob:float=0.0, # dropout on the attention probabilities
                 initializer_range:float=0.02,        # std of the normal init of Linear/Conv weights
                 layer_norm_eps:float=1e-12,          # LayerNorm eps (transformers: 1e-12; timm/FB trained with 1e-6)
                 image_size:int|tuple=224,            # input resolution the position table is built for
                 patch_size:int|tuple=16,             # side of a square patch (pixels)
                 num_channels:int=3,                  # input channels
                 qkv_bias:bool=True,                  # bias in the query/key/value projections
                 encoder_stride:int=16,               # upsampling factor of the masked-image-modeling decoder
                 pooler_output_size:int|None=None,    # pooler width (None: hidden_size)
                 pooler_act:str="tanh",               # pooler activation
                 num_labels:int|None=None,            # number of classes (default 2, or len(id2label))
                 id2label:dict|None=None,             # class index -> name
                 label2id:dict|None=None,             # class name -> index
                 problem_type:str|None=None,          # "regression", "single_label_classification" or "multi_label_classification"
                 attn_implementation:str="sdpa",      # attention kernel: "eager" or "sdpa"
                 output_attentions:bool=False,        # default for `forward(output_attentions=...)`
                 output_hidden_states:bool=False,     # default for `forward(output_hidden_states=...)`
                 return_dict:bool=True,               # default for `forward(return_dict=...)`
                 **kwargs):                           # other keys found in a config.json (kept, written back)
        self.hidden_size,self.num_hidden_layers,self.num_attention_heads = hidden_size,num_hidden_layers,num_attention_heads
        self.intermediate_size,self.hidden_act = intermediate_size,hidden_act
        self.hidden_dropout_prob,self.attention_probs_dropout_prob = hidden_dropout_prob,attention_probs_dropout_prob
        self.initializer_range,self.layer_norm_eps = initializer_range,layer_norm_eps
        self.image_size,self.patch_size,self.num_channels = image_size,patch_size,num_channels
        self.qkv_bias,self.encoder_stride = qkv_bias,encoder_stride
        self.pooler_output_size = pooler_output_size or hidden_size
        self.pooler_act = pooler_act
        self.problem_type = problem_type
        self.attn_implementation = attn_implementation
        self.output_attentions,self.output_hidden_states,self.return_dict = output_attentions,output_hidden_states,return_dict
        kwargs.pop("_attn_implementation", None); kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        self.extra = {k:v for k,v in kwargs.items() if not k.startswith("_")}
        self._set_labels(num_labels, id2label, label2id)
        self.validate()

    def _set_labels(self, num_labels, id2label, label2id):
        if id2label is not None:
            id2label = {int(k):v for k,v in id2label.items()}
            if num_labels is not None and num_labels != len(id2label):
                raise ValueError(f"num_labels={num_labels} disagrees with id2label, which has {len(id2label)} entries")
        else:
            id2label = {i:f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
        self.id2label = id2label
        self.label2id = {k:int(v) for k,v in label2id.items()} if label2id is not None else {v:k for k,v in id2label.items()}

    @property
    def num_labels(self) -> int:
        "Number of classes (the length of `id2label`)"
        return len(self.id2label)
    @num_labels.setter
    def num_labels(self, n:int): self._set_labels(n, None, None)

    def validate(self):
        "Raise a `ValueError` naming the first inconsistent field"
        for name in ("hidden_size","num_hidden_layers","num_attention_heads","intermediate_size","num_channels","encoder_stride"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0: raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"The hidden size ({self.hidden_size}) is not a multiple of the number of attention heads "
                             f"({self.num_attention_heads}): each head gets hidden_size / num_attention_heads channels.")
        (ih,iw),(ph,pw) = to_pair(self.image_size),to_pair(self.patch_size)
        if ih % ph or iw % pw:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        for name in ("hidden_dropout_prob","attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) <= 1: raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.problem_type not in (None, *PROBLEM_TYPES):
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}")

    @property
    def grid_size(self) -> tuple:
        "Patches along (height, width) at `image_size`"
        (ih,iw),(ph,pw) = to_pair(self.image_size),to_pair(self.patch_size)
        return (ih//ph, iw//pw)

    FIELDS = ("hidden_size num_hidden_layers num_attention_heads intermediate_size hidden_act hidden_dropout_prob "
              "attention_probs_dropout_prob initializer_range layer_norm_eps image_size patch_size num_channels qkv_bias "
              "encoder_stride pooler_output_size pooler_act problem_type").split()

    def to_dict(self) -> dict:
        "The fields transformers writes to config.json (plus any unknown keys that were read)"
        d = {**copy.deepcopy(self.extra), "model_type": self.model_type}
        d.update({k:getattr(self, k) for k in self.FIELDS})
        d["id2label"] = {str(k):v for k,v in self.id2label.items()}
        d["label2id"] = dict(self.label2id)
        for k in ("output_attentions","output_hidden_states"):
            if getattr(self, k): d[k] = True
        if not self.return_dict: d["return_dict"] = False
        if isinstance(d["image_size"], tuple): d["image_size"] = list(d["image_size"])
        if isinstance(d["patch_size"], tuple): d["patch_size"] = list(d["patch_size"])
        return dict(sorted(d.items()))

    @classmethod
    def from_dict(cls, d:dict, **overrides):
        "A config from a dict such as a parsed config.json; `overrides` win"
        d = {**d, **overrides}
        mt = d.get("model_type", cls.model_type)
        if mt != cls.model_type:
            raise ValueError(f"This is a config for model_type {mt!r}, not {cls.model_type!r}")
        return cls(**d)

    def to_json_string(self) -> str: return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory):
        "Write `config.json` into `save_directory` (created if needed)"
        p = Path(save_directory); p.mkdir(parents=True, exist_ok=True)
        (p/"config.json").write_text(self.to_json_string())

    @classmethod
    def from_pretrained(cls, path, **overrides):
        "Read a `config.json`, or the one inside directory `path`"
        p = Path(path)
        if p.is_dir(): p = p/"config.json"
        if not p.exists(): raise FileNotFoundError(f"No config.json found at {path}")
        try: d = json.loads(p.read_text())
        except json.JSONDecodeError as e: raise ValueError(f"{p} is not valid JSON: {e}") from None
        return cls.from_dict(d, **overrides)

    @classmethod
    def from_preset(cls, name:str, **overrides):
        "A config for a released size, e.g. `DeiTConfig.from_preset('deit_tiny_distilled_patch16_224')`"
        key = name.split("/")[-1].replace("-", "_")
        if key not in PRESETS: raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[key], **overrides})

    def __eq__(self, other): return isinstance(other, DeiTConfig) and self.to_dict() == other.to_dict()
    def __repr__(self): return f"{type(self).__name__} {self.to_json_string()}"

def _preset(hidden_size, heads, image_size=224):
    return dict(hidden_size=hidden_size, num_hidden_layers=12, num_attention_heads=heads, intermediate_size=4*hidden_size,
                image_size=image_size, patch_size=16, num_labels=1000)

PRESETS = {
    "deit_tiny_distilled_patch16_224":  _preset(192, 3),
    "deit_small_distilled_patch16_224": _preset(384, 6),
    "deit_base_distilled_patch16_224":  _preset(768, 12),
    "deit_base_distilled_patch16_384":  _preset(768, 12, 384),
}
