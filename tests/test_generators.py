"""The training loaders never touch the model's random streams: no call reaches a device
generator (torch.cuda / xpu / mtia seeding or state), and the process's global generators (torch's
CPU one, Python's, NumPy's: dropout and drop-path draw from them) are where they were after an
epoch of every loader — DataLoader with 0 and 2 workers, on the device, streaming, each
augmentation and mix policy.

On a GPU a `torch.manual_seed` per image (what KeyedTransform once did) reseeded CUDA's generator,
so the model's dropout stream was the last image's key of every batch; on the CPU the same call
only queued a lazy CUDA seed, which formatted a stack trace per image (a third of the default
run's time). Counting the calls shows both without a GPU."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

DEVICE_RNG = ("manual_seed", "manual_seed_all", "seed", "seed_all", "initial_seed",
              "get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all")
AUGMENTS = ["none", "crop", "basic", "randaugment", "trivialaugment", "autoaugment"]
# a worker process seeds its own generators when it starts (torch's worker loop, Lightning's
# worker_init_fn): that process holds no model, so its seeding reaches no model's stream
TORCH_SEEDING = ("torch/random.py", "torch/cuda/", "torch/xpu/", "torch/mtia/", "torch/_dynamo/",
                 "torch/_compile.py")  # torch.manual_seed's own frames, up to whoever called it
WORKER_START = ("torch/utils/data/_utils/worker.py", "lightning/fabric/utilities/seed.py")


def _caller_outside_torch_random() -> str:
    frame = sys._getframe(2)
    while frame and any(part in frame.f_code.co_filename for part in TORCH_SEEDING):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "?"


@pytest.fixture
def device_rng_calls(monkeypatch, tmp_path):
    """The calls that reach a device generator, in this process and in forked loader workers
    (written to a file: a worker's count would not come back otherwise)."""
    log = tmp_path / "device_rng_calls.txt"
    log.touch()
    for backend in (torch.cuda, torch.xpu, torch.mtia):
        for name in DEVICE_RNG:
            if not hasattr(backend, name):
                continue

            def record(*args, _name=f"{backend.__name__}.{name}", **kwargs):
                where = _caller_outside_torch_random()
                if not any(w in where for w in WORKER_START):
                    with open(log, "a") as f:
                        f.write(f"{_name} from {where}\n")

            monkeypatch.setattr(backend, name, record)
    return lambda: log.read_text().splitlines()


def _global_streams():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _same_streams(a, b) -> bool:
    return (torch.equal(a[0], b[0]) and a[1] == b[1]
            and all(np.array_equal(x, y) for x, y in zip(a[2], b[2], strict=True)))


def _one_epoch(dm) -> int:
    """One epoch of the training loader, mixed as the data module's batch hook mixes it."""
    dm.trainer = None
    images = 0
    for batch_idx, (x, y, *_) in enumerate(dm.train_dataloader()):
        if dm.mix is not None:
            x, y = dm.mix(x, y, seed=(0, 0, 0, batch_idx))
        images += len(x)
    return images


def _check(dm, device_rng_calls):
    torch.manual_seed(7), random.seed(7), np.random.seed(7)  # the model's streams, say
    before, seeded = _global_streams(), len(device_rng_calls())
    assert _one_epoch(dm) > 0
    assert device_rng_calls()[seeded:] == []
    assert _same_streams(before, _global_streams()), "a training loader moved a global generator"


def _datamodule(*overrides):
    torch.manual_seed(0)  # the data module keys its draws by the run's seed
    dm = instantiate(compose_config(["data=fake", "data.batch_size=32", "data.dataset.train_size=128",
                                     *overrides]).data)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("mix", ["none", "mixup_cutmix"])
@pytest.mark.parametrize("augment", AUGMENTS)
@pytest.mark.parametrize("on_device", [False, True])
def test_in_process_training_loaders_touch_no_model_generator(augment, mix, on_device, device_rng_calls):
    dm = _datamodule(f"data/augment={augment}", f"data/mix={mix}", f"data.on_device={on_device}")
    _check(dm, device_rng_calls)


@pytest.mark.slow
def test_loader_workers_touch_no_model_generator(device_rng_calls):
    # forked workers: they inherit the counter (a forkserver's or spawned worker would not, and
    # runs the same data code)
    dm = _datamodule("data/augment=randaugment", "data/mix=mixup_cutmix", "data.num_workers=2",
                     "data.multiprocessing_context=fork")
    _check(dm, device_rng_calls)


def test_the_digits_default_loader_touches_no_model_generator(device_rng_calls):
    torch.manual_seed(0)
    dm = instantiate(compose_config([]).data)
    dm.setup("fit")
    _check(dm, device_rng_calls)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_loaders_touch_no_model_generator(workers, tmp_path, device_rng_calls):
    pytest.importorskip("litdata")
    from test_streaming import image_folder

    from vitlab.data.shards import convert

    convert(image_folder(tmp_path / "folder"), tmp_path / "shards", workers=1, chunk_size=8, verbose=False)
    torch.manual_seed(0)
    dm = instantiate(compose_config(["data=streaming", f"data.input_dir={tmp_path / 'shards'}",
                                     "data.num_classes=3", "data.img_size=16", "data.batch_size=8",
                                     f"data.num_workers={workers}", "data.pin_memory=false",
                                     "data.multiprocessing_context=fork",  # the counter in the workers
                                     "data/augment=randaugment", "data/mix=mixup_cutmix"]).data)
    dm.setup("fit")
    _check(dm, device_rng_calls)


def test_the_counter_sees_a_per_image_torch_manual_seed(device_rng_calls):
    """The counter itself: the call KeyedTransform once made per image is counted."""
    torch.manual_seed(3)
    assert len(device_rng_calls()) >= 1 and "manual_seed_all" in device_rng_calls()[0]
    assert Path(__file__).name in device_rng_calls()[0]
