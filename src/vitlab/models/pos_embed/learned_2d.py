"""learned_2d: separate learned row and column tables, concatenated per patch (ViT paper).

The patch at (i, j) gets [row_i, col_j]: row_i has D/2 entries (D//2 for odd D) and col_j the
rest. The class token gets its own learned D-vector, as in learned_1d. At another image size the
row and column tables are each interpolated along their axis, in forward and on load.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import AbsolutePositionalEmbedding, resample_grid_table


class Learned2d(AbsolutePositionalEmbedding):
    def __init__(self, *args, init_std: float = 0.02, **kwargs):
        super().__init__(*args, **kwargs)
        (h, w), half, n = self.grid, self.embed_dim // 2, self.num_tables
        self.row = nn.Parameter(torch.empty(n, h, half))
        self.col = nn.Parameter(torch.empty(n, w, self.embed_dim - half))
        self.cls = nn.Parameter(torch.empty(n, self.num_prefix, self.embed_dim)) if (
            self.num_prefix) else None
        for p in self.parameters():
            nn.init.trunc_normal_(p, std=init_std)

    def table(self, grid, index):
        h, w = grid
        # a row table is an (h, 1) grid and a column table a (1, w) grid
        row = resample_grid_table(self.row[index], (self.grid[0], 1), (h, 1))
        col = resample_grid_table(self.col[index], (1, self.grid[1]), (1, w))
        patches = torch.cat([row[:, None].expand(h, w, -1), col[None].expand(h, w, -1)], dim=-1)
        patches = patches.flatten(0, 1)
        return patches if self.cls is None else torch.cat([self.cls[index], patches], dim=0)

    def resample_loaded(self, name, value):
        if name == "row":
            return resample_grid_table(value, (value.shape[1], 1), (self.grid[0], 1))
        if name == "col":
            return resample_grid_table(value, (1, value.shape[1]), (1, self.grid[1]))
        return value
