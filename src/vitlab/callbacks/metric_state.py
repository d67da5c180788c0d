"""The training epoch's metric accumulators, kept in a mid-epoch checkpoint: a run resumed in the
middle of an epoch logs that epoch's train/acc and train/loss_epoch over all its batches, as the
uninterrupted run does (torchmetrics' states are not in a module's state_dict, and Lightning does
not checkpoint them).

Which metrics: every torchmetrics Metric of the LightningModule whose attribute path has a part
starting with `train` (ImageClassifier's train_metrics and train_loss, the distillation's
train_term). Validation and test restart from their first batch on resume, so theirs are not kept.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat, dim_zero_sum

from ..internals import metric_reduction, metric_state_names, metric_updates, set_metric_updates

log = logging.getLogger(__name__)


def train_metrics(module: nn.Module) -> dict[str, Metric]:
    return {name: m for name, m in module.named_modules()
            if isinstance(m, Metric) and any(part.startswith("train") for part in name.split("."))}


def _cpu(value):
    return [v.detach().cpu() for v in value] if isinstance(value, list) else value.detach().cpu()


def metric_states(module: nn.Module) -> dict[str, dict]:
    """This process's accumulators, on the CPU, in plain types (a checkpoint loads weights_only)."""
    return {name: {"count": metric_updates(m),
                   "states": {s: _cpu(getattr(m, s)) for s in metric_state_names(m)}}
            for name, m in train_metrics(module).items()}


def _fold(name: str, metric: Metric, ranks: list[dict]) -> dict | None:
    """The accumulators of several processes as one process's: sums added, lists joined (what
    the metric's own sync does). None where a state reduces otherwise."""
    states = {}
    for s in metric_state_names(metric):
        values = [r[name]["states"][s] for r in ranks]
        reduce = metric_reduction(metric, s)
        if reduce is dim_zero_sum:
            states[s] = torch.stack(values).sum(0)
        elif reduce is dim_zero_cat:
            states[s] = [v for value in values for v in (value if isinstance(value, list) else [value])]
        else:
            return None
    return {"count": sum(r[name]["count"] for r in ranks), "states": states}


def restore_metric_states(module: nn.Module, ranks: list[dict], rank: int, world: int) -> None:
    """Put back the accumulators saved by `ranks` (one entry per process of the saved run). The
    same world size: each process its own. Another one (re-planned, data/keyed.py): rank 0 holds
    them all folded, the others start empty, so the epoch's synced values are the same."""
    for name, metric in train_metrics(module).items():
        if not all(name in r for r in ranks):
            continue
        if len(ranks) == world:
            saved = ranks[rank][name]
        elif rank == 0:
            saved = _fold(name, metric, ranks)
            if saved is None:
                log.warning("%s: cannot fold its accumulators over %d processes; the resumed epoch's "
                            "value covers the batches after the resume", name, len(ranks))
                continue
        else:
            continue
        device = metric.device
        for s, value in saved["states"].items():
            setattr(metric, s, [v.to(device) for v in value] if isinstance(value, list) else value.to(device))
        set_metric_updates(metric, saved["count"])
