"""The offline default: scikit-learn's handwritten digits (1,797 real 8×8 images, 10 classes).

Ships with scikit-learn, so it needs no download. Images are upsampled (bilinear) to `img_size`
so every small-image preset accepts them; 20 % is held out as a fixed, stratified test split
(1,437 train / 360 test).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..splits import Splits, stratified_split


class TensorImages(Dataset):
    """uint8 images (N, C, H, W) with integer labels, held in memory."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])


def digits(img_size: int = 32, test_fraction: float = 0.2, seed: int = 0, **_) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    targets = torch.tensor(d.target, dtype=torch.long)
    test_idx, train_idx = stratified_split(targets.numpy(), test_fraction, seed)
    return Splits(
        train=TensorImages(images[train_idx], targets[train_idx]),
        test=TensorImages(images[test_idx], targets[test_idx]),
        classes=[str(c) for c in d.target_names],
        source="sklearn digits",
    )
