"""Sequence pooling (CCT, Hassani et al. 2021): the class token replaced by a learned weighting.

    w = softmax(g(x_L)ᵀ) over the N tokens,   z = w · x_L      (g: a linear map D -> 1)

The pooled vector is an attention-weighted mean of the output tokens, so the model needs no
class token (`pool=seqpool`), and positions become optional.
"""

from __future__ import annotations

import torch
from torch import nn


class SeqPool(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)  # CCT's name, so its checkpoints map one to one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) normalised tokens -> (B, D)."""
        weights = self.attention_pool(x).softmax(dim=1)  # (B, N, 1)
        return (weights.transpose(1, 2) @ x).squeeze(1)
