"""In-device-memory loader for datasets that fit (digits, CIFAR): `data.on_device=true`.

The whole split is one uint8 tensor (N, C, H, W) on the training device (the GPU, or the CPU
here). Every epoch's order comes from (seed, epoch) and each image's augmentation from (seed,
epoch, image index) (keyed.py), so they depend neither on the device nor on the number of
processes (a rank takes its share of each global batch), every epoch reshuffles, and a resumed
epoch continues at its batch. It then prepares the epoch in chunks of many batches — gather, augment
(device_augment.py), normalise, all batched on the device — and yields batches as views of
the chunk: normalised float images and int64 labels, as the DataLoader path does. Chunks
amortise the per-call cost of the augmentation library over thousands of images; the steps
between them only slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from .decode_cache import cached
from .device_augment import DeviceAugment, to_device
from .keyed import ImageKeys, rank_order


def _base_indices(dataset: Dataset) -> tuple[Dataset, torch.Tensor | None]:
    """The dataset under Subset wrappers and the indices into it (None: all of it)."""
    idx = None
    while isinstance(dataset, Subset):
        inner = torch.as_tensor(dataset.indices, dtype=torch.long)
        idx = inner if idx is None else inner[idx]
        dataset = dataset.dataset
    return dataset, idx


def _decode(dataset: Dataset, resize: int | None, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a dataset of (PIL image, label) as uint8 (N, C, H, W); image decoding
    releases the GIL, so threads decode in parallel."""
    steps = [v2.ToImage()] + ([v2.Resize(resize, antialias=True), v2.CenterCrop(resize)] if resize else [])
    to_tensor = v2.Compose(steps)

    def load(i):
        image, label = dataset[i]
        return to_tensor(image), label

    with ThreadPoolExecutor(max(1, threads)) as pool:
        items = list(pool.map(load, range(len(dataset)), chunksize=256))
    return torch.stack([x for x, _ in items]).contiguous(), torch.tensor([y for _, y in items])


def as_uint8(dataset: Dataset, resize: int | None = None, cache_dir: str | Path | None = None,
             threads: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of a dataset of (image, label), before
    any transform: tensors in memory (digits, fake) and CIFAR's arrays are sliced at once;
    image folders are decoded once, through the decode cache in `cache_dir` when given."""
    base, idx = _base_indices(dataset)
    if isinstance(getattr(base, "images", None), torch.Tensor):  # TensorImages
        images, labels = base.images, torch.as_tensor(base.targets)
    elif isinstance(getattr(base, "data", None), np.ndarray) and base.data.ndim == 4:  # CIFAR
        images = torch.from_numpy(base.data).permute(0, 3, 1, 2)
        labels = torch.as_tensor(base.targets)
    else:
        images, labels = cached(base, resize, cache_dir, lambda: _decode(base, resize, threads))
        resize = None  # decoded at that size
    if idx is not None:
        images, labels = images[idx], labels[idx]
    if resize and tuple(images.shape[-2:]) != (resize, resize):
        images = v2.functional.center_crop(v2.functional.resize(images, resize, antialias=True), resize)
    return images.contiguous(), labels.long()


class DeviceLoader:
    """Batches (normalised float images, int64 labels) from a uint8 tensor on a device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool = False,
                 augment: DeviceAugment | None = None, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, epoch: Callable[[], int | None] | None = None,
                 chunk_batches: int = 16, chunk_bytes: int = 2**28, start: tuple[int, int] = (0, 0),
                 every_image: bool = False):
        """`epoch` returns the current epoch (the trainer's); without it every pass over the
        loader counts one. `seed` is the run's, the same on every rank. DDP: each of
        `world_size` processes takes its `batch_size` share of every global batch, or with
        `every_image` (evaluation) images rank, rank + world_size, ...: every image once over
        the ranks, whose batch counts may differ by one. A chunk holds `chunk_batches` batches,
        fewer where they exceed `chunk_bytes` of float32 images (at least one batch).
        `start` = (epoch, batches): that epoch begins at that batch."""
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.seed = augment, seed
        self.rank, self.world_size, self.every_image = rank, world_size, every_image
        self.epoch_fn, self._passes, self.start = epoch, 0, start
        per_image = 4 * images[0].numel() if len(images) else 1
        self.chunk = max(1, min(chunk_batches, chunk_bytes // (per_image * batch_size))) * batch_size
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=images.device).view(shape)
        self.inv_std = 1.0 / torch.tensor(std, device=images.device).view(shape)

    def _order(self, epoch: int) -> torch.Tensor:
        if self.every_image:  # evaluation: in order, every image once over the ranks
            return torch.arange(len(self.labels))[self.rank::self.world_size]
        return rank_order(len(self.labels), self.batch_size, self.seed, epoch, self.shuffle,
                          self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        return -(-len(self._order(0)) // self.batch_size)  # every epoch has as many images

    def _epoch(self) -> int:
        epoch = self.epoch_fn() if self.epoch_fn else None
        epoch = self._passes if epoch is None else epoch
        self._passes += 1
        return epoch

    def _prepare(self, order: torch.Tensor, on_device: torch.Tensor, keys: ImageKeys) -> torch.Tensor:
        """Normalised float images of `order` (CPU indices; `on_device` the same on the
        device), augmented when training."""
        x = self.images[on_device]
        if self.augment:
            x = self.augment(x, keys.for_images(order))
        if x.dtype == torch.uint8:  # crop and flip keep uint8; other steps give floats in [0, 1]
            x = x.float().div_(255)
        return x.sub_(self.mean).mul_(self.inv_std)

    def __iter__(self):
        epoch = self._epoch()
        order = self._order(epoch)
        keys = ImageKeys(self.seed, epoch, len(self.labels))
        first = 0
        if self.start[0] == epoch and self.start[1]:  # resumed mid-epoch: the chunks as before
            first, self.start = self.start[1] * self.batch_size, (0, 0)
        for start in range(first // self.chunk * self.chunk, len(order), self.chunk):
            chunk = order[start:start + self.chunk]
            on_device = to_device(chunk, self.images.device)
            x, y = self._prepare(chunk, on_device, keys), self.labels[on_device]
            for s in range(max(0, first - start), len(chunk), self.batch_size):
                yield x[s:s + self.batch_size], y[s:s + self.batch_size]
