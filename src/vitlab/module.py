"""The LightningModule: loss and metrics for any image classifier; its optimiser and schedule
come from optim.py, DeiT's distillation from distill.py, the weight average from callbacks/ema.py.

It knows nothing of which embedding or positional variant the model uses.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from .callbacks.ema import EMA
from .distill import Distillation, prediction
from .optim import configure_optimizer, freeze


def accuracy_metrics(num_classes: int, prefix: str, validate_args: bool = True) -> MetricCollection:
    """Top-1 (and top-5 beyond 5 classes), micro-averaged. `validate_args=False` skips the
    input checks, which read values back from the device: the training step must not wait."""
    kw = dict(average="micro", validate_args=validate_args)
    metrics = {"acc": MulticlassAccuracy(num_classes, **kw)}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, **kw)
    return MetricCollection(metrics, prefix=prefix)


def epoch_mean() -> MeanMetric:
    """A batch-weighted mean over the epoch, synced over processes when computed. Without NaN
    checks (each reads a value back to the host); a NaN loss still shows as a NaN mean."""
    try:
        return MeanMetric(nan_strategy="disable")
    except ValueError:  # torchmetrics < 1.4 has no "disable"
        return MeanMetric(nan_strategy="warn")


class ImageClassifier(L.LightningModule):
    classifies = True  # its runs end in class logits: predict, export and eval read them (trained.py)

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        weight_decay: float = 0.05,
        label_smoothing: float = 0.0,
        warmup_epochs: float = 0.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        stem_lr_scale: float | None = None,
        lr_scaling: str = "none",
        base_batch_size: int = 256,
        batch_size: int | None = None,
        layer_decay: float | None = None,
        freeze_layers: int | None = None,
        linear_probe: bool = False,
        distill: dict | None = None,
        ema_decay: float | None = None,
    ):
        super().__init__()
        distill = Distillation.options(distill)  # plain values: a checkpoint loads weights_only
        # the model and optimiser factory are rebuilt from the run's config, not pickled
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.model = model
        freeze(model, freeze_layers, linear_probe)
        self.optimizer_factory = optimizer
        # class indices, or soft targets (B, C) from Mixup/CutMix; smoothing applies to both
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_metrics = accuracy_metrics(num_classes, "train/", validate_args=False)
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.train_loss, self.val_loss, self.test_loss = epoch_mean(), epoch_mean(), epoch_mean()
        # a teacher (frozen, outside this module's state) and DeiT's loss; None without one
        self.distill = Distillation.of(distill, num_classes, model)

    def forward(self, x: torch.Tensor, heads: bool = False):
        """The model's logits; `heads`: a distilled ViT's (class, distillation) pair."""
        return self.model.forward_heads(x) if heads else self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]  # a streaming batch may carry sample ids after them
        outputs = self._outputs(x, stage)
        if self.distill is not None and stage == "train":
            loss = self.distill.loss(self.loss, outputs, x, y)
        else:
            loss = self.loss(prediction(outputs), y)
        if self.distill is not None and stage == "test":
            self.distill.update_test(outputs, x, y)
        logits = prediction(outputs)
        # under Mixup/CutMix a training image counts as its dominant label
        getattr(self, f"{stage}_metrics").update(logits.detach(), y.argmax(-1) if y.ndim > 1 else y)
        # weighted by the batch size as one value per image: with its NaN checks disabled,
        # MeanMetric drops a `weight` argument (torchmetrics issue #3434)
        getattr(self, f"{stage}_loss").update(loss.detach().expand(x.shape[0]))
        return loss

    def _outputs(self, x: torch.Tensor, stage: str):
        """The model's output; at test, a distilled ViT's two heads (their mean is its prediction)."""
        distilled = getattr(self.model, "dist_token", None) is not None
        heads = stage == "test" and self.distill is not None and distilled
        return self(x, heads=heads)

    def _log_step_due(self) -> bool:
        """Whether this training step is one the logger writes (every `log_every_n_steps`).
        Per-step values are logged at those steps only: each `self.log` call costs a walk over
        Lightning's result collection, a measurable part of a small model's step."""
        return (self.trainer.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def _log_metrics(self, stage: str) -> None:
        """The epoch's mean loss and accuracies, computed once at its end (torchmetrics syncs
        their counts over processes). Logged as values, not as Metric objects: Lightning would
        move a logged Metric to the device at every step's log call (bench fit)."""
        metrics, loss = getattr(self, f"{stage}_metrics"), getattr(self, f"{stage}_loss")
        if loss.update_count:
            values = {f"{stage}/loss_epoch" if stage == "train" else f"{stage}/loss": loss.compute(),
                      **metrics.compute()}
            self.log_dict(values, prog_bar=stage != "train")
        if self.distill is not None:  # distillation term, teacher agreement
            self.log_dict(self.distill.compute(stage))
        metrics.reset()
        loss.reset()

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        if self._log_step_due():
            # sync_dist: with DDP the logged loss is the mean over all processes, so curves
            # match a single-device run (one scalar all-reduce per logged step)
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_train_epoch_end(self):
        self._log_metrics("train")

    def on_validation_epoch_end(self):
        self._log_metrics("val")

    def on_test_epoch_end(self):
        self._log_metrics("test")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the gradients here, with torch's multi-tensor clip, rather than through Lightning's
        precision plugin, which refuses optimisers that unscale inside their step (fused AdamW)
        under mixed precision. Under fp16 such an optimiser's gradients are still scaled at this
        point: unscale them first (the scaler then steps without scaling again). The norm
        before clipping is logged as train/grad_norm; nothing here reads it back to the host."""
        if not gradient_clip_val:
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)  # Lightning unscales only optimisers that do not do it themselves
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            return
        norm = torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        if self._log_step_due():
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def configure_callbacks(self):
        """The weight average (module.ema_decay): validation, test and best.ckpt use it. Once:
        a test after fitting keeps the fit's (the trainer asks again)."""
        if not self.hparams.ema_decay or any(isinstance(c, EMA) for c in self.trainer.callbacks):
            return []
        return [EMA(self.hparams.ema_decay)]

    def configure_optimizers(self):
        return configure_optimizer(self.model, self.optimizer_factory, self.trainer, **self.hparams)
