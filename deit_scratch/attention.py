"""Multi-head self-attention, written out step by step (the "eager" kernel)"""
import torch
import torch.nn.functional as F
from torch import nn
from deit_scratch.config import DeiTConfig

def eager_attention(query:torch.Tensor,          # (B, H, N, D)
                    key:torch.Tensor,            # (B, H, N, D)
                    value:torch.Tensor,          # (B, H, N, D)
                    scale:float|None=None,       # multiplies the scores; None: D ** -0.5
                    dropout_p:float=0.0,         # dropout on the attention probabilities (pass 0 in eval)
                    head_mask:torch.Tensor|None=None, # (1, H, 1, 1) or broadcastable: 1 keeps a head, 0 silences it
                   ) -> tuple:
    "softmax(Q Kᵀ · scale) V, with the softmax in float32; returns (output (B, H, N, D), probabilities (B, H, N, N))"
    if scale is None: scale = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale                 # (B, H, N, N)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout_p > 0: probs = F.dropout(probs, p=dropout_p)
    if head_mask is not None: probs = probs * head_mask
    return torch.matmul(probs, value), probs                                    # (B, H, N, D), (B, H, N, N)

# name -> function(query, key, value, scale, dropout_p, head_mask) -> (output, probabilities or None)
ATTENTION_FUNCTIONS = {"eager": eager_attention}

def check_attn_implementation(name:str):
    "Raise a clear error unless `name` is a registered attention implementation"
    if name not in ATTENTION_FUNCTIONS:
        raise ValueError(f"Unknown attn_implementation {name!r}; choose one of {sorted(ATTENTION_FUNCTIONS)}")

class DeiTAttention(nn.Module):
    "Multi-head self-attention: project to queries, keys and values, attend per head, merge heads, project out"
    def __init__(self, config:DeiTConfig):
        super().__init__()
        C,nh = config.hidden_size,config.num_attention_heads
        if C % nh: raise ValueError(f"The hidden size ({C}) is not a multiple of the number of attention heads ({nh})")
        self.config = config
        self.num_heads,self.head_dim = nh,C//nh
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(C, C, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, C, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, C, bias=config.qkv_bias)
        self.o_proj = nn.Linear(C, C)

    def forward(self, x:torch.Tensor, head_mask:torch.Tensor|None=None, output_attentions:bool=False) -> tuple:
        B,N,C = x.shape
        q = self.q_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        k = self.k_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        v = self.v_proj(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, D)
        impl = self.config.attn_implementation
        check_attn_implementation(impl)
        # fused kernels never materialise the probabilities: compute this layer eagerly when they are needed
        if output_attentions or head_mask is not None: impl = "eager"
        dropout_p = self.config.attention_probs_dropout_prob if self.training else 0.0
        out,probs = ATTENTION_FUNCTIONS[impl](q, k, v, scale=self.scale, dropout_p=dropout_p, head_mask=head_mask)
        out = out.transpose(1, 2).reshape(B, N, C)                                       # (B, N, H*D)
        return self.o_proj(out), probs
