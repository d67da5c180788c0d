"""learned_1d: one learned vector per token position in raster order (the ViT paper's default).

The class token has its own learned position (as in the paper and timm). At another image size
the patch part of the table is resampled as a 2-D grid (paper §3.2), in forward and on load.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AbsolutePositionalEmbedding, resample_grid_table

__all__ = ["Learned1d", "resample_grid_table"]


class Learned1d(AbsolutePositionalEmbedding):
    def __init__(self, *args, init_std: float = 0.02, **kwargs):
        super().__init__(*args, **kwargs)
        n = self.num_prefix + self.grid[0] * self.grid[1]
        self.weight = nn.Parameter(torch.empty(self.num_tables, n, self.embed_dim))
        nn.init.trunc_normal_(self.weight, std=init_std)

    def table(self, grid, index):
        t = self.weight[index]
        if tuple(grid) == self.grid:
            return t
        p = self.num_prefix
        return torch.cat([t[:p], resample_grid_table(t[p:], self.grid, grid)], dim=0)

    def resample_loaded(self, name, value):
        # the checkpoint's grid is not recorded in a raster table: assume it was square
        p = self.num_prefix
        n_old = value.shape[1] - p
        side = int(round(n_old**0.5))
        if value.shape[-1] != self.embed_dim or side * side != n_old:
            return value  # let load_state_dict report the mismatch
        return torch.cat([value[:, :p], resample_grid_table(value[:, p:], (side, side), self.grid)],
                         dim=1)
