"""relative_bias: one learned scalar per head and offset, added to the logits (Swin, BEiT).

The bias of the pair (query i, key j) is table[row_i - row_j, col_i - col_j, head]. Each block
learns its own table (Swin; timm's VisionTransformerRelPos); `shared: true` uses one for all
blocks (BEiT's shared relative position bias). The class token has no offset: its row and
column of the bias are zero, so its attention is content only, or with `cls_entries: true`
three learned scalars per head (class to patch, patch to class, class to class), as in BEiT and
timm. At another grid the tables are interpolated to the new offset range (see RelativeTable in
base.py). `offsets: 1d` indexes the table by the raster-order difference instead.
"""

from __future__ import annotations

from .base import RelativeTable


class RelativeBias(RelativeTable):
    def channels(self):
        return self.num_heads

    def attention(self, grid, layer, keep=None):
        table = self.pair_table(grid, layer, keep)  # (N, N, H); (B, n, n, H) with keep
        bias = table.movedim(table.dim() - 1, table.dim() - 3)  # positive dims: ONNX's Transpose
        return lambda q, k: (q, k, bias)
