"""What every accuracy probe shares: run the model on perturbed copies of the batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


@torch.no_grad()
def accuracy_under(model: nn.Module, batches: Iterable,
                   perturb: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Top-1 accuracy of `model` (in eval mode) on `perturb(images)` over (images, labels) batches."""
    device = next(model.parameters()).device
    correct = total = 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        correct += (model(perturb(x)).argmax(-1) == y).sum().item()
        total += len(y)
    if total == 0:
        raise ValueError("no images to probe")
    return correct / total
