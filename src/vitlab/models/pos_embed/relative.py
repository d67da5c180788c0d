"""relative: the ViT paper's relative attention (Shaw et al., 2018, keys only).

Every query-key offset has a learned embedding r (head_dim entries, shared by the heads as in
Shaw et al.) that acts as an extra key against the query: logit_ij = (q_i·k_j + q_i·r_ij)/sqrt(d).
F.scaled_dot_product_attention scales q·k by 1/sqrt(d) itself but adds the bias as it is, so
the bias handed over is q_i·r_ij / sqrt(d): both terms are scaled alike, as in Shaw et al.
Offsets are 2-D (row, column) by default; `offsets: 1d` uses the raster-order difference, the
paper's 1-D relative attention. The class token has no offset: its bias row and column are
zero. One table serves every block; at another grid it is interpolated (RelativeTable, base.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import RelativeTable


class Relative(RelativeTable):
    def channels(self):
        return self.embed_dim // self.num_heads

    def attention(self, grid):
        p = self.num_prefix
        r = self.pair_table(grid)  # (n, n, d) for the n patches, gathered once per forward

        def position(q, k):
            bias = torch.einsum("bhid,ijd->bhij", q[:, :, p:], r.to(q.dtype))
            return q, k, F.pad(bias * q.shape[-1] ** -0.5, (p, 0, p, 0))

        return position
