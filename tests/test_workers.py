"""How loader workers start (data/workers.py): from a forkserver by default, so that a worker
is never a fork of a process with threads (DDP's, other loaders' feeders), which can hang."""

import multiprocessing

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from vitlab.data.eval_images import spaced_images


def _datamodule(*overrides):
    torch.manual_seed(0)
    dm = instantiate(compose_config(["data=fake", "data.batch_size=16", "data.dataset.train_size=64",
                                     "data/augment=crop", *overrides]).data)
    dm.setup("fit")
    return dm


def _start(loader) -> str | None:
    context = loader.multiprocessing_context
    return context.get_start_method() if context is not None else None


def test_workers_start_from_a_forkserver_by_default_in_every_loader():
    dm = _datamodule("data.num_workers=2", "data.on_device=false")
    assert _start(dm.train_dataloader()) == _start(dm.val_dataloader()) == "forkserver"
    assert "vitlab.data" in multiprocessing.forkserver._forkserver._preload_modules
    assert _start(dm._loader("val", shuffle=False)) == "forkserver"


def test_no_workers_start_nothing_and_fork_stays_a_choice():
    assert _datamodule("data.num_workers=0", "data.on_device=false").train_dataloader().num_workers == 0
    forked = _datamodule("data.num_workers=2", "data.multiprocessing_context=fork", "data.on_device=false")
    assert _start(forked.train_dataloader()) == "fork"


def test_a_forkservers_workers_give_the_forked_workers_keyed_batches():
    """The same augmented images in the same order whichever way the workers start: the draws
    are keyed by (seed, epoch, image), not by what a worker inherited."""
    batches = {}
    for start in ("fork", "forkserver"):
        dm = _datamodule("data.num_workers=2", f"data.multiprocessing_context={start}",
                         "data.on_device=false")
        batches[start] = list(dm.train_dataloader())
        spaced = spaced_images(dm.val_dataloader(), 5)  # a callbacks' loader: the same start
        assert sum(len(y) for _, y in spaced) == 5
    for (x, y), (x2, y2) in zip(batches["fork"], batches["forkserver"], strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_an_unknown_start_method_is_refused_in_one_line():
    # Hydra wraps it; train.py prints the one line
    with pytest.raises(Exception, match="data.multiprocessing_context=.threads.: use forkserver"):
        _datamodule("data.multiprocessing_context=threads")
