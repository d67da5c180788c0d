"""Training throughput, logged as `perf/…` every `log_every_n_steps` and kept for the summary:
images/s, step time, data fraction (time between steps: waiting for data and loop overhead),
achieved TFLOP/s and MFU (FLOPs per image from vitlab.flops; MFU only where the device's
peak is known: a GPU in flops.PEAKS, `peak_tflops`, or the VITLAB_PEAK_TFLOPS variable)."""

from __future__ import annotations

import time

import lightning as L
import torch

from ..flops import peak_tflops, train_flops


class Throughput(L.Callback):
    def __init__(self, skip_steps: int = 2, peak_tflops: float | None = None):
        self.skip_steps = skip_steps  # the first steps pay for warm-up and allocation
        self.peak = peak_tflops
        self.images = 0
        self.seconds = 0.0
        self.flops_per_image: int | None = None
        self._start = self._end = 0.0
        self._steps = 0
        self._paused = False  # validation or an epoch boundary since the last step
        self._window = [0, 0, 0.0, 0.0, 0.0]  # steps, images, step s, gap s, start time

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None

    def on_train_start(self, trainer, pl_module):
        if self.peak is None:
            self.peak = peak_tflops(trainer.strategy.root_device, str(trainer.precision))[0]

    def on_train_epoch_start(self, trainer, pl_module):
        self._paused = True

    def on_validation_end(self, trainer, pl_module):
        self._paused = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()
        if self._steps > self.skip_steps:  # the time since the last step: data, or a pause
            self._window[4 if self._paused else 3] += self._start - self._end
        self._paused = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        log = trainer.global_step % max(1, trainer.log_every_n_steps) == 0
        if log and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # kernels run ahead of the host: time what they did
        self._end = time.perf_counter()
        elapsed = self._end - self._start
        self._steps += 1
        if self._steps <= self.skip_steps:
            self._window = [0, 0, 0.0, 0.0, self._end]
            return
        n = batch[0].shape[0]
        self.images += n
        self.seconds += elapsed
        w = self._window
        w[0], w[1], w[2] = w[0] + 1, w[1] + n, w[2] + elapsed
        if log:
            self._log(pl_module, batch[0])

    def _log(self, pl_module, images: torch.Tensor):
        steps, n, step_s, gap_s, start = self._window
        wall = max(self._end - start, 1e-9)
        if self.flops_per_image is None:
            try:  # models other than vitlab's ViT have no count: no TFLOP/s then
                self.flops_per_image = train_flops(pl_module.model, tuple(images.shape[-2:]))
            except (AttributeError, TypeError, ValueError):
                self.flops_per_image = 0
        metrics = {"perf/images_per_sec": n / wall, "perf/step_time_s": step_s / steps,
                   "perf/data_frac": gap_s / wall}
        if self.flops_per_image:
            tflops = n / wall * self.flops_per_image / 1e12
            metrics["perf/tflops"] = tflops
            if self.peak:
                metrics["perf/mfu"] = tflops / self.peak
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self._window = [0, 0, 0.0, 0.0, self._end]
