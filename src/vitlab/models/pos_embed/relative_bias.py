"""relative_bias: one learned scalar per head and 2-D offset, added to the logits (Swin, BEiT).

The bias of the pair (query i, key j) is table[row_i - row_j, col_i - col_j, head]. The class
token has no offset: its row and column of the bias are zero, so its attention is content only.
One table is shared by all blocks (BEiT's shared relative position bias); at another grid it is
interpolated to the new offset range (see RelativeTable in base.py). `offsets: 1d` indexes the
table by the raster-order difference instead.
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import RelativeTable


class RelativeBias(RelativeTable):
    def channels(self):
        return self.num_heads

    def attention(self, grid):
        p = self.num_prefix
        bias = F.pad(self.pair_table(grid).permute(2, 0, 1), (p, 0, p, 0))  # (H, N, N)
        return lambda q, k: (q, k, bias)
