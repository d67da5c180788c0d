"""The LightningModule: loss, metrics, optimiser and schedule for any image classifier.

It knows nothing of which embedding or positional variant the model uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LinearLR, SequentialLR
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

STEM = "embed.backbone."  # a hybrid's CNN: the parameters `stem_lr_scale` applies to
LR_SCALING = ("none", "linear", "sqrt")


def lr_factor(rule: str, batch_size: int | None, base_batch_size: int) -> float:
    """The learning-rate multiplier for a global batch: none = 1, linear = batch / base,
    sqrt = (batch / base) ** 0.5 — the lr in the config is the one meant for `base_batch_size`."""
    if rule == "none" or batch_size is None:
        return 1.0
    ratio = batch_size / base_batch_size
    return ratio if rule == "linear" else math.sqrt(ratio)


def param_groups(model: nn.Module, weight_decay: float,
                 stem_lr_scale: float | None = None) -> list[dict]:
    """Two groups: decayed weights, and the rest (norms, biases — ndim <= 1, backbone norms
    included — plus what the model names in `no_weight_decay()`: class token, positions).
    With `stem_lr_scale`, a hybrid's CNN gets two more groups (same decay rule) whose
    `lr_scale` multiplies the optimiser's learning rate."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    groups = {(stem, decay): [] for stem in (False, True) for decay in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        stem = stem_lr_scale is not None and name.startswith(STEM)
        groups[stem, not (p.ndim <= 1 or name in skip)].append(p)
    out = [
        {"params": groups[False, True], "weight_decay": weight_decay},
        {"params": groups[False, False], "weight_decay": 0.0},
    ]
    for decay in (True, False):
        if groups[True, decay]:
            out.append({"params": groups[True, decay], "lr_scale": stem_lr_scale,
                        "weight_decay": weight_decay if decay else 0.0})
    return out


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """timm's layer of every parameter (embeddings 0, block i -> i + 1, the final norm with the
    last block, the head last) from the model's group_matcher, and the number of layers."""
    from timm.models import group_parameters
    ids = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    last = max(ids.values())
    return {n: ids.get(n, last) for n, _ in model.named_parameters()}, last + 1


def freeze(model: nn.Module, layers: int | None = None, linear_probe: bool = False) -> None:
    """No gradients for timm's first `layers` layers (1 = the embeddings, 1 + k = and blocks
    0..k-1), or for everything but the head (a linear probe)."""
    if not layers and not linear_probe:
        return
    ids, count = layer_ids(model)
    for name, p in model.named_parameters():
        if linear_probe and not name.startswith("head."):
            p.requires_grad_(False)
        elif layers and ids[name] < layers:
            p.requires_grad_(False)
    stem = getattr(getattr(model, "embed", None), "set_frozen", None)
    if stem and (linear_probe or layers):  # a frozen CNN stem keeps its norm statistics too
        stem(True)


def param_groups_layer_decay(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """timm's layer-wise lr decay (BEiT, MAE): layer l of L learns at lr * decay ** (L-1-l),
    with the same weight-decay rule as param_groups."""
    from timm.optim import param_groups_layer_decay as timm_groups
    skip = list(getattr(model, "no_weight_decay", lambda: set())())
    return timm_groups(model, weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay)


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
    ):
        super().__init__()
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]  # a streaming batch may carry sample ids after them
        logits = self(x)
        loss = self.loss(logits, y)
        # under Mixup/CutMix a training image counts as its dominant label
        getattr(self, f"{stage}_metrics").update(logits.detach(), y.argmax(-1) if y.ndim > 1 else y)
        # weighted by the batch size as one value per image: with its NaN checks disabled,
        # MeanMetric drops a `weight` argument (torchmetrics issue #3434)
        getattr(self, f"{stage}_loss").update(loss.detach().expand(x.shape[0]))
        return loss

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

    def configure_optimizers(self):
        decay = self.hparams.get("layer_decay")
        opt = self.optimizer_factory(
            param_groups_layer_decay(self.model, self.hparams.weight_decay, decay) if decay else
            param_groups(self.model, self.hparams.weight_decay, self.hparams.get("stem_lr_scale")))
        batch = lr_factor(self.hparams.get("lr_scaling", "none"), self.hparams.get("batch_size"),
                          self.hparams.get("base_batch_size", 256))
        for group in opt.param_groups:  # before the schedule records each group's base lr
            group["lr"] *= group.get("lr_scale", 1.0) * batch
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        steps_set = self.hparams.get("warmup_steps")  # the paper's fine-tuning counts steps
        warmup = min(total - 1, int(steps_set) if steps_set is not None else
                     int(round(self.hparams.warmup_epochs * total / epochs)))
        steps, floor = max(1, total - warmup), self.hparams.min_lr_ratio
        # cosine to lr * min_lr_ratio, as a factor so every group (stem included) follows it
        cosine = LambdaLR(opt, lambda s: floor + (1 - floor) * 0.5 * (
            1 + math.cos(math.pi * min(s, steps) / steps)))
        if warmup > 0:  # linear warm-up, then cosine decay, stepped every optimiser step
            ramp = LinearLR(opt, start_factor=1.0 / (warmup + 1), total_iters=warmup)
            sched = SequentialLR(opt, [ramp, cosine], milestones=[warmup])
        else:
            sched = cosine
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
