"""Image transforms (torchvision v2): the fixed pipeline around a configurable augmentation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchvision.transforms import v2


def build_transform(mean: Sequence[float], std: Sequence[float], augment: Mapping | Sequence = (),
                    resize: int | None = None) -> v2.Compose:
    """uint8/PIL image -> [resize + centre crop] -> augment -> float in [0, 1] -> normalise.

    `augment` holds v2 transforms by name, in order, from conf/data/augment/ (empty for
    evaluation); a plain sequence works too."""
    if isinstance(augment, Mapping):
        augment = augment.values()
    head = [v2.ToImage()]
    if resize:
        head += [v2.Resize(resize, antialias=True), v2.CenterCrop(resize)]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(head + list(augment) + tail)
