"""Resolution probe: the trained model on its test images resized to other sizes (the ViT paper
§3.2: fine-tuning at a higher resolution keeps the patch size, so the sequence grows and the
positions must follow).

Each positional variant adapts as it does when a checkpoint is loaded at another image size,
through the one resampling rule it already has (models/pos_embed/): a learned table is
interpolated (`resample_grid_table`, the function `load_state_dict` applies to a table of another
grid), sin-cos and RoPE are recomputed for the new grid, relative tables are resampled to the
new offset range, and `none` has nothing to adapt. The model takes the new grid in its forward
pass, so no weights are copied or changed. A CNN runs at any size; an RNN reads more or fewer
tokens; a model with one weight per input pixel (the MLP: `fixed_input_size`) cannot, and says so.
Sizes must be multiples of a linear patch projection's patch, as for a model built at that size."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models.embed import PatchEmbed
from .common import accuracy_under


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images resized to size x size: bilinear, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def resolution_accuracy(model: nn.Module, batches: Iterable, sizes: Sequence[int]) -> dict[int, float]:
    """{size: accuracy on the images resized to size x size}, the training size (the batches'
    own) included, so each curve shows its peak."""
    batches = list(batches)
    H, W = batches[0][0].shape[-2:]
    if getattr(model, "fixed_input_size", False):
        raise ValueError(f"{type(model).__name__} takes {H}x{W} images only (a weight per input pixel)")
    if H != W:
        raise ValueError(f"the probe resizes square images; these are {H}x{W}")
    patch = model.embed.patch_size if isinstance(getattr(model, "embed", None), PatchEmbed) else 1
    uneven = [s for s in sizes if s % patch]
    if uneven:
        raise ValueError(f"sizes {uneven} are not whole numbers of the model's {patch} px patches")
    out = {}
    for s in sorted({int(s) for s in sizes} | {int(H)}):
        out[s] = accuracy_under(model, batches, lambda x, s=s: resize(x, s))
    return out
