"""Cut an image into patches and project each one to a token vector"""
import torch
from torch import nn
from deit_scratch.config import DeiTConfig, to_pair

def check_pixel_values(pixel_values, num_channels:int, patch_size:tuple):
    "Raise a clear error unless `pixel_values` is a non-empty float (B, num_channels, H, W) batch divisible into patches"
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor of shape (batch, channels, height, width), got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape {tuple(pixel_values.shape)}")
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be a floating point tensor, got dtype {pixel_values.dtype}; "
                        "convert images with an image processor (rescale and normalize) first")
    B,C,H,W = pixel_values.shape
    if B == 0: raise ValueError(f"pixel_values is an empty batch (shape {tuple(pixel_values.shape)})")
    if C != num_channels:
        raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the configuration."
                         f" Expected {num_channels} but got {C}.")
    ph,pw = patch_size
    if H % ph or W % pw:
        raise ValueError(f"Input image size ({H}*{W}) is not divisible by the patch size ({ph}*{pw})")

class DeiTPatchEmbeddings(nn.Module):
    "Turn (B, C, H, W) pixels into (B, N, hidden_size) patch tokens with one strided convolution"
    def __init__(self, config:DeiTConfig):
        super().__init__()
        self.image_size,self.patch_size = to_pair(config.image_size),to_pair(config.patch_size)
        self.num_channels = config.num_channels
        self.grid_size = (self.image_size[0]//self.patch_size[0], self.image_size[1]//self.patch_size[1])
        self.num_patches = self.grid_size[0]*self.grid_size[1]
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, pixel_values:torch.Tensor) -> torch.Tensor:
        check_pixel_values(pixel_values, self.num_channels, self.patch_size)
        x = self.projection(pixel_values.to(self.projection.weight.dtype))  # (B, C, H/p, W/p)
        return x.flatten(2).transpose(1, 2)                                # (B, N, C)
