"""Every N epochs of MAE pre-training (module=mae; other modules are left alone): originals,
masked inputs and reconstructions of a fixed set of validation images under fixed masks, so the
pictures of successive epochs compare, saved as <run>/figures/mae_epoch_XXX.png (XXX: epochs
done) and logged to the loggers that take images (W&B, TensorBoard)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import lightning as L
import torch

from ..analysis.reconstruction import plot_reconstructions, reconstruction_panels
from ..data.eval_images import spaced
from .figures import save_and_log


@runtime_checkable
class Reconstructs(Protocol):
    """What the grid needs of a module's `model`: a masked autoencoder (models/mae.py) that
    masks its patches by given noise and reconstructs them. Modules without one are left alone."""

    num_patches: int

    def reconstruct(self, images: torch.Tensor, noise: torch.Tensor | None = None): ...


class MaeReconstructionGrid(L.Callback):
    def __init__(self, mean: Sequence[float], std: Sequence[float], every_n_epochs: int = 10,
                 num_images: int = 8, seed: int = 0, key: str = "mae/reconstruction"):
        """`mean`, `std`: the data's normalisation, undone for the picture. `seed` fixes the
        masks; the images are `num_images` evenly spaced over the validation split. The last
        epoch is always drawn."""
        self.mean, self.std = list(mean), list(std)
        self.every_n_epochs, self.num_images, self.seed, self.key = every_n_epochs, num_images, seed, key
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None  # images, noise

    def _validation_images(self, trainer: L.Trainer) -> torch.Tensor:
        """`num_images` evenly spaced over the validation split (a folder's first images are all
        of one class), through its evaluation transform; else the first of its loader."""
        dm = trainer.datamodule
        split = getattr(dm, "splits", {}).get("val")
        if split is not None and len(split):
            return torch.stack([split[i][0] for i in spaced(len(split), self.num_images)])
        return next(iter(dm.val_dataloader()))[0][: self.num_images]

    def _images_and_noise(self, trainer: L.Trainer, autoencoder: Reconstructs, device: torch.device):
        if self._fixed is None:
            images = self._validation_images(trainer)
            gen = torch.Generator().manual_seed(self.seed)
            self._fixed = images, torch.rand(len(images), autoencoder.num_patches, generator=gen)
        return (t.to(device) for t in self._fixed)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        due = done % self.every_n_epochs == 0 or done == trainer.max_epochs
        autoencoder = getattr(pl_module, "model", None)
        if (not isinstance(autoencoder, Reconstructs) or trainer.sanity_checking or not due
                or not trainer.is_global_zero or trainer.datamodule is None):
            return
        images, noise = self._images_and_noise(trainer, autoencoder, pl_module.device)
        panels = reconstruction_panels(autoencoder, images, noise, self.mean, self.std)
        fig = plot_reconstructions(panels, f"MAE reconstructions after epoch {done}")
        save_and_log(trainer, fig, f"figures/mae_epoch_{done:03d}.png", self.key)
