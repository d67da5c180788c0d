"""Synthetic images with random labels: for throughput measurements and smoke tests."""

from __future__ import annotations

import torch

from ..splits import Splits
from .digits import TensorImages


def fake(num_classes: int = 10, img_size: int = 32, in_chans: int = 3, train_size: int = 1024,
         val_size: int = 256, test_size: int = 256, seed: int = 0, **_) -> Splits:
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> TensorImages:
        images = torch.randint(0, 256, (n, in_chans, img_size, img_size), generator=g,
                               dtype=torch.uint8)
        return TensorImages(images, torch.randint(0, num_classes, (n,), generator=g))

    return Splits(train=make(train_size), val=make(val_size), test=make(test_size),
                  classes=[str(c) for c in range(num_classes)], source="fake data")
