"""Test callbacks for runs in subprocesses (PYTHONPATH=tests).

DumpBatches: every training batch this rank sees, as (epoch, batch, images, labels), saved to
<run folder>/batches/rank<r>.pt at the end of training, or rank<r>-interrupted.pt when the run
is interrupted. InterruptAtStep: Ctrl-C on every rank when training step `step` begins."""

from pathlib import Path

import lightning as L
import torch


class DumpBatches(L.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch_idx, batch[0].detach().clone(), batch[1].clone()))

    def _save(self, trainer, name):
        folder = Path(trainer.default_root_dir) / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.batches, folder / f"rank{trainer.global_rank}{name}.pt")

    def on_train_end(self, trainer, pl_module):
        self._save(trainer, "")

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, KeyboardInterrupt):
            self._save(trainer, "-interrupted")


class InterruptAtStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt
