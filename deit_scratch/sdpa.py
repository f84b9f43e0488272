"""The same attention through PyTorch's fused `scaled_dot_product_attention`"""
import torch
import torch.nn.functional as F
from deit_scratch.attention import ATTENTION_FUNCTIONS

def sdpa_attention(query:torch.Tensor,      # (B, H, N, D)
                   key:torch.Tensor,        # (B, H, N, D)
                   value:torch.Tensor,      # (B, H, N, D)
                   scale:float|None=None,   # None: D ** -0.5
                   dropout_p:float=0.0,     # dropout on the attention probabilities (pass 0 in eval)
                   head_mask=None,          # not supported by fused kernels: must be None
                  ) -> tuple:
    "Attention with `F.scaled_dot_product_attention`; returns (output (B, H, N, D), None): the probabilities are never stored"
    if head_mask is not None: raise ValueError("sdpa_attention cannot apply a head_mask; use eager_attention")
    return F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p, scale=scale), None

ATTENTION_FUNCTIONS["sdpa"] = sdpa_attention
