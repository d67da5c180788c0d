"""Datasets and the data module: splits, subsets, on-disk formats and bad data."""

import hashlib
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision import datasets

from vitlab.data.datasets.cifar import cifar10
from vitlab.data.datasets.digits import digits
from vitlab.data.datasets.imagefolder import imagefolder
from vitlab.errors import DataError


def setup(cfg):
    dm = instantiate(cfg.data)
    dm.setup("fit")
    return dm


def test_digits_ship_offline_with_a_fixed_stratified_test_split():
    splits = digits(img_size=32)
    assert (len(splits.train), len(splits.test)) == (1437, 360)
    image, label = splits.train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.uint8 and 0 <= label < 10
    assert set(Counter(splits.test.targets.tolist()).values()) <= {35, 36, 37}
    assert torch.equal(digits(img_size=32).test.images, splits.test.images)  # fixed


def test_default_data_module_batches_normalised_images(compose_cfg):
    dm = setup(compose_cfg())
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert -1.5 < x.mean() < 1.5
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 1437


def test_validation_split_is_stratified_and_fixed_across_training_seeds(compose_cfg):
    a = setup(compose_cfg(["seed=1"]))
    b = setup(compose_cfg(["seed=2"]))
    assert a.splits["val"].dataset.indices.tolist() == b.splits["val"].dataset.indices.tolist()
    val_labels = Counter(int(a.splits["val"][i][1]) for i in range(len(a.splits["val"])))
    assert len(val_labels) == 10 and max(val_labels.values()) - min(val_labels.values()) <= 2


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_train_fraction_is_stratified_and_seeded(compose_cfg, fraction):
    full = setup(compose_cfg())
    dm = setup(compose_cfg([f"data.train_fraction={fraction}"]))
    other = setup(compose_cfg([f"data.train_fraction={fraction}", "data.split_seed=1"]))
    n = len(full.splits["train"])
    assert abs(len(dm.splits["train"]) - fraction * n) <= 10
    counts = Counter(dm.splits["train"][i][1] for i in range(len(dm.splits["train"])))
    full_counts = Counter(full.splits["train"][i][1] for i in range(n))
    assert all(abs(counts[c] - fraction * full_counts[c]) <= 1 for c in range(10))
    assert dm.splits["train"].dataset.indices.tolist() != other.splits["train"].dataset.indices.tolist()


def test_samples_per_class(compose_cfg):
    dm = setup(compose_cfg(["data.samples_per_class=5"]))
    labels = Counter(dm.splits["train"][i][1] for i in range(len(dm.splits["train"])))
    assert labels == {c: 5 for c in range(10)}


@pytest.mark.parametrize("augment", ["none", "crop", "basic", "randaugment"])
def test_augmentation_presets_run_on_grey_and_colour_images(compose_cfg, augment):
    for data in ("digits", "fake"):
        dm = setup(compose_cfg([f"data={data}", f"data/augment={augment}"]))
        x, _ = dm.splits["train"][0]
        assert x.shape[-2:] == (32, 32) and x.dtype == torch.float32


def test_on_device_auto_takes_the_device_where_the_augmentation_runs_there(compose_cfg):
    from vitlab.data.on_device import DeviceLoader

    digits = setup(compose_cfg([]))  # the default: digits, random crop
    assert digits.on_device is True and isinstance(digits.train_dataloader(), DeviceLoader)
    grey_policy = setup(compose_cfg(["data/augment=randaugment"]))  # a colour policy on grey images
    assert grey_policy.on_device is False and not isinstance(grey_policy.train_dataloader(), DeviceLoader)
    with pytest.raises(Exception, match="3-channel"):  # asked for explicitly: refused (Hydra wraps it)
        setup(compose_cfg(["data/augment=randaugment", "data.on_device=true"]))
    with pytest.raises(Exception, match=r"data.on_device='yes': use true, false or auto"):
        setup(compose_cfg(["data.on_device=yes"]))


