"""Evaluation counts every validation/test image exactly once on any world size: the same
checkpoint gives the same accuracy on 1, 2 and 3 processes (gloo, CPU), on splits that 2 and 3
do not divide, through the DataLoader, the on-device loader and streaming."""

import numpy as np
import pytest
import torch
from conftest import compose_config, run_entry
from PIL import Image

from vitlab.data.datamodule import check_eval_share
from vitlab.data.on_device import DeviceLoader
from vitlab.errors import DataError
from vitlab.runs.summary import read_summary

# digits with a test split of ceil(0.0628 x 1797) = 113 = 7 x 16 + 1 images and a validation
# split of ceil(0.1 x 1684) = 169: neither divisible by 2 or 3. A padded or trimmed share changes
# the accuracy unless every image is right or every image wrong (c / 113 != (c + d) / 114).
TINY = ["model.depth=2", "data/augment=none", "data.batch_size=30", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=15", "trainer.enable_progress_bar=false",
        "+data.dataset.test_fraction=0.0628"]
TEST_IMAGES, VAL_IMAGES = 113, 169


# --- without processes ---------------------------------------------------------------------------

def test_on_device_eval_shares_hold_every_image_once_in_uneven_batches():
    images = torch.arange(29, dtype=torch.uint8).view(29, 1, 1, 1)
    seen, batches = [], []
    for rank in range(3):
        loader = DeviceLoader(images, torch.arange(29), 4, [0.0], [1 / 255], rank=rank,
                              world_size=3, every_image=True)
        got = [y.tolist() for _, y in loader]
        batches.append(len(got))
        assert len(got) == len(loader)
        seen += [i for b in got for i in b]
    assert sorted(seen) == list(range(29)) and batches == [3, 3, 3]  # 10, 10, 9 images
    training = DeviceLoader(images, torch.arange(29), 4, [0.0], [1 / 255], rank=2, world_size=3)
    assert sum(len(y) for _, y in training) == 9  # training: equal shares, the remainder left out


def test_a_split_smaller_than_the_world_is_refused_in_one_line():
    check_eval_share("test", 3, 3)
    with pytest.raises(DataError, match=r"^the val split has 2 images, fewer than the 3 processes"):
        check_eval_share("val", 2, 3)


# --- real processes ------------------------------------------------------------------------------

def evaluated(run_dir, processes: int, tmp_path, *overrides, split="test") -> dict:
    out = tmp_path / f"eval_{split}_{processes}_{len(overrides)}"
    result = run_entry("eval.py", [f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"split={split}",
                                   "trainer.accelerator=cpu", f"trainer.devices={processes}",
                                   f"hydra.run.dir={out}", *overrides], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(out)
    assert summary["world_size"] == processes
    return summary[split]


def trained(tmp_path, *overrides) -> tuple:
    """A run folder of `python src/train.py <overrides>` (on one process) and its summary."""
    run_dir = tmp_path / "run"
    result = run_entry("train.py", [*overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, read_summary(run_dir)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir, summary = trained(tmp_path_factory.mktemp("digits"), *TINY)
    assert 0.05 < summary["test"]["test/acc"] < 0.95  # neither all right nor all wrong
    return run_dir, summary


@pytest.mark.slow
@pytest.mark.parametrize("loader", [["+data.on_device=false"], ["+data.on_device=true"]],
                         ids=["dataloader", "on_device"])
def test_the_same_checkpoint_gives_the_same_test_acc_on_1_2_and_3_processes(digits_run, tmp_path, loader):
    run_dir, summary = digits_run
    accs = [evaluated(run_dir, n, tmp_path, *loader)["test/acc"] for n in (1, 2, 3)]
    assert accs == [summary["test"]["test/acc"]] * 3  # exactly: counts, not float sums
    assert round(accs[0] * TEST_IMAGES, 3).is_integer()  # a count (float32)


@pytest.mark.slow
def test_val_acc_and_so_the_best_checkpoint_do_not_depend_on_the_world_size(digits_run, tmp_path):
    run_dir, summary = digits_run
    accs = [evaluated(run_dir, n, tmp_path, split="val")["val/acc"] for n in (1, 3)]
    assert accs == [summary["val"]["val/acc"]] * 2
    assert round(accs[0] * VAL_IMAGES, 3).is_integer()  # a count (float32)


@pytest.mark.slow
def test_a_three_process_run_validates_tests_and_counts_its_confusion_matrix_like_one(tmp_path):
    """Training on 3 processes (global batch 30 = 3 x 10): its own val/acc (which picks the
    best checkpoint), test/acc and confusion matrix count each image once, as a one-process
    evaluation of its checkpoint does."""
    run_dir = tmp_path / "ddp"
    result = run_entry("train.py", [*TINY, "trainer=ddp_cpu", "trainer.devices=3",
                                    f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["batch"]["world_size"] == 3
    assert evaluated(run_dir, 1, tmp_path)["test/acc"] == summary["test"]["test/acc"]
    assert evaluated(run_dir, 1, tmp_path, split="val")["val/acc"] == summary["val"]["val/acc"]
    counts = np.loadtxt(run_dir / "confusion_matrix.csv", delimiter=",")
    assert counts.sum() == TEST_IMAGES
    assert np.trace(counts) / TEST_IMAGES == pytest.approx(summary["test"]["test/acc"], abs=1e-6)


# --- streaming -----------------------------------------------------------------------------------

def uneven_image_folder(root, counts=((8, 8, 8), (5, 5, 5), (10, 10, 9))):
    """Random 12x12 JPEGs of classes a, b, c: 24 train, 15 val, 29 test (7 x 4 + 1)."""
    rng = np.random.default_rng(0)
    for split, per_class in zip(("train", "val", "test"), counts, strict=True):
        for c, n in zip("abc", per_class, strict=True):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i:03d}.jpg")
    return root


STREAM = ["data=streaming", "data.num_classes=3", "data.img_size=16", "data.batch_size=6",
          "data.num_workers=0", "data.pin_memory=false"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    pytest.importorskip("litdata")
    from vitlab.data.shards import convert

    root = tmp_path_factory.mktemp("stream")
    convert(uneven_image_folder(root / "folder"), root / "shards", workers=1, chunk_size=8, verbose=False)
    return root / "shards"


def test_streaming_refuses_a_split_without_a_batch_for_every_rank(shards, monkeypatch):
    """litdata gives the ranks but the last floor(floor(N / batch) / W) batches; with fewer
    batches than ranks some would get none and wait in the metrics' sync."""
    from hydra.utils import instantiate

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("GLOBAL_RANK", "0")
    cfg = compose_config([*STREAM, f"data.input_dir={shards}", "+data.eval_batch_size=6"]).data
    dm = instantiate(cfg)
    dm.setup("fit")
    with pytest.raises(DataError, match=r"^the val split has 15 images, fewer than one batch of 6 "
                                        r"for each of the 3 processes"):
        dm.val_dataloader()
    dm.eval_batch_size = 4
    assert dm.test_dataloader() is not None  # 29 // 4 = 7 batches for 3 ranks


@pytest.mark.slow
def test_streaming_gives_the_same_test_acc_on_1_2_and_3_processes(shards, tmp_path):
    run_dir, summary = trained(tmp_path, *TINY[:2], *TINY[3:6], *STREAM, f"data.input_dir={shards}")
    accs = [evaluated(run_dir, n, tmp_path)["test/acc"] for n in (1, 2, 3)]  # batches of 6: 4 ranks at most
    assert accs == [summary["test"]["test/acc"]] * 3
    assert round(accs[0] * 29, 3).is_integer()  # a count (float32)
