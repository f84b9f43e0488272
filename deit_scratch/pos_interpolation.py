"""Stretch the learned position grid to a new image size, exactly as transformers does"""
import math, torch
import torch.nn.functional as F

def interpolate_pos_embed(pos_embed:torch.Tensor,  # (1, num_prefix_tokens + gh*gw, C) position table
                          new_grid:tuple,            # target grid (rows, cols) of patches
                          old_grid:tuple|None=None,  # source grid; None: a square grid is assumed
                          num_prefix_tokens:int=2,   # rows kept untouched (CLS, DIST)
                          antialias:bool=False):     # timm resamples with antialias; transformers does not
    "Resize the patch part of a position table bicubically (align_corners=False); prefix rows are kept as they are"
    prefix,grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    n,C = grid.shape[1],grid.shape[2]
    if old_grid is None:
        s = int(math.sqrt(n))
        if s*s != n: raise ValueError(f"Cannot infer a square grid from {n} position embeddings; pass old_grid=(rows, cols)")
        old_grid = (s, s)
    if old_grid[0]*old_grid[1] != n: raise ValueError(f"old_grid {tuple(old_grid)} does not hold {n} position embeddings")
    grid = grid.reshape(1, *old_grid, C).permute(0, 3, 1, 2)                    # (1, C, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, C)                           # (1, gh'*gw', C)
    return torch.cat([prefix, grid], dim=1)
