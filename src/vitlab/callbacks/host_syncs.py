"""Counts what makes the host wait for the GPU in the training step, for `make gpu-check`.

CUDA's sync debug mode warns at every operation that synchronises the host with the device
(reading a value back, a copy from pageable memory, a data-dependent shape). Over `steps` steps
from step `start` — chosen between logging steps, where reading metrics back is intended — the
warnings are counted and logged as perf/host_syncs_per_step. Zero is the goal: then the host
can run ahead and keep the GPU fed. Does nothing on a CPU.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch


class HostSyncs(L.Callback):
    def __init__(self, start: int = 60, steps: int = 20):
        self.start, self.steps = start, steps
        self._catcher = self._caught = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.strategy.root_device.type == "cuda" and trainer.global_step == self.start:
            self._catcher = warnings.catch_warnings(record=True)
            self._caught = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._catcher is not None and trainer.global_step >= self.start + self.steps:
            torch.cuda.set_sync_debug_mode("default")
            syncs = sum("synchroniz" in str(w.message) for w in self._caught)
            self._catcher.__exit__(None, None, None)
            self._catcher = None
            pl_module.log("perf/host_syncs_per_step", syncs / self.steps, on_step=True, on_epoch=False)
