"""Unreadable images in an image folder: skipped and counted with data.skip_corrupt=true whatever
the loader's worker count and the world size, else one `error:` line naming the file."""

import numpy as np
import pytest
from conftest import run_entry
from PIL import Image
from torch.utils.data import DataLoader

from vitlab.data.datasets.imagefolder import imagefolder
from vitlab.errors import DataError, run_or_exit
from vitlab.runs.summary import read_summary


def folder_with_bad_images(root, bad=("train/a/3.png", "train/b/7.png", "test/a/1.png"),
                           splits=("train", "test")):
    rng = np.random.default_rng(0)
    for split in splits:
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png")
    for path in bad:
        (root / path).write_bytes(b"not an image")
    return root, {str(root / p) for p in bad}


def images(dataset, workers: int) -> int:
    loader = DataLoader(dataset, batch_size=4, num_workers=workers, collate_fn=lambda b: b)
    return sum(len(batch) for batch in loader)


def test_skipped_images_are_counted_from_loader_workers(tmp_path):
    root, bad = folder_with_bad_images(tmp_path)
    splits = imagefolder(str(root), skip_corrupt=True)
    assert images(splits.train, workers=2) == 16  # the next readable image stands in
    assert splits.train.skipped == {p for p in bad if "/train/" in p}
    assert images(splits.test, workers=0) == 16 and splits.test.skipped == {p for p in bad if "/test/" in p}


def test_an_unreadable_image_in_a_worker_ends_with_one_line_naming_it(tmp_path, capsys):
    root, _ = folder_with_bad_images(tmp_path, bad=("train/a/3.png",))
    splits = imagefolder(str(root))
    with pytest.raises(DataError):  # as DataLoader re-raises it: with the worker's traceback
        images(splits.train, workers=1)
    with pytest.raises(SystemExit) as exit_:
        run_or_exit(images, splits.train, 1)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith(f"error: cannot read image {root}/train/a/3.png: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


IMAGEFOLDER = ["model.depth=1", "data=imagefolder", "data.num_classes=2", "data.img_size=16",
               "data.batch_size=8", "data.num_workers=2", "data.pin_memory=false", "trainer.max_epochs=1",
               "trainer.enable_progress_bar=false", "~callbacks", "+trainer.enable_checkpointing=false"]


@pytest.mark.slow
def test_a_two_process_run_with_two_workers_each_counts_every_skipped_image(tmp_path):
    """The bad images lie where every image is read once over the ranks (validation and test:
    test/a/1 is read by rank 1, test/b/6 by rank 0), so the summary needs both ranks' notes."""
    root, bad = folder_with_bad_images(tmp_path / "data", bad=("val/a/1.png", "test/a/1.png", "test/b/6.png"),
                                       splits=("train", "val", "test"))
    run_dir = tmp_path / "run"
    result = run_entry("train.py", [*IMAGEFOLDER, f"data.data_dir={root}", "data.skip_corrupt=true",
                                    "trainer=ddp_cpu", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["batch"]["world_size"] == 2
    assert summary["skipped_images"] == sorted(bad)


@pytest.mark.slow
def test_training_on_an_unreadable_image_stops_with_one_error_line(tmp_path):
    root, _ = folder_with_bad_images(tmp_path / "data", bad=("train/b/7.png",))
    result = run_entry("train.py", [*IMAGEFOLDER, f"data.data_dir={root}", "data.val_fraction=0.5",
                                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {root}/train/b/7.png"), \
        result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
