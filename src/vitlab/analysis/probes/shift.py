"""Translation probe: accuracy when the whole image moves by s pixels, either filled (what moves
in is the image's own background: black in pixel space, or its edge pixels repeated — never the
normalised 0, the dataset mean, a grey seam on the digits' black) or circular (what leaves one
side comes back on the other: a CNN with circular padding and global pooling is exactly invariant
to that at multiples of its stride), and Zhang's (2019) shift consistency: two random shifts of
one image are two crops of one padded canvas. A ViT's patch grid and positions, and an MLP's
per-pixel weights, are not invariant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import accuracy_under

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # right, left, down, up


Fill = torch.Tensor | str | None  # per-channel value in the images' units | "edge" | None: 0


def black(mean, std) -> torch.Tensor:
    """Pixel value 0 (black) in normalised units, per channel: what a shift or an occlusion fills
    with (the normalised 0 is the dataset mean: grey)."""
    return -torch.as_tensor(mean, dtype=torch.float32) / torch.as_tensor(std, dtype=torch.float32)


def pad(x: torch.Tensor, sides: tuple[int, int, int, int], fill: Fill = None) -> torch.Tensor:
    """x padded by (left, right, top, bottom) pixels of `fill`: a per-channel value, "edge" (the
    border pixels repeated) or None (0)."""
    if fill == "edge":
        return F.pad(x, sides, mode="replicate")
    padded = F.pad(x, sides)
    if fill is None:
        return padded
    inside = F.pad(torch.ones_like(x[:, :1], dtype=torch.bool), sides)
    return torch.where(inside, padded, fill.to(x).view(1, -1, 1, 1))


def translate(x: torch.Tensor, dx: int, dy: int, circular: bool = False, fill: Fill = None) -> torch.Tensor:
    """x (B, C, H, W) moved dx pixels right and dy down; what moves in is `fill` (see `pad`), or,
    circular, what moved out on the other side."""
    if circular:
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    H, W = x.shape[-2:]
    padded = pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), fill)
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + H, left:left + W]


def canvas_crop(x: torch.Tensor, margin: int, dx: int, dy: int, fill: Fill = None) -> torch.Tensor:
    """Zhang's view of a shift: the image on a canvas padded by `margin` on every side, cropped
    back to its size `dx` pixels left and `dy` up of centre (the image moved dx right, dy down)."""
    H, W = x.shape[-2:]
    canvas = pad(x, (margin,) * 4, fill)
    return canvas[..., margin - dy:margin - dy + H, margin - dx:margin - dx + W]


def shift_accuracy(model: nn.Module, batches: Iterable, shifts: Sequence[int] = (0, 2, 4, 8),
                   circular: bool = False, fill: Fill = None) -> dict[int, float]:
    """{s: accuracy averaged over the four axis-aligned moves by s pixels}; `batches` is iterated
    once per move (a list, or a loader)."""
    out = {}
    for s in shifts:
        moves = DIRECTIONS[:1] if s == 0 else DIRECTIONS
        out[int(s)] = sum(accuracy_under(model, batches,
                                         lambda x, d=d, s=s: translate(x, d[0] * s, d[1] * s, circular, fill))
                          for d in moves) / len(moves)
    return out


@torch.no_grad()
def shift_consistency(model: nn.Module, batches: Iterable, max_shift: int = 4, pairs: int = 4,
                      seed: int = 0, fill: Fill = None) -> float:
    """Zhang (2019): how often two random shifts (dx, dy in [-max_shift, max_shift]) of one image
    — two crops of one canvas padded by max_shift with `fill` — get the same top-1 class, over
    `pairs` pairs of shifts drawn from `seed`, each applied to every image."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    same = total = 0
    for _ in range(pairs):
        a, b = (torch.randint(-max_shift, max_shift + 1, (2,), generator=g).tolist() for _ in range(2))
        for x, _y in batches:
            x = x.to(device)
            views = [canvas_crop(x, max_shift, *shift, fill) for shift in (a, b)]
            same += (model(views[0]).argmax(-1) == model(views[1]).argmax(-1)).sum().item()
            total += len(x)
    if total == 0:
        raise ValueError("no images to probe")
    return same / total
