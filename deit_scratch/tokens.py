"""Class and distillation tokens, position embeddings and the mask token: from patches to the transformer's input sequence"""
import torch
from torch import nn
from deit_scratch.config import DeiTConfig
from deit_scratch.patch_embedding import DeiTPatchEmbeddings
from deit_scratch.pos_interpolation import interpolate_pos_embed

class DeiTEmbeddings(nn.Module):
    "Patch tokens, optionally masked, prefixed by [CLS, DIST], plus learned position embeddings"
    def __init__(self, config:DeiTConfig, use_mask_token:bool=False):
        super().__init__()
        C = config.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, C))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, C)) if use_mask_token else None
        self.patch_embeddings = DeiTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, self.patch_embeddings.num_patches + 2, C))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_embeddings_for(self, height:int, width:int, interpolate_pos_encoding:bool=False) -> torch.Tensor:
        "The (1, 2 + N, C) position table for an image of `height` x `width` pixels"
        pe = self.patch_embeddings
        if not interpolate_pos_encoding:
            if (height, width) != pe.image_size:
                raise ValueError(f"Input image size ({height}*{width}) doesn't match model ({pe.image_size[0]}*{pe.image_size[1]})."
                                 " Pass interpolate_pos_encoding=True to resize the position embeddings.")
            return self.position_embeddings
        new_grid = (height // pe.patch_size[0], width // pe.patch_size[1])
        # transformers returns the table untouched only when the patch count matches and the image is square
        if not torch.jit.is_tracing() and new_grid[0]*new_grid[1] == pe.num_patches and height == width:
            return self.position_embeddings
        return interpolate_pos_embed(self.position_embeddings, new_grid)

    def forward(self, pixel_values:torch.Tensor, bool_masked_pos:torch.Tensor|None=None,
                interpolate_pos_encoding:bool=False) -> torch.Tensor:
        H,W = pixel_values.shape[-2:]
        x = self.patch_embeddings(pixel_values)                         # (B, N, C)
        B,N,_ = x.shape
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos was given but this model has no mask token; "
                                 "use DeiTForMaskedImageModeling or DeiTModel(config, use_mask_token=True)")
            if tuple(bool_masked_pos.shape) != (B, N):
                raise ValueError(f"bool_masked_pos must have shape (batch_size, num_patches) = {(B, N)}, got {tuple(bool_masked_pos.shape)}")
            m = bool_masked_pos.unsqueeze(-1).type_as(x)                    # (B, N, 1): 1 where masked
            x = x * (1.0 - m) + self.mask_token.expand(B, N, -1) * m
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.distillation_token.expand(B, -1, -1), x], dim=1)  # (B, 2+N, C)
        x = x + self.position_embeddings_for(H, W, interpolate_pos_encoding)
        return self.dropout(x)
