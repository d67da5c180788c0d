"""Fail loudly and keep what is good: a non-finite loss stops the run at once, and an
interruption (Ctrl-C, SIGTERM before pre-emption) saves a checkpoint to resume from."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..errors import VitlabError


class DivergenceError(VitlabError):
    """The training loss became NaN or infinite."""


def last_checkpoint(trainer) -> str | None:
    """The newest checkpoint file the trainer's checkpoint callbacks have written."""
    paths = [Path(p) for c in trainer.checkpoint_callbacks
             for p in (c.last_model_path, c.best_model_path) if p and Path(p).is_file()]
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else None


def check_due(trainer, every_n_steps: int | None = None) -> bool:
    """Whether this step reads a flag kept on the device (and, with several processes, decides
    it across ranks): every step on a CPU, where reading costs nothing; on a GPU every
    `every_n_steps` (default: the log interval), the same steps on every rank."""
    every = every_n_steps or max(1, trainer.log_every_n_steps)
    return trainer.strategy.root_device.type == "cpu" or trainer.global_step % every == 0


class FiniteLoss(L.Callback):
    """Stops training at the first non-finite loss. Checkpoints are never written from the
    diverged state, so the last good one (last.ckpt, best.ckpt) stays as it was.

    On a GPU, reading the loss every step would make the host wait for the device each step:
    instead the step of the first non-finite loss is kept on the device and read every
    `check_every_n_steps` (default: the trainer's log interval) and before validation, so the
    error still names the first bad step; on a CPU it is read every step (it costs nothing)."""

    def __init__(self, check_every_n_steps: int | None = None):
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # (step, epoch, loss) of the first bad loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        # on a CPU the loss is read at once (it costs nothing) and only a bad one is kept
        if loss is not None and (loss.device.type != "cpu" or not math.isfinite(loss.item())):
            self._record(trainer, loss.detach().double())
        if self._due(trainer):  # the same steps on every rank: the check is collective
            self._check(trainer)

    def _record(self, trainer, loss: torch.Tensor) -> None:
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((3,), -1.0, dtype=torch.double, device=loss.device)
        bad = ~torch.isfinite(loss) & (self._first_bad[0] < 0)
        # scalars travel as kernel arguments: no copy to the device, nothing waits
        found = torch.stack([torch.full_like(loss, trainer.global_step),
                             torch.full_like(loss, trainer.current_epoch), loss])
        self._first_bad = torch.where(bad, found, self._first_bad)

    def _due(self, trainer) -> bool:
        return check_due(trainer, self.check_every_n_steps)

    def on_validation_start(self, trainer, pl_module):  # before this epoch's checkpoints
        self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._check(trainer)

    def _check(self, trainer) -> None:
        first = self._first_bad
        if first is None:
            if trainer.world_size == 1:  # nothing bad kept, no one else to ask
                return
            first = torch.full((3,), -1.0, dtype=torch.double, device=trainer.strategy.root_device)
        rank = 0
        if trainer.world_size > 1:  # decided across ranks: all stop at the same step, same line
            every = trainer.strategy.all_gather(first).reshape(-1, 3)
            steps = torch.where(every[:, 0] >= 0, every[:, 0], torch.inf)
            rank = int(torch.argmin(steps))  # the earliest bad step; the lowest rank on a tie
            first = every[rank]
        step, epoch, loss = first.tolist()
        if step < 0:
            return
        where = f" on rank {rank}" if trainer.world_size > 1 else ""
        good = last_checkpoint(trainer) or "none yet"
        raise DivergenceError(
            f"training loss is {loss} at step {int(step)} (epoch {int(epoch)}){where}; last good "
            f"checkpoint: {good}. Lower module.optimizer.lr, raise module.warmup_epochs or check the data")


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM, save `interrupted.ckpt` next to the other checkpoints."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.path: Path | None = None

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.path = self.dirpath / "interrupted.ckpt"
            trainer.save_checkpoint(self.path)
