"""Strong augmentation in both loaders: per-image random parameters on the device, Mixup/CutMix
soft targets, seeding, the decode-once cache, and every option through the CLI."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from conftest import compose_config, run_entry
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import v2

from vitlab.data.datasets.imagefolder import imagefolder
from vitlab.data.decode_cache import cache_file
from vitlab.data.device_augment import DeviceAugment, PerImagePolicy, device_augment
from vitlab.data.keyed import ImageKeys
from vitlab.data.on_device import DeviceLoader, as_uint8

STRONG = ["randaugment", "trivialaugment", "autoaugment"]


def _datamodule(overrides, seed=0):
    torch.manual_seed(seed)  # the data module seeds its loaders from the run's seed
    dm = instantiate(compose_config(["data=fake", "data.batch_size=16", *overrides]).data)
    dm.setup("fit")
    return dm


def _first_batch(dm, mixed=True):
    dm.trainer = None
    x, y = next(iter(dm.train_dataloader()))
    return dm.mix(x, y, seed=(0, 0, 0, 1)) if mixed and dm.mix else (x, y)


@pytest.mark.parametrize("on_device", [True, False])
def test_mixup_cutmix_targets_are_soft_and_sum_to_one(on_device):
    dm = _datamodule(["data/mix=mixup_cutmix", f"data.on_device={on_device}"])
    assert dm.drop_last  # pairs of images: the last, odd batch is dropped
    for seed in range(6):  # both Mixup and CutMix batches, by the switch probability
        x, y = dm.train_dataloader().__iter__().__next__()
        x, soft = dm.mix(x.clone(), y, seed=(seed, 0, 0, 0))
        assert soft.shape == (16, 10) and soft.dtype.is_floating_point
        torch.testing.assert_close(soft.sum(1), torch.ones(16))
        # each image's target mixes its label with its partner's (the reversed batch) by one weight
        hard = torch.nn.functional.one_hot(y, 10).float()
        lam = soft[0, y[0]] if y[0] != y[-1] else soft[1, y[1]]
        torch.testing.assert_close(soft, lam * hard + (1 - lam) * hard.flip(0))
        assert 0 < lam < 1


def test_no_mix_configured_means_hard_labels_and_every_image_kept():
    dm = _datamodule([])
    assert dm.mix is None and not dm.drop_last


def test_an_odd_batch_cannot_be_mixed():
    with pytest.raises(Exception, match="must be even"):
        _datamodule(["data/mix=mixup_cutmix", "data.batch_size=15"])


@pytest.mark.parametrize("augment", STRONG)
def test_each_image_of_a_batch_draws_its_own_parameters_on_the_device(augment):
    """The same image 64 times in one batch comes out in many different ways."""
    cfg = compose_config(["data=fake", f"data/augment={augment}"])
    steps = device_augment(instantiate(cfg.data.augment), 32)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(64, -1, -1, -1).clone()
    out = steps(image, ImageKeys(seed=0, epoch=0, size=64))
    distinct = {tuple(o.flatten()[:512].tolist()) for o in (out * 255).round().to(torch.uint8)}
    assert len(distinct) > 32, len(distinct)


def test_per_image_policy_sends_each_image_through_the_operations_it_drew():
    class Tag(torch.nn.Module):  # operation k adds 10**k: the sum records which ops ran
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x + 10.0**self.k

    policy = PerImagePolicy([Tag(k) for k in range(4)], num_ops=2)
    out = policy(torch.zeros(200, 1, 1, 1), ImageKeys(seed=1, epoch=0, size=200), 1)
    digits = [[int(d) for d in f"{int(v):04d}"] for v in out.flatten().tolist()]
    assert all(sorted(d) == [0, 0, 1, 1] for d in digits)  # two distinct ops per image
    assert len({tuple(d) for d in digits}) == 6  # all pairs of 4 ops occur


@pytest.mark.parametrize("on_device", [True, False])
def test_the_same_seed_gives_the_same_batches(on_device):
    overrides = ["data/augment=randaugment", "data/mix=mixup_cutmix", f"data.on_device={on_device}"]
    a = _first_batch(_datamodule(overrides, seed=3))
    b = _first_batch(_datamodule(overrides, seed=3))
    c = _first_batch(_datamodule(overrides, seed=4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_device_augmentation_does_not_move_the_global_generator():
    steps = device_augment(instantiate(compose_config(["data=fake", "data/augment=randaugment"])
                                       .data.augment), 32)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    steps(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), ImageKeys(seed=0, epoch=0, size=8))
    assert torch.equal(torch.rand(3), expected)  # dropout & co. draw as without augmentation


def test_grey_images_get_crop_and_flip_on_the_device_but_not_colour_policies():
    assert isinstance(device_augment({"flip": v2.RandomHorizontalFlip()}, 32, in_chans=1), DeviceAugment)
    with pytest.raises(Exception, match="3-channel"):
        _datamodule(["data.in_chans=1", "data/augment=trivialaugment", "data.on_device=true",
                     "data.mean=[0.5]", "data.std=[0.5]"])


def test_chunks_hold_whole_batches_and_cover_the_epoch():
    images, labels = torch.zeros(100, 3, 4, 4, dtype=torch.uint8), torch.arange(100)
    loader = DeviceLoader(images, labels, batch_size=8, mean=[0.0] * 3, std=[1.0] * 3, shuffle=True,
                          chunk_batches=3, drop_last=True)
    assert loader.chunk == 24
    seen = torch.cat([y for _, y in loader])
    assert len(seen) == 96 and len(set(seen.tolist())) == 96


# ---- decode once


def _folder(root, n=6, size=8):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                color = (i * 40, 255 - i * 40, 128 if c == "a" else 0)
                Image.new("RGB", (size, size), color).save(root / split / c / f"{i}.png")
    return root


def test_an_image_folder_is_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    train = imagefolder(str(root)).train
    decoded = []
    getitem = type(train).__getitem__
    monkeypatch.setattr(type(train), "__getitem__", lambda self, i: decoded.append(i) or getitem(self, i))
    x1, y1 = as_uint8(train, resize=8, cache_dir=cache)
    assert len(decoded) == 12 and cache_file(cache, root / "train", 8).is_file()
    x2, y2 = as_uint8(imagefolder(str(root)).train, resize=8, cache_dir=cache)
    assert len(decoded) == 12  # nothing decoded the second time
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.dtype == torch.uint8
    assert as_uint8(imagefolder(str(root)).train, resize=4, cache_dir=cache)[0].shape[-1] == 4


def test_a_changed_folder_or_a_corrupt_cache_is_decoded_again_with_a_warning(tmp_path, caplog):
    root, cache = _folder(tmp_path / "data"), tmp_path / "cache"
    first, _ = as_uint8(imagefolder(str(root)).train, cache_dir=cache)
    image = root / "train" / "a" / "0.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image)
    os.utime(image, ns=(1, 1))  # another file content and time
    with caplog.at_level(logging.WARNING):
        changed, _ = as_uint8(imagefolder(str(root)).train, cache_dir=cache)
    assert "changed" in caplog.text and not torch.equal(first, changed)
    assert torch.equal(changed[0, :, 0, 0], torch.tensor([1, 2, 3], dtype=torch.uint8))
    cache_file(cache, root / "train", None).write_bytes(b"not a cache")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again, _ = as_uint8(imagefolder(str(root)).train, cache_dir=cache)
    assert "unreadable" in caplog.text and torch.equal(again, changed)
    assert as_uint8(imagefolder(str(root)).train, cache_dir=cache)[0].shape == changed.shape


# ---- through the command line


def test_every_augmentation_option_runs_through_the_cli(tmp_path):
    result = run_entry("train.py", [
        "-m", "data=fake", "data.in_chans=3", "data/augment=basic,randaugment,trivialaugment,autoaugment",
        "data.on_device=true,false", "data/mix=mixup_cutmix", "debug=fast", "data.batch_size=16",
        "~callbacks.attention", "~callbacks.confusion_matrix", "~callbacks.pos_similarity",
        f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == 8
    assert all('"completed"' in s.read_text() for s in summaries)


def _jpeg_cifar(root, per_class):
    """A CIFAR-10-shaped JPEG folder: 10 classes of 32 px images, train/ and test/."""
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", per_class), ("test", 2)):
        for c in range(10):
            (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(root / split / f"class{c}" / f"{i}.jpg")
    return root


@pytest.mark.slow  # end-to-end runs: kept out of the 10-minute fast suite
@pytest.mark.parametrize("recipe", ["cifar10_pure", "cifar10_hybrid"])
def test_the_cifar_recipes_run_on_jpeg_folders_on_a_cpu(tmp_path, recipe):
    """The issue's command on a CPU (`trainer=cpu debug=fast`), on a small folder: a batch of
    16 instead of the recipe's 512, everything else the recipe's (compiled, on-device
    AutoAugment + erasing, Mixup/CutMix)."""
    root = _jpeg_cifar(tmp_path / "cifar10", per_class=4)
    command = [f"experiment={recipe}", "data=imagefolder", f"data.data_dir={root}",
               "data.num_classes=10", "data.img_size=32", "trainer=cpu", "debug=fast",
               f"paths.cache_dir={tmp_path / 'cache'}"]
    result = run_entry("train.py", [*command, "data.batch_size=16",
                                    f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"completed"' in (tmp_path / "run" / "summary.json").read_text()
    # at the recipe's own batch, 30 training images (10 held out) make no batch: said, not skipped
    result = run_entry("train.py", [*command, f"hydra.run.dir={tmp_path / 'too_small'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 30 training images are fewer than one batch per process (512), and partial "
        "batches are dropped (Mixup/CutMix or compile); lower data.batch_size or set "
        "data.drop_last=false")
