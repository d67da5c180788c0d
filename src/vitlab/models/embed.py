"""Patch embeddings: turn an image into tokens (B, N, D) and report their grid (h, w).

Every embedding takes the same constructor arguments (img_size, patch_size, in_chans,
embed_dim) and exposes `grid` for the configured image size, so the model, the class token and
every positional variant work the same for pure and hybrid embeddings.
"""

from __future__ import annotations

import torch
from torch import nn


def to_2tuple(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C): each row one flattened patch, in raster order.

    The flattening order is (C, P, P), which is the order of a Conv2d weight, so a strided
    convolution with kernel = stride = P is exactly the linear map `e_n = W x_n + b`.
    """
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // P) * (W // P), C * P * P)


class PatchEmbed(nn.Module):
    """Linear projection of non-overlapping P×P×C patches (computed as a strided convolution)."""

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        H, W = to_2tuple(img_size)
        if H % patch_size or W % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide the image size {H}x{W}")
        self.patch_size = patch_size
        self.grid = (H // patch_size, W // patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # (B, D, h, w)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid
