"""The LightningModule of MAE pre-training (models/mae.py): images in, labels unused, the masked
reconstruction loss out; optimiser, schedule and the rest from BaseModule, as the supervised module's.

It wraps whatever encoder the run's `model:` builds in the MaskedAutoencoder that
`module.mae` configures, so the checkpoint holds `model.encoder.*` (what `model.pretrained=<this
run>` fine-tunes) and `model.decoder.*`. Validation and test mask each image with fixed noise keyed by
its pixels, so their loss compares across epochs, runs and world sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.mae import MaskedAutoencoder
from .base_module import BaseModule

_PRIME = 2**31 - 1  # integer hashing modulo a prime below 2**31: no product overflows int64


def _mix(h: torch.Tensor, multiplier: int) -> torch.Tensor:
    h = torch.remainder(h * multiplier, _PRIME)
    return h ^ (h >> 15)


def eval_noise(images: torch.Tensor, num_patches: int) -> torch.Tensor:
    """The fixed masking noise of evaluation images, (B, num_patches) in [0, 1): a hash of each
    image's own pixels and the patch index, on the images' device. An image gets the same mask
    in any batch, at any position, on any number of processes, so val/loss and test/loss do not
    depend on the world size (integer arithmetic: exact, in any summation order)."""
    pixels = torch.round(images.detach().flatten(1).double() * 255).long()
    weights = torch.remainder(torch.arange(1, pixels.shape[1] + 1, device=images.device) * 40503, 65521)
    key = torch.remainder((pixels * weights).sum(1, keepdim=True), _PRIME)  # (B, 1): the image's
    patch = torch.arange(num_patches, device=images.device) * 97 + 1
    h = torch.remainder(key * 48271 + patch * 69621, _PRIME)
    for multiplier in (1103515245 % _PRIME, 16807, 950706376):
        h = _mix(h, multiplier)
    return h.to(torch.float32) / _PRIME


class MaskedAutoencoderModule(BaseModule):
    needs_labels = False  # learns from images alone: data.num_classes=0 is allowed (config_checks)
    BUILT = ("model", "mae", "optimizer")

    def __init__(
        self,
        model: nn.Module,
        mae: Callable[..., MaskedAutoencoder],
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scaling: str = "linear",
        **options,
    ):
        """`model`: the encoder (the run's ViT); `mae(encoder=...)` builds the autoencoder
        around it, which is what a step runs: `compile` compiles the autoencoder's forward
        (the masked encoder and the decoder) rather than the ViT's classifier forward.
        `options`: the optimiser, schedule and compile of BaseModule."""
        super().__init__(mae(encoder=model), optimizer, lr_scaling=lr_scaling, **options)

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        return self.model(images, noise)

    def _step(self, batch, stage: str) -> torch.Tensor:
        images = batch[0]  # labels, if the data has any, are not used
        noise = None if stage == "train" else eval_noise(images, self.model.num_patches)
        loss, _, _ = self(images, noise)
        getattr(self, f"{stage}_loss").update(loss.detach().expand(images.shape[0]))
        return loss
