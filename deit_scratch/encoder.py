"""Pre-norm transformer blocks stacked into the DeiT encoder, `DeiTModel`, and loading/saving in transformers' format"""
import inspect, json, re, warnings
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
import torch
from torch import nn
from deit_scratch.config import DeiTConfig
from deit_scratch.tokens import DeiTEmbeddings
from deit_scratch.attention import DeiTAttention, check_attn_implementation
import deit_scratch.sdpa  # registers "sdpa" in ATTENTION_FUNCTIONS

class QuickGELU(nn.Module):
    def forward(self, x): return x * torch.sigmoid(1.702 * x)

ACT2CLS = {"gelu": nn.GELU, "gelu_new": partial(nn.GELU, approximate="tanh"), "gelu_pytorch_tanh": partial(nn.GELU, approximate="tanh"),
           "quick_gelu": QuickGELU, "relu": nn.ReLU, "selu": nn.SELU, "silu": nn.SiLU, "swish": nn.SiLU,
           "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity}

def get_activation(name:str) -> nn.Module:
    "The activation module called `name` in a transformers config"
    if name not in ACT2CLS: raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(ACT2CLS)}")
    return ACT2CLS[name]()

class DeiTMLP(nn.Module):
    "Two linear layers with an activation between them, applied to every token independently"
    def __init__(self, config:DeiTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = get_activation(config.hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
    def forward(self, x): return self.fc2(self.act(self.fc1(x)))

class DeiTLayer(nn.Module):
    "A pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))"
    def __init__(self, config:DeiTConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DeiTAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = DeiTMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
    def forward(self, x, head_mask=None, output_attentions=False) -> tuple:
        a,probs = self.attention(self.layernorm_before(x), head_mask=head_mask, output_attentions=output_attentions)
        x = x + self.dropout(a)
        x = x + self.dropout(self.mlp(self.layernorm_after(x)))
        return x, probs

class DeiTPooler(nn.Module):
    "Dense + activation on the final CLS token"
    def __init__(self, config:DeiTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_output_size)
        self.activation = get_activation(config.pooler_act)
    def forward(self, x): return self.activation(self.dense(x[:, 0]))

class ModelOutput:
    "Base of the output dataclasses: fields by name, by position (None skipped) or as a tuple"
    def to_tuple(self) -> tuple: return tuple(v for v in (getattr(self, f.name) for f in fields(self)) if v is not None)
    def keys(self): return [f.name for f in fields(self) if getattr(self, f.name) is not None]
    def __getitem__(self, k): return getattr(self, k) if isinstance(k, str) else self.to_tuple()[k]
    def __iter__(self): return iter(self.to_tuple())
    def __len__(self): return len(self.to_tuple())

@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state:torch.Tensor=None  # (B, 2+N, C) after the final LayerNorm
    pooler_output:torch.Tensor=None      # (B, pooler_output_size), when the model has a pooler
    hidden_states:tuple=None             # embeddings + each layer's output, before the final LayerNorm
    attentions:tuple=None                # per layer (B, heads, 2+N, 2+N)

def get_head_mask(head_mask, num_layers:int, num_heads:int, dtype) -> list:
    "transformers v4's head mask: (heads,) or (layers, heads) -> one (1, heads, 1, 1) mask per layer"
    if head_mask is None: return [None]*num_layers
    head_mask = torch.as_tensor(head_mask)
    if head_mask.ndim == 1 and head_mask.shape[0] == num_heads: head_mask = head_mask.expand(num_layers, -1)
    if tuple(head_mask.shape) != (num_layers, num_heads):
        raise ValueError(f"head_mask must have shape (num_heads,) = ({num_heads},) or (num_layers, num_heads) = "
                         f"({num_layers}, {num_heads}), got {tuple(head_mask.shape)}")
    return list(head_mask.to(dtype)[:, None, :, None, None])   # each (1, heads, 1, 1)

# -- checkpoints in transformers' on-disk format -------------------------------------------------------
# transformers' files (v4 and v5 alike) use the old module names; ours are v5's in-memory names.
HF_TO_OURS = [(r"encoder\.layer\.", "layers."), (r"attention\.attention\.query", "attention.q_proj"),
              (r"attention\.attention\.key", "attention.k_proj"), (r"attention\.attention\.value", "attention.v_proj"),
              (r"attention\.output\.dense", "attention.o_proj"), (r"intermediate\.dense", "mlp.fc1"), (r"output\.dense", "mlp.fc2")]
OURS_TO_HF = [(r"(^|\.)layers\.", r"\1encoder.layer."), (r"attention\.q_proj", "attention.attention.query"),
              (r"attention\.k_proj", "attention.attention.key"), (r"attention\.v_proj", "attention.attention.value"),
              (r"attention\.o_proj", "attention.output.dense"), (r"mlp\.fc1", "intermediate.dense"), (r"mlp\.fc2", "output.dense")]

def rename_keys(sd:dict, rules:list) -> dict:
    "Apply regex `(pattern, replacement)` rules, in order, to every key of `sd`"
    out = {}
    for k,v in sd.items():
        for pat,rep in rules: k = re.sub(pat, rep, k)
        out[k] = v
    return out

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

def load_weights_file(path) -> dict:
    "A state dict from a `.safetensors` or a `.bin`/`.pth` file (never unpickled beyond `weights_only=True`), or a shard index"
    p = Path(path)
    if p.name.endswith(".index.json"):
        idx = json.loads(p.read_text())["weight_map"]
        sd = {}
        for shard in sorted(set(idx.values())): sd.update(load_weights_file(p.parent/shard))
        return sd
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file
        try: return load_file(str(p))
        except Exception as e: raise ValueError(f"Could not read {p} as safetensors ({e}); the file may be truncated or corrupt") from None
    try: sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e: raise ValueError(f"Could not read {p} as a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(sd, dict): raise ValueError(f"{p} does not hold a state dict")
    return sd

def find_weights(directory) -> Path:
    "The weights file inside a `save_pretrained` directory"
    d = Path(directory)
    for name in WEIGHT_FILES:
        if (d/name).exists(): return d/name
    raise FileNotFoundError(f"No weights found in {d}: expected one of {', '.join(WEIGHT_FILES)}")

class DeiTPreTrainedModel(nn.Module):
    "Base class: config, transformers-style weight init, `from_pretrained` and `save_pretrained`"
    base_model_prefix = "deit"
    optional_keys = (r"^pooler\.", r"^embeddings\.mask_token$", r"^(classifier|cls_classifier|distillation_classifier|decoder)\.")

    def __init__(self, config:DeiTConfig):
        super().__init__()
        if not isinstance(config, DeiTConfig): raise TypeError(f"config must be a DeiTConfig, got {type(config).__name__}")
        check_attn_implementation(config.attn_implementation)
        self.config = config

    @torch.no_grad()
    def _init_weights(self, m:nn.Module):
        "As transformers 5: Linear/Conv normal(0, initializer_range) with zero bias, LayerNorm 1/0, special tokens and positions 0"
        std = self.config.initializer_range
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.weight.normal_(0.0, std)
            if m.bias is not None: m.bias.zero_()
        elif isinstance(m, nn.LayerNorm): m.weight.fill_(1.0); m.bias.zero_()
        elif isinstance(m, DeiTEmbeddings):
            for p in (m.cls_token, m.distillation_token, m.position_embeddings, m.mask_token):
                if p is not None: p.zero_()

    def post_init(self): self.apply(self._init_weights)

    @property
    def dtype(self) -> torch.dtype: return next(self.parameters()).dtype
    def num_parameters(self) -> int: return sum(p.numel() for p in self.parameters())

    def set_attn_implementation(self, name:str):
        "Switch every attention layer to kernel `name` ('eager', 'sdpa', ...)"
        check_attn_implementation(name)
        self.config.attn_implementation = name
        return self

    def _flag(self, value, name):
        return getattr(self.config, name) if value is None else value

    # state dicts in transformers' on-disk names
    def hf_state_dict(self) -> dict:
        "Our state dict under the names transformers writes (`deit.encoder.layer.0.attention.attention.query.weight`, ...)"
        return rename_keys(self.state_dict(), OURS_TO_HF)

    def _optional(self, key:str) -> bool:
        "Keys a checkpoint may lack or carry extra: pooler, mask token, task heads (initialised anew / ignored, as transformers does)"
        pre = self.base_model_prefix + "."
        return any(re.search(p, key[len(pre):] if key.startswith(pre) else key) for p in self.optional_keys)

    def _match_prefix(self, sd:dict) -> dict:
        "Give a bare-model checkpoint the `deit.` prefix of a task model, or take the trunk out of a task checkpoint"
        pre = self.base_model_prefix + "."
        has_prefix = any(k.startswith(pre) for k in sd)
        if hasattr(self, self.base_model_prefix) and not has_prefix: return {pre + k: v for k,v in sd.items()}
        if not hasattr(self, self.base_model_prefix) and has_prefix:
            return {(k[len(pre):] if k.startswith(pre) else k): v for k,v in sd.items()}
        return sd

    def load_hf_state_dict(self, sd:dict,                # tensors under transformers' names (or ours)
                           strict:bool=True,             # raise on missing/unexpected/mismatched keys
                           reinit_heads:bool=False):     # a head of another shape is initialised anew instead of an error
        "Load a state dict in transformers' on-disk names, with or without the `deit.` prefix; returns a loading report"
        sd = self._match_prefix(rename_keys(sd, HF_TO_OURS))
        own = self.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        mismatched = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own if k in sd and sd[k].shape != own[k].shape]
        is_head = lambda k: re.search(r"^(classifier|cls_classifier|distillation_classifier|decoder)\.", k)
        reinit = [k for k,_,_ in mismatched if reinit_heads and is_head(k)]
        mismatched = [m for m in mismatched if m[0] not in reinit]
        report = dict(missing_keys=missing, unexpected_keys=unexpected, mismatched_keys=mismatched, reinitialized_keys=reinit)
        bad_missing,bad_unexpected = [k for k in missing if not self._optional(k)],[k for k in unexpected if not self._optional(k)]
        if strict and (bad_missing or bad_unexpected or mismatched):
            msg = [f"The checkpoint does not fit {type(self).__name__}:"]
            if bad_missing: msg.append(f"  missing keys: {bad_missing}")
            if bad_unexpected: msg.append(f"  unexpected keys: {bad_unexpected}")
            if mismatched: msg.append("  shape mismatches: " + ", ".join(f"{k} is {a} in the checkpoint, {b} in the model" for k,a,b in mismatched))
            msg.append("Check that the config matches the checkpoint, or pass strict=False to load what fits.")
            raise ValueError("\n".join(msg))
        with torch.no_grad():
            for k,v in own.items():
                if k in sd and k not in reinit and tuple(sd[k].shape) == tuple(v.shape): v.copy_(sd[k])
        new = [k for k in missing if self._optional(k)] + reinit
        if new: warnings.warn(f"Newly initialised, not in the checkpoint: {new}. Train them before use.", stacklevel=3)
        return report

    @classmethod
    def from_pretrained(cls, path,                      # directory written by `save_pretrained` (ours or transformers'), or a weights file
                        config:DeiTConfig|None=None,    # use this config instead of the directory's config.json
                        attn_implementation:str|None=None, # "eager" or "sdpa"
                        dtype:torch.dtype|str|None=None,   # e.g. torch.bfloat16; "auto": the dtype in config.json; None: float32
                        strict:bool=True,               # raise on missing/unexpected/mismatched keys
                        output_loading_info:bool=False, # also return the loading report
                        **config_overrides):            # fields to change in the config, e.g. num_labels=10
        "Build the model from a checkpoint directory in transformers' format"
        p = Path(path)
        if not p.exists(): raise FileNotFoundError(f"{path} does not exist")
        if config is None:
            if not p.is_dir(): raise ValueError(f"{path} is a file: pass config= to say what model it holds")
            config = DeiTConfig.from_pretrained(p)
        d = config.to_dict()
        known = set(inspect.signature(DeiTConfig.__init__).parameters) - {"self", "kwargs"}
        unknown = set(config_overrides) - known
        if unknown: raise ValueError(f"Unknown config fields {sorted(unknown)}; known fields: {sorted(known)}")
        new_head = "num_labels" in config_overrides and config_overrides["num_labels"] != config.num_labels
        if "num_labels" in config_overrides and "id2label" not in config_overrides: d.pop("id2label"); d.pop("label2id")
        if attn_implementation is not None: config_overrides["attn_implementation"] = attn_implementation
        config = DeiTConfig.from_dict(d, **config_overrides)
        model = cls(config)
        sd = load_weights_file(find_weights(p) if p.is_dir() else p)
        report = model.load_hf_state_dict(sd, strict=strict, reinit_heads=new_head)
        if dtype == "auto": dtype = getattr(torch, str(config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"))
        if dtype is not None: model.to(dtype)
        model.eval()
        return (model, report) if output_loading_info else model

    def save_pretrained(self, save_directory, safe_serialization:bool=True):
        "Write config.json and model.safetensors (or pytorch_model.bin) that transformers can load"
        d = Path(save_directory); d.mkdir(parents=True, exist_ok=True)
        cfg = DeiTConfig.from_dict(self.config.to_dict())
        cfg.extra.update(architectures=[type(self).__name__], dtype=str(self.dtype).replace("torch.", ""))
        cfg.save_pretrained(d)
        sd = {k:v.detach().contiguous() for k,v in self.hf_state_dict().items()}
        if safe_serialization:
            from safetensors.torch import save_file
            save_file(sd, str(d/"model.safetensors"), metadata={"format": "pt"})
        else: torch.save(sd, d/"pytorch_model.bin")

class DeiTModel(DeiTPreTrainedModel):
    "The bare DeiT encoder: embeddings, `num_hidden_layers` blocks, a final LayerNorm and an optional pooler"
    def __init__(self, config:DeiTConfig, add_pooling_layer:bool=True, use_mask_token:bool=False):
        super().__init__(config)
        self.embeddings = DeiTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([DeiTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = DeiTPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(self, pixel_values:torch.Tensor,                  # (B, num_channels, H, W) float
                bool_masked_pos:torch.Tensor|None=None,           # (B, N) bool, True = replace the patch by the mask token
                head_mask:torch.Tensor|None=None,                 # (heads,) or (layers, heads): 1 keeps a head, 0 silences it
                output_attentions:bool|None=None,                 # return every layer's attention probabilities
                output_hidden_states:bool|None=None,              # return the embeddings and every layer's output
                interpolate_pos_encoding:bool=False,              # resize the position table to the input size
                return_dict:bool|None=None):                      # False: return a tuple
        output_attentions = self._flag(output_attentions, "output_attentions")
        output_hidden_states = self._flag(output_hidden_states, "output_hidden_states")
        head_masks = get_head_mask(head_mask, len(self.layers), self.config.num_attention_heads, self.dtype)
        x = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer,hm in zip(self.layers, head_masks):
            x,probs = layer(x, head_mask=hm, output_attentions=output_attentions)
            if output_hidden_states: hidden_states += (x,)
            if output_attentions: attentions += (probs,)
        seq = self.layernorm(x)
        pooled = self.pooler(seq) if self.pooler is not None else None
        out = BaseModelOutputWithPooling(seq, pooled, hidden_states, attentions)
        return out if self._flag(return_dict, "return_dict") else out.to_tuple()
