"""relative: the ViT paper's relative attention (Shaw et al., 2018, keys only).

Every query-key offset has a learned embedding a (head_dim entries, shared by the heads as in
Shaw et al.) that acts as an extra key against the query: logit_ij = (q_i·k_j + q_i·a_ij)/sqrt(d).
F.scaled_dot_product_attention scales q·k by 1/sqrt(d) itself but adds the bias as it is, so
the bias handed over is q_i·a_ij / sqrt(d): both terms are scaled alike, as in Shaw et al.
Offsets are 2-D (row, column) by default; `offsets: 1d` uses the raster-order difference, the
paper's 1-D relative attention. Each block learns its own table (Shaw et al. learn one per
layer); `shared: true` uses one for all. The class token has no offset: its bias row and column
are zero, or with `cls_entries: true` three learned vectors (class to patch, patch to class,
class to class; BEiT's scheme with vectors for scalars). At another grid the tables are
interpolated (RelativeTable, base.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import RelativeTable


class Relative(RelativeTable):
    def channels(self):
        return self.embed_dim // self.num_heads

    def attention(self, grid, layer, keep=None):
        # zero class-token entries add nothing: leave them out of the product (n² not N²)
        p = 0 if self.cls is not None else self.num_prefix
        a = self.pair_table(grid, layer, keep)[..., p:, p:, :]  # (N, N, d) or (n, n, d); (B, ...) with keep
        pairs = "bhid,ijd->bhij" if keep is None else "bhid,bijd->bhij"

        def position(q, k):
            bias = torch.einsum(pairs, q[:, :, p:], a.to(q.dtype))
            return q, k, F.pad(bias * q.shape[-1] ** -0.5, (p, 0, p, 0))

        return position
