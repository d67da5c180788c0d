"""Translation probe: accuracy when the whole image moves by s pixels. Emptied pixels are 0,
the dataset mean after normalisation. A CNN with global pooling is nearly invariant; a ViT's
patch grid and positions, and an MLP's per-pixel weights, are not."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import accuracy_under

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # right, left, down, up


def translate(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """x (B, C, H, W) moved dx pixels right and dy down; what moves in is 0."""
    H, W = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + H, left:left + W]


def shift_accuracy(model: nn.Module, batches: Iterable,
                   shifts: Sequence[int] = (0, 2, 4, 8)) -> dict[int, float]:
    """{s: accuracy averaged over the four axis-aligned moves by s pixels}; `batches` is iterated
    once per move (a list, or a loader)."""
    out = {}
    for s in shifts:
        moves = DIRECTIONS[:1] if s == 0 else DIRECTIONS
        out[int(s)] = sum(accuracy_under(model, batches, lambda x, d=d, s=s: translate(x, d[0] * s, d[1] * s))
                          for d in moves) / len(moves)
    return out
