"""The metrics every LightningModule (and the distillation it composes) counts with: accuracies
and batch-weighted epoch means. Below them all, so none reaches up to another for them."""

from __future__ import annotations

from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy


def accuracy_metrics(num_classes: int, prefix: str, validate_args: bool = True,
                     top5: bool = True) -> MetricCollection:
    """Top-1 (and top-5 beyond 5 classes, unless `top5=False`), micro-averaged. `validate_args=False`
    skips the input checks, which read values back from the device: the training step must not wait."""
    kw = dict(average="micro", validate_args=validate_args)
    metrics = {"acc": MulticlassAccuracy(num_classes, **kw)}
    if top5 and num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, **kw)
    return MetricCollection(metrics, prefix=prefix)


def epoch_mean() -> MeanMetric:
    """A batch-weighted mean over the epoch, synced over processes when computed. Without NaN
    checks (each reads a value back to the host); a NaN loss still shows as a NaN mean."""
    try:
        return MeanMetric(nan_strategy="disable")
    except ValueError:  # torchmetrics < 1.4 has no "disable"
        return MeanMetric(nan_strategy="warn")
