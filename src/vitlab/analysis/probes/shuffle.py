"""Patch-shuffle probe: the image cut into a g x g grid of cells whose places are permuted.
g = 1 is the image itself. A model that reads content without positions keeps its accuracy;
one that relies on where things are (positions, an MLP's pixels) loses it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .common import accuracy_under


def shuffle_patches(x: torch.Tensor, grid: int, perm: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with its grid x grid cells reordered: cell i (raster order) of the output is
    cell perm[i] of the input. H and W must be divisible by grid."""
    B, C, H, W = x.shape
    if H % grid or W % grid:
        raise ValueError(f"a {grid}x{grid} grid does not divide a {H}x{W} image")
    h, w = H // grid, W // grid
    cells = x.reshape(B, C, grid, h, grid, w).permute(0, 2, 4, 1, 3, 5).reshape(B, grid * grid, C, h, w)
    cells = cells[:, perm.to(x.device)]
    return cells.reshape(B, grid, grid, C, h, w).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def shuffle_accuracy(model: nn.Module, batches: Iterable, grids: Sequence[int] = (1, 2, 4, 8),
                     seed: int = 0) -> dict[int, float]:
    """{g: accuracy with the cells of a g x g grid permuted}, one fixed random permutation per g
    (from `seed`, the same for every image and every model, so variants compare alike)."""
    out = {}
    for g in grids:
        perm = torch.randperm(g * g, generator=torch.Generator().manual_seed(seed + g))
        out[int(g)] = accuracy_under(model, batches, lambda x, g=g, p=perm: shuffle_patches(x, g, p))
    return out
