"""learned_1d: one learned vector per token position in raster order (the ViT paper's default).

The class token has its own learned position (as in the paper and timm). At another image size
the patch part of the table is resampled as a 2-D grid (paper §3.2), in forward and on load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AbsolutePositionalEmbedding


def resample_grid_table(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]):
    """Bicubic 2-D interpolation of a (..., h*w, D) table laid out in raster order."""
    if tuple(old) == tuple(new):
        return table
    *lead, n, d = table.shape
    x = table.reshape(-1, old[0], old[1], d).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(new), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(*lead, new[0] * new[1], d).to(table.dtype)


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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint trained at another resolution: resample its table to this grid
        key = prefix + "weight"
        w = state_dict.get(key)
        if w is not None and w.shape != self.weight.shape and w.shape[-1] == self.embed_dim:
            p = self.num_prefix
            n_old = w.shape[1] - p
            side = int(round(n_old**0.5))
            if side * side == n_old:
                state_dict[key] = torch.cat(
                    [w[:, :p], resample_grid_table(w[:, p:], (side, side), self.grid)], dim=1
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
