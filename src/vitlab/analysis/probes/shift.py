"""Translation probe: accuracy when the whole image moves by s pixels, either zero-padded (what
moves in is 0, the dataset mean after normalisation) or circular (what leaves one side comes back
on the other: a CNN with circular padding and global pooling is exactly invariant to that at
multiples of its stride), and Zhang's (2019) shift consistency. A ViT's patch grid and positions,
and an MLP's per-pixel weights, are not invariant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import accuracy_under

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # right, left, down, up


def translate(x: torch.Tensor, dx: int, dy: int, circular: bool = False) -> torch.Tensor:
    """x (B, C, H, W) moved dx pixels right and dy down; what moves in is 0, or, circular, what
    moved out on the other side."""
    if circular:
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    H, W = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)))
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + H, left:left + W]


def shift_accuracy(model: nn.Module, batches: Iterable, shifts: Sequence[int] = (0, 2, 4, 8),
                   circular: bool = False) -> dict[int, float]:
    """{s: accuracy averaged over the four axis-aligned moves by s pixels}; `batches` is iterated
    once per move (a list, or a loader)."""
    out = {}
    for s in shifts:
        moves = DIRECTIONS[:1] if s == 0 else DIRECTIONS
        out[int(s)] = sum(accuracy_under(model, batches,
                                         lambda x, d=d, s=s: translate(x, d[0] * s, d[1] * s, circular))
                          for d in moves) / len(moves)
    return out


@torch.no_grad()
def shift_consistency(model: nn.Module, batches: Iterable, max_shift: int = 4, pairs: int = 4,
                      seed: int = 0) -> float:
    """Zhang (2019): how often two random shifts (dx, dy in [-max_shift, max_shift], zero-padded)
    of one image get the same top-1 class, over `pairs` pairs of shifts drawn from `seed`, each
    applied to every image."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    same = total = 0
    for _ in range(pairs):
        a, b = (torch.randint(-max_shift, max_shift + 1, (2,), generator=g).tolist() for _ in range(2))
        for x, _y in batches:
            x = x.to(device)
            same += (model(translate(x, *a)).argmax(-1) == model(translate(x, *b)).argmax(-1)).sum().item()
            total += len(x)
    if total == 0:
        raise ValueError("no images to probe")
    return same / total
