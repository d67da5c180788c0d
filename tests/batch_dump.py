"""A test callback for runs in subprocesses (PYTHONPATH=tests): every training batch this rank
sees, as (epoch, batch, images, labels), saved to <run folder>/batches/rank<r>.pt at the end."""

from pathlib import Path

import lightning as L
import torch


class DumpBatches(L.Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch_idx, batch[0].detach().clone(), batch[1].clone()))

    def on_train_end(self, trainer, pl_module):
        folder = Path(trainer.default_root_dir) / "batches"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.batches, folder / f"rank{trainer.global_rank}.pt")
