"""The LightningModule of MAE pre-training (models/mae.py): images in, labels unused, the masked
reconstruction loss out; optimiser and schedule from optim.py, as the supervised module's.

It wraps whatever encoder the run's `model:` builds in the MaskedAutoencoder that
`module.mae` configures, so the checkpoint holds `model.encoder.*` (what `model.pretrained=<this
run>` fine-tunes) and `model.decoder.*`. Validation and test mask each image with fixed noise keyed by
its pixels, so their loss compares across epochs, runs and world sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from .models.mae import MaskedAutoencoder
from .module import ImageClassifier, epoch_mean
from .optim import configure_optimizer

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


class MaskedAutoencoderModule(L.LightningModule):
    needs_labels = False  # learns from images alone: data.num_classes=0 is allowed (config_checks)

    def __init__(
        self,
        model: nn.Module,
        mae: Callable[..., MaskedAutoencoder],
        optimizer: Callable[..., torch.optim.Optimizer],
        weight_decay: float = 0.05,
        warmup_epochs: float = 0.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        lr_scaling: str = "linear",
        base_batch_size: int = 256,
        batch_size: int | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
    ):
        """`model`: the encoder (the run's ViT); `mae(encoder=...)` builds the autoencoder
        around it. `compile`: compile the autoencoder's forward (the masked encoder and the
        decoder), which is what a step runs, rather than the ViT's classifier forward."""
        super().__init__()
        self.save_hyperparameters(ignore=["model", "mae", "optimizer"])
        self.model = mae(encoder=model)
        if compile:
            self.model.compile(mode=compile_mode)
        self.optimizer_factory = optimizer
        self.train_loss, self.val_loss, self.test_loss = epoch_mean(), epoch_mean(), epoch_mean()

    def forward(self, images: torch.Tensor, noise: torch.Tensor | None = None):
        return self.model(images, noise)

    def _step(self, batch, stage: str, batch_idx: int | None = None) -> torch.Tensor:
        images = batch[0]  # labels, if the data has any, are not used
        noise = None if batch_idx is None else eval_noise(images, self.model.num_patches)
        loss, _, _ = self(images, noise)
        getattr(self, f"{stage}_loss").update(loss.detach().expand(images.shape[0]))
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if self._log_step_due():
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", batch_idx)

    def _log_loss(self, stage: str) -> None:
        loss = getattr(self, f"{stage}_loss")
        if loss.update_count:
            self.log(f"{stage}/loss_epoch" if stage == "train" else f"{stage}/loss", loss.compute(),
                     prog_bar=stage != "train")
        loss.reset()

    def on_train_epoch_end(self):
        self._log_loss("train")

    def on_validation_epoch_end(self):
        self._log_loss("val")

    def on_test_epoch_end(self):
        self._log_loss("test")

    # the supervised module's: per-step logging cadence, and clipping that works with fused AdamW
    _log_step_due = ImageClassifier._log_step_due
    configure_gradient_clipping = ImageClassifier.configure_gradient_clipping

    def configure_optimizers(self):
        return configure_optimizer(self.model, self.optimizer_factory, self.trainer, **self.hparams)
