"""An exponential moving average of the weights (DeiT's recipe; timm's ModelEma), through
Lightning's own `EMAWeightAveraging`: after every optimiser step
`average = decay · average + (1 - decay) · weights`; validation runs on the average, so
val/acc and best.ckpt are the average's, and every checkpoint's `state_dict` holds the average
(what evaluation, analysis and `model.pretrained=` read) with the live weights beside it for an
exact resume. The module adds it when `module.ema_decay` is set.

Three things differ from Lightning's callback as it stands:
  * the update is one fused `lerp` per dtype over the floating-point tensors; integer buffers
    (a relative table's gather index, BatchNorm's batch count) are copied, never averaged
    (averaging an integer index in floating point can round it to its neighbour);
  * outside fitting (trainer.test on best.ckpt) a checkpoint's average stays loaded: Lightning's
    hook would put the live weights back, so the test would not see the weights val/acc chose;
  * a decay too slow for the run (the initial weights still weigh over 5 % in the final
    average) is named in one warning line at the start.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def ema_update(decay: float):
    """AveragedModel's multi_avg_fn: lerp the floating-point tensors, copy the others."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], _count) -> None:
        if averaged[0].is_floating_point() or averaged[0].is_complex():
            torch._foreach_lerp_(averaged, current, 1 - decay)
        else:
            torch._foreach_copy_(averaged, current)

    return update


class EMA(EMAWeightAveraging):
    def __init__(self, decay: float, **kwargs):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay} must lie in (0, 1), e.g. 0.999")
        super().__init__(decay=decay, **kwargs)
        self._kwargs.pop("avg_fn")  # the AveragedModel's update: fused, integers copied
        self._kwargs["multi_avg_fn"] = ema_update(decay)
        self.decay = decay

    @property
    def summary_values(self) -> dict:
        return {"ema_decay": self.decay}

    def on_fit_start(self, trainer, pl_module) -> None:
        steps = trainer.estimated_stepping_batches
        if math.isfinite(steps) and rank_zero_only.rank == 0:
            left = self.decay ** steps  # the initial weights' share of the final average
            if left > 0.05:
                log.warning("module.ema_decay=%s: after this run's %d optimiser steps the initial "
                            "weights still weigh %.0f %% in the average; a decay of %.4g or less "
                            "(1 - 3/steps) forgets them", self.decay, steps, 100 * left,
                            1 - 3 / max(steps, 4))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
