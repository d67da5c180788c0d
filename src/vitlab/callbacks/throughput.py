"""Training throughput: images/s and step time, logged as `perf/…` and kept for the summary."""

from __future__ import annotations

import time

import lightning as L


class Throughput(L.Callback):
    def __init__(self, skip_steps: int = 2):
        self.skip_steps = skip_steps  # the first steps pay for warm-up and allocation
        self.images = 0
        self.seconds = 0.0
        self._start = 0.0
        self._steps = 0

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        elapsed = time.perf_counter() - self._start
        self._steps += 1
        if self._steps <= self.skip_steps:
            return
        n = batch[0].shape[0]
        self.images += n
        self.seconds += elapsed
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            pl_module.log_dict({"perf/images_per_sec": n / elapsed, "perf/step_time_s": elapsed},
                               on_step=True, on_epoch=False)
