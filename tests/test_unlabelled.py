"""data=unlabelled (data/datasets/unlabelled.py): every image under a folder, recursively, no
labels; MAE pre-trains on it, a classifier refuses it in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, compose_config, run_entry
from hydra.utils import instantiate
from PIL import Image

from vitlab.data.datasets.unlabelled import unlabelled
from vitlab.data.on_device import as_uint8
from vitlab.errors import ConfigError, DataError
from vitlab.runs.build_model import build_model
from vitlab.training.config_checks import validate


def image_folder(root, n=40):
    """n PNGs of varied sizes, half nested two levels deep, and a file that is not an image."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("flat" if i % 2 else "deep/er")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + i % 5, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


FAST = ["data=unlabelled", "data.img_size=16", "data.batch_size=8", "data.num_workers=0", "model.depth=1"]


def test_every_image_under_the_folder_split_into_fixed_disjoint_train_and_test(tmp_path):
    root = image_folder(tmp_path / "images")
    splits = unlabelled(str(root), test_fraction=0.1, split_seed=0)
    train, test = set(splits.train.indices), set(splits.test.indices)
    assert len(splits.train.dataset) == 40 and not train & test and len(test) == 4
    assert {p.split("/")[-2] for p, _ in splits.train.dataset.samples} == {"flat", "er"}
    assert set(unlabelled(str(root), split_seed=0).test.indices) == test  # seeded
    assert set(unlabelled(str(root), split_seed=1).test.indices) != test
    images, labels = as_uint8(splits.train, resize=16, cache_dir=tmp_path / "cache")  # data.on_device
    assert images.shape == (36, 3, 16, 16) and set(labels.tolist()) == {0}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"has 0 image\(s\)"):
        unlabelled(str(tmp_path / "empty"))


def test_mae_trains_on_it_and_a_classifier_refuses_it(tmp_path):
    root = image_folder(tmp_path / "images")
    cfg = compose_config(["experiment=mae_pretrain", f"data.data_dir={root}", *FAST, "tags=[]"])
    validate(cfg)  # (tags=[]: Hydra's runtime choices exist only inside a Hydra run)
    data = instantiate(cfg.data)
    data.setup()
    assert (len(data.splits["train"]), len(data.splits["val"]), len(data.splits["test"])) == (32, 4, 4)
    module = instantiate(cfg.module, model=build_model(cfg.model, pretrained=False))
    images, _ = next(iter(data.train_dataloader()))
    assert images.shape == (8, 3, 16, 16)
    loss, _, _ = module(images)
    assert loss.isfinite()
    supervised = compose_config([f"data.data_dir={root}", *FAST])
    with pytest.raises(ConfigError, match=r"^data.num_classes=0: these images have no labels "
                                          r"\(data=unlabelled\), so only MAE pre-training can use them"):
        validate(supervised)
    per_class = compose_config(["experiment=mae_pretrain", f"data.data_dir={root}", *FAST, "tags=[]",
                                "data.samples_per_class=4"])
    with pytest.raises(ConfigError, match=r"^data.samples_per_class=4: these images have no classes "
                                          r"\(data.num_classes=0\); take a share with data.train_fraction$"):
        validate(per_class)


@pytest.mark.slow
def test_mae_pretrain_on_an_unlabelled_folder_through_the_cli(tmp_path):
    root = image_folder(tmp_path / "images")
    run = run_entry("train.py", ["experiment=mae_pretrain", f"data.data_dir={root}", *FAST, "trainer=cpu",
                                 "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'run'}",
                                 "trainer.enable_progress_bar=false"], ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"]["test/loss"] > 0
