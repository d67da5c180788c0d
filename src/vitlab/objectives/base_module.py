"""What every LightningModule of vitlab shares (in the spirit of solo-learn's BaseMethod): the
optimiser and its schedule (optim.py: warm-up + cosine, batch-size rule, stem lr, layer decay),
gradient clipping, the per-step logging cadence, `compile`, the weight average
(callbacks/ema.py) and the epoch mean of the loss.

A subclass says what a step computes (`_step`) and what else an epoch logs (`_epoch_values`):
the supervised classifier (module.py) and MAE pre-training (mae_module.py). A new objective is
one such file and one config under conf/module/.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from ..callbacks.ema import EMA
from ..internals import log_to_loggers
from .metrics import epoch_mean
from .optim import configure_optimizer


class BaseModule(L.LightningModule):
    # rebuilt from the run's config, not pickled: a checkpoint's hparams stay plain values
    # (it loads weights_only); a subclass adds the builders it takes
    BUILT = ("model", "optimizer")
    # what a run of this module is, read from the class before anything is built (model_kind.py)
    classifies = False    # its runs end in class logits (trained.py: predict, export, eval)
    needs_labels = True   # False: learns from images alone, data.num_classes=0 allowed

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        weight_decay: float = 0.05,
        warmup_epochs: float = 0.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        lr_scaling: str = "none",
        base_batch_size: int = 256,
        batch_size: int | None = None,
        stem_lr_scale: float | None = None,
        layer_decay: float | None = None,
        ema_decay: float | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
    ):
        """`model`: what a step runs (and the optimiser trains). `compile` (the run's top-level
        `compile`, handed over by train.py): compile it here, in place, so checkpoints keep
        the parameter names; a module whose step runs another forward than the run's model's
        hands that network over (MAE: the autoencoder around the ViT)."""
        super().__init__()
        # with the subclass's own arguments: Lightning collects every __init__ on the way up
        self.save_hyperparameters(ignore=list(self.BUILT))
        self.model = model
        if compile:
            self.model.compile(mode=compile_mode)
        self.optimizer_factory = optimizer
        self.train_loss, self.val_loss, self.test_loss = epoch_mean(), epoch_mean(), epoch_mean()

    def _step(self, batch, stage: str) -> torch.Tensor:
        """The loss of `batch` at `stage` (train, val, test), its epoch means updated."""
        raise NotImplementedError

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

    def _log_step_due(self) -> bool:
        """Whether this training step is one the logger writes (every `log_every_n_steps`).
        Per-step values are logged at those steps only: each `self.log` call costs a walk over
        Lightning's result collection, a measurable part of a small model's step."""
        return (self.trainer.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def _epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        """The epoch's values of `stage`, computed once at its end (torchmetrics syncs their
        counts over processes); a subclass adds its own to the mean loss."""
        loss = getattr(self, f"{stage}_loss")
        return {f"{stage}/loss_epoch" if stage == "train" else f"{stage}/loss": loss.compute()}

    def _log_epoch(self, stage: str) -> None:
        """Logged as values, not as Metric objects: Lightning would move a logged Metric to the
        device at every step's log call (bench fit)."""
        loss = getattr(self, f"{stage}_loss")
        if loss.update_count:
            self.log_dict(self._epoch_values(stage), prog_bar=stage != "train")
        loss.reset()

    def on_train_epoch_end(self):
        self._log_epoch("train")

    def on_validation_epoch_end(self):
        self._log_epoch("val")

    def on_test_epoch_end(self):
        self._log_epoch("test")

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip the gradients here, with torch's multi-tensor clip, rather than through Lightning's
        precision plugin, which refuses optimisers that unscale inside their step (fused AdamW)
        under mixed precision. Under fp16 such an optimiser's gradients are still scaled at this
        point: unscale them first (the scaler then steps without scaling again). The norm
        before clipping is logged as train/grad_norm at logging steps, straight to the loggers
        (the same on every process: no reduction, and no `self.log` walk); only then is it
        read back to the host."""
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
            log_to_loggers(self.trainer, {"train/grad_norm": norm})

    def configure_callbacks(self):
        """The weight average (module.ema_decay): validation, test and best.ckpt use it. Once:
        a test after fitting keeps the fit's (the trainer asks again)."""
        if not self.hparams.get("ema_decay") or any(isinstance(c, EMA) for c in self.trainer.callbacks):
            return []
        return [EMA(self.hparams.ema_decay)]

    def configure_optimizers(self):
        return configure_optimizer(self.model, self.optimizer_factory, self.trainer, **self.hparams)
