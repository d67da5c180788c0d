"""At the end of training: attention rollout of a few validation images and the mean attention
distance per head and depth (ViT paper, Fig. 7 right) over up to 64, evenly spaced over the split
(data/eval_images.py), saved as PNG in the run folder and logged to the loggers that take images.
The mean distance per layer (over heads) is kept in `summary_values`, which the run copies into
summary.json, so a study's report can draw it."""

from __future__ import annotations

import lightning as L
import torch

from ..analysis.attention import (
    mean_attention_distance,
    model_attention,
    plot_attention_distance,
    plot_rollout,
    rollout_map,
)
from ..data.eval_images import spaced_images
from .figures import save_and_log


class AttentionMaps(L.Callback):
    def __init__(self, num_images: int = 6, max_images: int = 64, key: str = "attention"):
        self.num_images = num_images  # shown in the rollout figure
        self.max_images = max_images  # averaged over for the distances
        self.key = key
        self.summary_values: dict = {}  # copied into summary.json: attention_distance, pixels per block

    def _images(self, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Up to max_images validation images evenly spaced over the split (of every class)."""
        dm = trainer.datamodule
        loader = dm.val_dataloader() if dm is not None else trainer.val_dataloaders
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        batches = spaced_images(loader, self.max_images) if loader is not None else []
        if not batches:
            return None
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        if not trainer.is_global_zero or not hasattr(model, "attention_maps"):
            return
        batch = self._images(trainer)
        if batch is None:
            return
        images, labels = batch[0][: self.max_images].to(pl_module.device), batch[1]
        maps, grid, pixels = model_attention(model, images)
        n, prefix = self.num_images, model.num_prefix
        heat = rollout_map([m[:n] for m in maps], grid, prefix)
        save_and_log(trainer, plot_rollout(images[:n].cpu(), heat.cpu(), labels[:n]),
                     "attention_rollout.png", f"{self.key}/rollout")
        distance = mean_attention_distance(maps, grid, prefix, pixels)
        self.summary_values = {"attention_distance": [round(d, 4) for d in distance.mean(dim=1).tolist()]}
        save_and_log(trainer, plot_attention_distance(distance), "attention_distance.png",
                     f"{self.key}/mean_distance")
