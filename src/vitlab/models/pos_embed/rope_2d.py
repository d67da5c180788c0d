"""rope_2d: axial 2-D rotary embedding of q and k (RoPE-ViT, Heo et al., 2024).

Each head's channels form d/2 pairs; the first d/4 pairs are rotated by the patch's column
index times frequencies theta^(-4k/d), the last d/4 by its row index. A rotation of q_i by a_i
and k_j by a_j leaves q_i·k_j depending on a_i - a_j only: the logits see the 2-D offset. No
parameters; angles are computed for any grid (integer positions, so a larger image extends the
range rather than rescaling it). The class token is not rotated (as in RoPE-ViT): two patches
see only their offset, while the class token sees each patch at its own angle.
"""

from __future__ import annotations

import torch

from .base import PositionalEmbedding, grid_coords, take_patches


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x (..., n, d) by angles given as (n, d/2) cos and sin."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Rope2d(PositionalEmbedding):
    def __init__(self, *args, theta: float = 100.0, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.embed_dim // self.num_heads
        if d % 4:
            raise ValueError(f"rope_2d needs a head dimension divisible by 4, got {d}")
        # buffers so that the angles follow the model's device
        self.register_buffer("freqs", theta ** -(torch.arange(0, d, 4).float() / d),
                             persistent=False)
        # every block rotates alike: compute the construction grid's rotation once
        a = self.angles(self.grid)
        self.register_buffer("cos", a.cos(), persistent=False)
        self.register_buffer("sin", a.sin(), persistent=False)

    def angles(self, grid: tuple[int, int]) -> torch.Tensor:
        """(h*w, d/2) rotation angle of every channel pair of every patch."""
        ys, xs = grid_coords(grid, self.freqs.device)
        freqs = self.freqs.float()
        return torch.cat([xs[:, None] * freqs, ys[:, None] * freqs], dim=1)

    def attention(self, grid, layer, keep=None):
        p = self.num_prefix
        if tuple(grid) == self.grid:
            cos, sin = self.cos, self.sin
        else:
            a = self.angles(grid)
            cos, sin = a.cos(), a.sin()
        if keep is not None:  # each sample's patches: (B, 1, n, d/2), broadcast over the heads
            cos, sin = take_patches(cos, keep)[:, None], take_patches(sin, keep)[:, None]

        def position(q, k):
            c, s = cos.to(q.dtype), sin.to(q.dtype)
            q = torch.cat([q[:, :, :p], rotate(q[:, :, p:], c, s)], dim=2)
            k = torch.cat([k[:, :, :p], rotate(k[:, :, p:], c, s)], dim=2)
            return q, k, None

        return position
