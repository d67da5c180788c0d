"""Was the run still improving when it stopped? And, optionally, stop it on a plateau.

A report must not state an answer from an arm that was cut off mid-climb: every run records its
validation curve's gain over the last quarter of training in summary.json (`convergence`), and
the report marks and excludes arms whose runs were still improving.
"""

from __future__ import annotations

import math

import lightning as L


def split_at_last_quarter(curve: list[tuple[int, float]], total_steps: int) -> tuple[list, list]:
    """val/acc before and within the last quarter of training (step > 0.75 x total_steps)."""
    cut = 0.75 * total_steps
    return [acc for step, acc in curve if step <= cut], [acc for step, acc in curve if step > cut]


def last_quarter_gain(curve: list[tuple[int, float]], total_steps: int) -> float | None:
    """Best validation accuracy in the last quarter of training minus the best before it.

    `curve` is (optimiser step, val/acc) at every validation; the last quarter is the points with
    step > 0.75 x total_steps. Positive: the best score was still rising; 0 or less: it was reached
    earlier. None when either part has no point (too few validations to tell).
    """
    before, after = split_at_last_quarter(curve, total_steps)
    if not before or not after:
        return None
    return max(after) - max(before)


def noise(accuracy: float, images: int | None) -> float | None:
    """Half-width of a 95 % binomial band on a validation accuracy measured on `images` images,
    1.96 sqrt(p (1 - p) / n): a gain inside it is one the validation set's size cannot tell from
    noise (on the digits' 144 images, one image is 0.7 points and the band at 95 % is 3.6)."""
    if not images:
        return None
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / images)


def convergence(curve: list[tuple[int, float]], total_steps: int, threshold: float,
                val_images: int | None = None) -> dict:
    """The summary's record: converged when the last quarter gained less than `threshold` and less
    than the validation set's noise (when its size is known)."""
    gain = last_quarter_gain(curve, total_steps)
    best_before = max(split_at_last_quarter(curve, total_steps)[0], default=None)
    band = noise(best_before, val_images) if best_before is not None else None
    needed = max(threshold, band or 0.0)
    return {"last_quarter_gain": None if gain is None else round(gain, 6),
            "converged": None if gain is None else gain < needed,
            "threshold": threshold, "val_images": val_images,
            "noise": None if band is None else round(band, 6), "validations": len(curve)}


class Convergence(L.Callback):
    """Records val/acc at every validation; with `patience`, stops the run once val/acc has not
    improved by more than `min_delta` for that many validations (an early stop on a plateau)."""

    def __init__(self, threshold: float = 0.005, patience: int | None = None, min_delta: float = 0.0,
                 monitor: str = "val/acc"):
        self.threshold, self.patience, self.min_delta, self.monitor = threshold, patience, min_delta, monitor
        self.curve: list[tuple[int, float]] = []
        self.stopped_at: int | None = None
        self._waited = 0
        self.trained_steps = 0
        self.val_images: int | None = None  # how many images val/acc is measured on
        self._counted = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and self.val_images is None:
            self._counted += len(batch[0])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self.val_images is None:  # the first validation's count (every rank's share, DDP)
            self.val_images = self._counted * getattr(trainer, "world_size", 1) or None
        best = max((acc for _, acc in self.curve), default=None)
        self.curve.append((trainer.global_step, value))
        self._waited = 0 if best is None or value > best + self.min_delta else self._waited + 1
        if self.patience is not None and self._waited >= self.patience and not trainer.should_stop:
            trainer.should_stop = True
            self.stopped_at = trainer.global_step

    @property
    def summary_values(self) -> dict:
        if not self.curve:
            return {}
        total = self.trained_steps or self.curve[-1][0]  # the steps trained (to an early stop)
        record = convergence(self.curve, total, self.threshold, self.val_images)
        record.update(early_stopping=self.patience is not None, stopped_early=self.stopped_at is not None,
                      stopped_at_step=self.stopped_at)
        return {"convergence": record}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trained_steps = trainer.global_step
