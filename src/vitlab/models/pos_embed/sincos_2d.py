"""sincos_2d: fixed 2-D sine-cosine table (MAE; "Better plain ViT baselines").

A quarter of the channels each holds sin and cos of the column index, then of the row index, at
frequencies 1 / temperature^(k / (D/4)), exactly as MAE's get_2d_sincos_pos_embed. The table is
a buffer, not a parameter, and is computed for any grid. The class token gets no position (MAE
adds a zero vector). With `where=every_layer` every block gets the same fixed table, so it is the
same network as `every_layer_shared`.
"""

from __future__ import annotations

import torch

from .base import AbsolutePositionalEmbedding, grid_coords


def sincos_2d_table(grid: tuple[int, int], dim: int, temperature: float = 10000.0,
                    device=None) -> torch.Tensor:
    """(h*w, dim) table in raster order: [sin x, cos x, sin y, cos y] per patch."""
    if dim % 4:
        raise ValueError(f"sincos_2d needs embed_dim divisible by 4, got {dim}")
    ys, xs = grid_coords(grid, device)
    omega = temperature ** -(torch.arange(dim // 4, device=device).float() / (dim // 4))
    x, y = xs[:, None] * omega, ys[:, None] * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)


class SinCos2d(AbsolutePositionalEmbedding):
    def __init__(self, *args, temperature: float = 10000.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        # not persistent: nothing to store in checkpoints, so they load at any resolution
        self.register_buffer("pos", sincos_2d_table(self.grid, self.embed_dim, temperature),
                             persistent=False)

    def table(self, grid, index):
        if tuple(grid) == self.grid:
            return self.pos
        return sincos_2d_table(grid, self.embed_dim, self.temperature, self.pos.device)
