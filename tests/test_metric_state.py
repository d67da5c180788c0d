"""The training epoch's metric accumulators in a mid-epoch checkpoint (callbacks/metric_state.py):
kept per rank, put back on the same world size, folded onto rank 0 on another."""

import torch
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from vitlab.callbacks.metric_state import metric_states, restore_metric_states


class Metrics(nn.Module):
    def __init__(self):
        super().__init__()
        self.train_acc = MulticlassAccuracy(4, average="micro")
        self.train_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(4, average="micro")


def _update(m: Metrics, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        m.train_acc.update(torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g))
        m.train_loss.update(torch.rand(8, generator=g))
        m.val_acc.update(torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g))


def test_only_the_training_accumulators_are_kept():
    m = Metrics()
    _update(m, 0)
    saved = metric_states(m)
    assert set(saved) == {"train_acc", "train_loss"} and saved["train_acc"]["count"] == 3


def test_each_rank_gets_its_own_back_on_the_same_world_size():
    ranks = []
    for r in (0, 1):
        m = Metrics()
        _update(m, r)
        ranks.append(metric_states(m))
    for r in (0, 1):
        fresh, want = Metrics(), Metrics()
        restore_metric_states(fresh, ranks, rank=r, world=2)
        _update(want, r)
        assert torch.equal(fresh.train_acc.compute(), want.train_acc.compute())
        assert torch.equal(fresh.train_loss.compute(), want.train_loss.compute())
        assert fresh.train_loss.update_count == 3 and fresh.val_acc.update_count == 0


def test_another_world_size_folds_every_rank_onto_rank_0():
    """Two ranks' accumulators resumed on one process: what the two ranks' synced values were."""
    two = [Metrics(), Metrics()]
    for r, m in enumerate(two):
        _update(m, r)
    ranks = [metric_states(m) for m in two]
    one = Metrics()
    restore_metric_states(one, ranks, rank=0, world=1)
    both = Metrics()
    _update(both, 0)
    _update(both, 1)
    assert torch.equal(one.train_acc.compute(), both.train_acc.compute())
    assert torch.allclose(one.train_loss.compute(), both.train_loss.compute())
    assert one.train_loss.update_count == 6
    other = Metrics()  # a rank beyond 0 starts the epoch's rest empty
    restore_metric_states(other, ranks, rank=1, world=3)
    assert other.train_acc.update_count == 0
