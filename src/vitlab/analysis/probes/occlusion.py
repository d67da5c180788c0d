"""Occlusion probe: accuracy when a fraction of the image's cells (patch x patch pixels) is set
to black in pixel space (Naseer et al. 2021 zero the patches before normalisation; given no
normalisation, to 0). They report ViTs degrade more gracefully than CNNs under such random drops."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .common import accuracy_under


def occlude(x: torch.Tensor, fraction: float, patch: int, generator: torch.Generator,
            fill: torch.Tensor | None = None) -> torch.Tensor:
    """x with round(fraction x cells) random patch x patch cells set to `fill` (a per-channel
    value in x's units; None: 0), chosen anew per image."""
    B, C, H, W = x.shape
    if H % patch or W % patch:
        raise ValueError(f"occlusion patch {patch} does not divide a {H}x{W} image")
    gh, gw = H // patch, W // patch
    k = round(fraction * gh * gw)
    order = torch.rand(B, gh * gw, generator=generator).argsort(dim=1)
    keep = torch.ones(B, gh * gw)
    keep.scatter_(1, order[:, :k], 0.0)
    mask = keep.reshape(B, 1, gh, 1, gw, 1).expand(B, 1, gh, patch, gw, patch).reshape(B, 1, H, W)
    mask = mask.to(x.device, x.dtype)
    return x * mask if fill is None else x * mask + fill.to(x).view(1, -1, 1, 1) * (1 - mask)


def occlusion_accuracy(model: nn.Module, batches: Iterable,
                       fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75), patch: int = 4,
                       seed: int = 0, fill: torch.Tensor | None = None) -> dict[float, float]:
    """{fraction: accuracy with that fraction of cells zeroed}; the cells come from `seed`, the
    same for every model."""
    out = {}
    for f in fractions:
        g = torch.Generator().manual_seed(seed)
        out[float(f)] = accuracy_under(model, batches, lambda x, f=f, g=g: occlude(x, f, patch, g, fill))
    return out
