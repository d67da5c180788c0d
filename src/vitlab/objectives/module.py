"""The supervised LightningModule: loss and metrics for any image classifier, over BaseModule
(optimiser, schedule, clipping, logging cadence, weight average); DeiT's distillation from
distill.py, which it composes.

It knows nothing of which embedding or positional variant the model uses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models.vit import prediction
from .base_module import BaseModule
from .distill import Distillation
from .metrics import accuracy_metrics
from .optim import freeze


class ImageClassifier(BaseModule):
    classifies = True  # its runs end in class logits: predict, export and eval read them (trained.py)

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        num_classes: int,
        label_smoothing: float = 0.0,
        freeze_layers: int | None = None,
        linear_probe: bool = False,
        distill: dict | None = None,
        **options,
    ):
        """`options`: the optimiser, schedule, weight average and compile of BaseModule."""
        distill = Distillation.options(distill)  # plain values: a checkpoint loads weights_only
        super().__init__(model, optimizer, **options)
        freeze(model, freeze_layers, linear_probe)
        # class indices, or soft targets (B, C) from Mixup/CutMix; smoothing applies to both
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # training top-1 only: a top-5 update is most of the metrics' cost in every step
        # (docs/guides/performance.md), for a value nothing reads
        self.train_metrics = accuracy_metrics(num_classes, "train/", validate_args=False, top5=False)
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        # a teacher (frozen, outside this module's state) and DeiT's loss; None without one
        self.distill = Distillation.of(distill, num_classes, model)

    def forward(self, x: torch.Tensor, heads: bool = False):
        """The model's logits; `heads`: a distilled ViT's (class, distillation) pair."""
        return self.model.forward_heads(x) if heads else self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch[0], batch[1]  # a streaming batch may carry sample ids after them
        outputs = self._outputs(x, stage)
        if self.distill is not None and stage == "train":
            loss = self.distill.loss(self.loss, outputs, x, y)
        else:
            loss = self.loss(prediction(outputs), y)
        if self.distill is not None and stage == "test":
            self.distill.update_test(outputs, x, y)
        logits = prediction(outputs)
        # under Mixup/CutMix a training image counts as its dominant label
        getattr(self, f"{stage}_metrics").update(logits.detach(), y.argmax(-1) if y.ndim > 1 else y)
        # weighted by the batch size as one value per image: with its NaN checks disabled,
        # MeanMetric drops a `weight` argument (torchmetrics issue #3434)
        getattr(self, f"{stage}_loss").update(loss.detach().expand(x.shape[0]))
        return loss

    def _outputs(self, x: torch.Tensor, stage: str):
        """The model's output; at test, a distilled ViT's two heads (their mean is its prediction)."""
        distilled = getattr(self.model, "dist_token", None) is not None
        heads = stage == "test" and self.distill is not None and distilled
        return self(x, heads=heads)

    def _epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        return {**super()._epoch_values(stage), **getattr(self, f"{stage}_metrics").compute()}

    def _log_epoch(self, stage: str) -> None:
        super()._log_epoch(stage)
        if self.distill is not None:  # distillation term, teacher agreement
            self.log_dict(self.distill.compute(stage))
        getattr(self, f"{stage}_metrics").reset()
