"""The lecture's fully connected network: the baseline with no inductive bias about images.

image (B, C, H, W) -> flatten to C·H·W values -> k × [Linear -> GELU -> Dropout] -> Linear head

Every input value has its own weights: nothing ties neighbouring pixels together (no locality)
and nothing is shared across positions (no translation equivariance). Plain PyTorch, named so
that the optimiser's layer decay and freezing (vitlab.objectives.optim) and the CKA probe see its layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .embed import to_2tuple


class MLP(nn.Module):
    kind = "mlp"  # a baseline, not a ViT (vitlab/model_kind.py)
    fixed_input_size = True  # a weight per input pixel: no other image size (the resolution probe)

    @staticmethod
    def check(hidden_dims: Sequence[int], prefix: str = "") -> None:
        """At least one hidden layer, each a positive integer width, as ValueError naming
        `prefix + hidden_dims`: config_checks calls this with prefix "model."."""
        if not hidden_dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                  for d in hidden_dims):
            raise ValueError(f"{prefix}hidden_dims={list(hidden_dims)}: give one positive integer width per "
                             "hidden layer, e.g. [384, 384]")

    def __init__(self, img_size: int | tuple[int, int] = 32, in_chans: int = 3, num_classes: int = 10,
                 hidden_dims: Sequence[int] = (384, 384), drop_rate: float = 0.0):
        """hidden_dims: the width of each hidden layer, first to last (at least one)."""
        super().__init__()
        self.check(hidden_dims)
        H, W = to_2tuple(img_size)
        self.in_chans, self.img_size, self.num_classes = in_chans, (H, W), num_classes
        widths = [in_chans * H * W, *map(int, hidden_dims)]
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.GELU(), nn.Dropout(drop_rate))
            for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.head = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for timm's layer decay and vitlab's freezing: the first layer (which sees
        the image, as a ViT's patch embedding does) is the stem, each later one a block; the
        head, unmatched, comes last."""
        return dict(stem=r"^layers\.0\.", blocks=[(r"^layers\.(\d+)", None)])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
