"""Fail loudly and keep what is good: a non-finite loss stops the run at once, and an
interruption (Ctrl-C, SIGTERM before pre-emption) saves a checkpoint to resume from."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..errors import VitlabError


class DivergenceError(VitlabError):
    """The training loss became NaN or infinite."""


class FiniteLoss(L.Callback):
    """Stops training at the first non-finite loss. Checkpoints are never written from the
    diverged state, so the last good one (last.ckpt, best.ckpt) stays as it was."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            good = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none yet"
            raise DivergenceError(
                f"training loss is {float(loss)} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); last good checkpoint: {good}. Lower "
                f"module.optimizer.lr, raise module.warmup_epochs or check the data")


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM, save `interrupted.ckpt` next to the other checkpoints."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.path: Path | None = None

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(self.path)
