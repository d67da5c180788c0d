"""Training throughput, logged as `perf/…` every `log_every_n_steps` and kept for the summary:
images/s, step time, data fraction, achieved TFLOP/s and MFU (FLOPs per image from
vitlab.flops; MFU only where the device's peak is known: a GPU in flops.PEAKS, `peak_tflops`,
or the VITLAB_PEAK_TFLOPS variable).

Training wall time is every second between the end of one training step and the end of the
next, except pauses: validation and the epoch boundary (checkpoints, loggers). The time from
the end of a step (or of a pause) to the start of the next step is the data time: waiting
for the loader, including an on-device loader's per-epoch work, and the loop's own overhead.
On a GPU the host runs ahead of the device, so the device is synchronised at logging steps
only: windows between two logging steps are exact, single steps are not.

The values go straight to the loggers (internals.log_to_loggers), not through `self.log`: they
are host floats that need no reduction over processes, and each `self.log` call walks
Lightning's result collection.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from ..flops import peak_tflops, train_flops
from ..internals import log_to_loggers


class Throughput(L.Callback):
    def __init__(self, skip_steps: int = 2, peak_tflops: float | None = None):
        self.skip_steps = skip_steps  # the first steps pay for warm-up, allocation, compilation
        self.peak = peak_tflops
        self.images = 0
        self.seconds = 0.0  # training wall time after the skipped steps, data time included
        self.flops_per_image: int | None = None
        self._steps = 0
        self._mark = 0.0  # end of the last step, or of the last pause
        self._start = 0.0
        self._paused = True
        self._window = [0, 0, 0.0, 0.0]  # steps, images, wall s, data s since the last log

    @property
    def images_per_sec(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None

    def on_train_start(self, trainer, pl_module):
        if self.peak is None:
            self.peak = peak_tflops(trainer.strategy.root_device, str(trainer.precision))[0]

    def _pause(self, *_):
        self._paused = True

    def _resume(self, *_):
        self._paused, self._mark = False, time.perf_counter()

    on_validation_start = on_train_epoch_end = _pause
    on_validation_end = on_train_epoch_start = _resume

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()
        if self._paused:  # no resume hook since the pause: the gap is not training time
            self._mark, self._paused = self._start, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        log = trainer.global_step % max(1, trainer.log_every_n_steps) == 0
        if log and trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # kernels run ahead of the host: time what they did
        end = time.perf_counter()
        data, wall = self._start - self._mark, end - self._mark
        self._mark = end
        self._steps += 1
        if self._steps <= self.skip_steps:
            return
        n = batch[0].shape[0]
        self.images += n
        self.seconds += wall
        w = self._window
        w[0], w[1], w[2], w[3] = w[0] + 1, w[1] + n, w[2] + wall, w[3] + data
        if log:
            self._log(trainer, pl_module, batch[0])

    def _log(self, trainer, pl_module, images: torch.Tensor):
        steps, n, wall, data = self._window
        wall = max(wall, 1e-9)
        if self.flops_per_image is None:
            try:  # models other than vitlab's ViT have no count: no TFLOP/s then
                self.flops_per_image = train_flops(pl_module.model, tuple(images.shape[-2:]))
            except (AttributeError, TypeError, ValueError):
                self.flops_per_image = 0
        metrics = {"perf/images_per_sec": n / wall, "perf/step_time_s": (wall - data) / steps,
                   "perf/data_frac": data / wall}
        if self.flops_per_image:
            tflops = n / wall * self.flops_per_image / 1e12
            metrics["perf/tflops"] = tflops
            if self.peak:
                metrics["perf/mfu"] = tflops / self.peak
        log_to_loggers(trainer, metrics)
        self._window = [0, 0, 0.0, 0.0]