def test_fake_data_has_the_configured_shape(compose_cfg):
    dm = setup(compose_cfg(["data=fake", "data.img_size=48", "data.num_classes=3"]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (128, 3, 48, 48) and int(y.max()) < 3


# --- CIFAR in torchvision's on-disk format, written by the test -----------------------------

def write_cifar10(root, n=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(name):
        data = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(data))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    train = [batch(f"data_batch_{i}") for i in range(1, 6)]
    test = [batch("test_batch")]
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return train, test, hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()


def test_cifar10_reads_torchvision_on_disk_format(tmp_path, monkeypatch, compose_cfg):
    train, test, meta_md5 = write_cifar10(tmp_path)
    # torchvision checks the real files' md5 sums: point it at the sums of the files we wrote
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test)
    monkeypatch.setitem(datasets.CIFAR10.meta, "md5", meta_md5)
    splits = cifar10(data_dir=str(tmp_path))
    assert (len(splits.train), len(splits.test)) == (100, 20)
    assert splits.classes == [f"c{i}" for i in range(10)]
    dm = setup(compose_cfg(["data=cifar10", f"data.data_dir={tmp_path}", "data.num_workers=0",
                            "data.batch_size=8"]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32)
    assert len(dm.splits["val"]) == 10  # 10 % of train, one per class


def test_missing_cifar_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"data.data_dir=.*set data.download=true"):
        cifar10(data_dir=str(tmp_path / "nowhere"))


# --- image folders -----------------------------------------------------------------------------

def write_folder(root, split, classes, n=4, size=12):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / c / f"{i}.png")


def test_imagefolder_takes_validation_from_train_when_there_is_none(tmp_path, compose_cfg):
    write_folder(tmp_path, "train", ["a", "b", "c"], n=10)
    write_folder(tmp_path, "test", ["a", "b", "c"], n=2)
    dm = setup(compose_cfg(["data=imagefolder", f"data.data_dir={tmp_path}", "data.num_classes=3",
                            "data.img_size=16", "data.num_workers=0"]))
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (27, 3, 6)
    x, _ = dm.splits["train"][0]
    assert x.shape == (3, 16, 16)


def test_imagefolder_uses_its_val_folder(tmp_path):
    for split in ("train", "val", "test"):
        write_folder(tmp_path, split, ["a", "b"], n=2)
    assert len(imagefolder(str(tmp_path)).val) == 4


def test_imagefolder_class_mismatch_names_the_difference(tmp_path):
    write_folder(tmp_path, "train", ["a", "b", "c"])
    write_folder(tmp_path, "test", ["a", "b", "d"])
    with pytest.raises(DataError, match=r"missing in test: \['c'\], only in test: \['d'\]"):
        imagefolder(str(tmp_path))


def test_missing_data_folder_is_named(tmp_path):
    write_folder(tmp_path, "train", ["a", "b"])
    with pytest.raises(DataError, match=r"test does not exist"):
        imagefolder(str(tmp_path))
    with pytest.raises(DataError, match=r"data.data_dir=.*nowhere does not exist"):
        imagefolder(str(tmp_path / "nowhere"))


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path):
    write_folder(tmp_path, "train", ["a", "b"])
    write_folder(tmp_path, "test", ["a", "b"])
    bad = tmp_path / "train" / "a" / "1.png"
    bad.write_bytes(b"not an image")
    splits = imagefolder(str(tmp_path))
    with pytest.raises(DataError, match=r"cannot read image .*a/1.png"):
        [splits.train[i] for i in range(len(splits.train))]
    skipping = imagefolder(str(tmp_path), skip_corrupt=True)
    assert len([skipping.train[i] for i in range(len(skipping.train))]) == 8
    assert skipping.train.skipped == {str(bad)}


def test_fewer_than_two_classes_is_an_error(tmp_path, compose_cfg):
    write_folder(tmp_path, "train", ["only"])
    write_folder(tmp_path, "test", ["only"])
    dm = instantiate(compose_cfg(["data=imagefolder", f"data.data_dir={tmp_path}",
                                  "data.num_classes=2"]).data)
    with pytest.raises(DataError, match=r"found 1 class\(es\) \(only\); a classifier needs at least 2"):
        dm.setup("fit")


def test_num_classes_must_match_the_data(tmp_path, compose_cfg):
    write_folder(tmp_path, "train", ["a", "b", "c"])
    write_folder(tmp_path, "test", ["a", "b", "c"])
    dm = instantiate(compose_cfg(["data=imagefolder", f"data.data_dir={tmp_path}",
                                  "data.num_classes=5"]).data)
    with pytest.raises(DataError, match=r"has 3 classes but data.num_classes=5"):
        dm.setup("fit")


def test_an_empty_split_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path, "train", ["a", "b"])
    for c in ("a", "b"):
        (tmp_path / "test" / c).mkdir(parents=True)  # class folders without images
    with pytest.raises(DataError, match=r"test split is empty") as info:
        imagefolder(str(tmp_path))
    assert "\n" not in str(info.value)
