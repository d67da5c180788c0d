"""The test set's confusion matrix, saved as PNG (and counts as CSV) in the run folder and
logged to the loggers that take images. The module's own forward output is caught with a hook,
so the test set is not run twice (a distilled ViT's two heads count as their mean)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from ..models.vit import prediction
from .figures import save_and_log


def plot_confusion(counts: torch.Tensor) -> Figure:
    """Rows true class, columns prediction; colour = fraction of the row, text = count."""
    counts = counts.cpu().long()
    k = counts.shape[0]
    frac = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    fig = Figure(figsize=(1.5 + 0.42 * k, 1.2 + 0.4 * k), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i, j in np.ndindex(k, k):
            if counts[i, j]:
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    acc = counts.diag().sum() / counts.sum().clamp_min(1)
    ax.set_title(f"Test confusion matrix (accuracy {float(acc):.3f})")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Fraction of the true class")
    return fig


class ConfusionMatrix(L.Callback):
    def __init__(self, filename: str = "confusion_matrix.png", key: str = "test/confusion_matrix"):
        self.filename = filename
        self.key = key
        self.metric = None
        self._hook = None
        self._logits = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        num_classes = getattr(model, "num_classes", None) or pl_module.hparams.get("num_classes")
        self.metric = MulticlassConfusionMatrix(num_classes).to(pl_module.device)
        self._hook = pl_module.register_forward_hook(lambda m, i, out: setattr(self, "_logits", out))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if self._logits is not None:
            self.metric.update(prediction(self._logits).detach().argmax(dim=-1), batch[1])
            self._logits = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hook.remove()
        counts = self.metric.compute()  # summed over processes under DDP
        if trainer.is_global_zero:
            path = save_and_log(trainer, plot_confusion(counts), self.filename, self.key)
            np.savetxt(Path(path).with_suffix(".csv"), counts.cpu().numpy(), fmt="%d", delimiter=",")
