"""Locality Self-Attention (LSA; Lee, Lee & Song 2021; the authors' aanna0701/SPT_LSA_ViT).

Two changes to the softmax of standard attention, which sharpen it towards other tokens:
  * a learned temperature: logits are q·k × τ_h, τ_h one learned scalar per head initialised
    to 1/sqrt(d) (the authors' code; the standard attention fixes it at 1/sqrt(d));
  * diagonal masking: each token's logit to itself is -inf, so it attends to the others only.

Computed through the fused kernel: q is pre-scaled by τ_h·sqrt(d) (the kernel multiplies by
1/sqrt(d)) and the diagonal mask joins the positional variant's bias, so every positional variant
works with it (relative variants' bias terms keep their own scale).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Attention


class LocalitySelfAttention(Attention):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        self.temperature = nn.Parameter(torch.full((num_heads,), self.scale))

    def _qkv(self, x, pos):
        q, k, v, bias = super()._qkv(x, pos)
        q = q * (self.temperature / self.scale).to(q.dtype).view(1, -1, 1, 1)
        n = q.shape[-2]
        index = torch.arange(n, device=q.device)  # not torch.eye: onnxruntime has no bool EyeLike
        diagonal = index[:, None] == index[None, :]
        mask = torch.zeros(n, n, dtype=q.dtype, device=q.device).masked_fill(diagonal, float("-inf"))
        return q, k, v, mask if bias is None else bias + mask


def lsa_blocks(layer: int, grid, depth: int | None = None, blocks: int | None = None,
               **kwargs) -> nn.Module | None:
    """The attention factory of `model.attention`: LSA in the first `blocks` blocks (all: null;
    negative: all but the last -blocks), the standard attention (None) in the others."""
    if blocks is not None and blocks < 0 and depth is not None:
        blocks += depth
    return LocalitySelfAttention(**kwargs) if blocks is None or layer < blocks else None
