"""Was the run still improving when it stopped? And, optionally, stop it on a plateau.

A report must not state an answer from an arm that was cut off mid-climb: every run records its
validation curve's gain over the last quarter of training in summary.json (`convergence`), and
the report marks and excludes arms whose runs were still improving.
"""

from __future__ import annotations

import lightning as L


def last_quarter_gain(curve: list[tuple[int, float]], total_steps: int) -> float | None:
    """Best validation accuracy in the last quarter of training minus the best before it.

    `curve` is (optimiser step, val/acc) at every validation; the last quarter is the points with
    step > 0.75 x total_steps. Positive: the best score was still rising; 0 or less: it was reached
    earlier. None when either part has no point (too few validations to tell).
    """
    cut = 0.75 * total_steps
    before = [acc for step, acc in curve if step <= cut]
    after = [acc for step, acc in curve if step > cut]
    if not before or not after:
        return None
    return max(after) - max(before)


def convergence(curve: list[tuple[int, float]], total_steps: int, threshold: float) -> dict:
    """The summary's record: converged when the last quarter gained less than `threshold`."""
    gain = last_quarter_gain(curve, total_steps)
    return {"last_quarter_gain": None if gain is None else round(gain, 6),
            "converged": None if gain is None else gain < threshold,
            "threshold": threshold, "validations": len(curve)}


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

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
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
        record = convergence(self.curve, total, self.threshold)
        record.update(early_stopping=self.patience is not None, stopped_early=self.stopped_at is not None,
                      stopped_at_step=self.stopped_at)
        return {"convergence": record}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trained_steps = trainer.global_step
