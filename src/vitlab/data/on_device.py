"""In-device-memory loader for datasets that fit (digits, CIFAR): `data.on_device=true`.

The whole split is one uint8 tensor (N, C, H, W) on the training device (the GPU, or the CPU
here). A batch is cut by indexing, augmented in batch on the device (random crop with zero
padding, horizontal flip) and normalised there: no workers, no per-image Python, no
host-to-device copy after the first. Batches are what the DataLoader path yields: normalised
float images and int64 labels. Order and augmentation come from a CPU generator seeded by
(seed, epoch), so they do not depend on the device and every epoch reshuffles.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from ..errors import ConfigError


def augment_options(augment: Mapping | Sequence, img_size: int) -> dict:
    """The crop padding and flip probability of a conf/data/augment list; anything else has
    no on-device version and is refused (one line naming the key)."""
    opts = {"padding": 0, "flip": 0.0}
    for t in augment.values() if isinstance(augment, Mapping) else augment:
        if isinstance(t, v2.RandomCrop) and isinstance(t.padding, (int, list, tuple)) \
                and t.padding_mode == "constant" and tuple(t.size) == (img_size, img_size):
            pad = [t.padding] if isinstance(t.padding, int) else list(t.padding)
            if len(set(pad)) != 1:
                raise ConfigError("data.on_device=true: the random crop needs equal padding on all sides")
            opts["padding"] = int(pad[0])
        elif isinstance(t, v2.RandomHorizontalFlip):
            opts["flip"] = float(t.p)
        else:
            raise ConfigError(f"data.on_device=true supports random crop with zero padding and flip only, "
                              f"not {type(t).__name__}; use data/augment=basic, crop or none")
    return opts


def _base_indices(dataset: Dataset) -> tuple[Dataset, torch.Tensor | None]:
    """The dataset under Subset wrappers and the indices into it (None: all of it)."""
    idx = None
    while isinstance(dataset, Subset):
        inner = torch.as_tensor(dataset.indices, dtype=torch.long)
        idx = inner if idx is None else inner[idx]
        dataset = dataset.dataset
    return dataset, idx


def as_uint8(dataset: Dataset, resize: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, C, H, W), labels int64 (N,)) of a dataset of (image, label), before
    any transform: tensors in memory (digits, fake) and CIFAR's arrays are sliced at once;
    anything else (image folders) is decoded image by image, once."""
    base, idx = _base_indices(dataset)
    if isinstance(getattr(base, "images", None), torch.Tensor):  # TensorImages
        images, labels = base.images, torch.as_tensor(base.targets)
    elif isinstance(getattr(base, "data", None), np.ndarray) and base.data.ndim == 4:  # CIFAR
        images = torch.from_numpy(base.data).permute(0, 3, 1, 2)
        labels = torch.as_tensor(base.targets)
    else:
        items = [base[int(i)] for i in (idx if idx is not None else range(len(base)))]
        head = [v2.ToImage()] + ([v2.Resize(resize, antialias=True), v2.CenterCrop(resize)] if resize else [])
        to_tensor = v2.Compose(head)
        images = torch.stack([to_tensor(img) for img, _ in items])
        return images.contiguous(), torch.tensor([y for _, y in items], dtype=torch.long)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    if resize and tuple(images.shape[-2:]) != (resize, resize):
        images = v2.functional.center_crop(v2.functional.resize(images, resize, antialias=True), resize)
    return images.contiguous(), labels.long()


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int) -> torch.Tensor:
    """Per-image random crop of the zero-padded batch at (top, left) in [0, 2·padding], then
    a horizontal flip where `flip`: all images at once, two gathers (rows, then columns)."""
    B, C, H, W = x.shape
    if not padding:
        return torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = F.pad(x, (padding,) * 4)
    rows = top[:, None] + torch.arange(H, device=x.device)
    cols = left[:, None] + torch.arange(W, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is a reversed column index
    x = x.gather(2, rows[:, None, :, None].expand(B, C, H, x.shape[-1]))
    return x.gather(3, cols[:, None, None, :].expand(B, C, H, W))


class DeviceLoader:
    """Batches (normalised float images, int64 labels) from a uint8 tensor on a device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: Sequence[float], std: Sequence[float], shuffle: bool = False,
                 padding: int = 0, flip: float = 0.0, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, epoch: Callable[[], int | None] | None = None):
        """`epoch` returns the current epoch (the trainer's); without it every pass over the
        loader counts one. DDP: each of `world_size` processes takes an equal share."""
        self.images, self.labels = images, labels.to(images.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.padding, self.flip, self.seed = padding, flip, seed
        self.rank, self.world_size = rank, world_size
        self.epoch_fn, self._passes = epoch, 0
        shape = (1, -1, 1, 1)  # normalise from uint8 in one step: (x - 255·mean) / (255·std)
        self.shift = torch.tensor(mean, device=images.device).view(shape) * 255
        self.scale = 1.0 / (torch.tensor(std, device=images.device).view(shape) * 255)

    def _size(self) -> int:
        return len(self.labels) // self.world_size if self.world_size > 1 else len(self.labels)

    def __len__(self) -> int:
        n, b = self._size(), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _generator(self) -> torch.Generator:
        epoch = self.epoch_fn() if self.epoch_fn else None
        epoch = self._passes if epoch is None else epoch
        self._passes += 1
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def __iter__(self):
        gen, n = self._generator(), len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[self.rank::self.world_size][: self._size()]
        m = len(order)
        top = torch.randint(0, 2 * self.padding + 1, (m,), generator=gen)
        left = torch.randint(0, 2 * self.padding + 1, (m,), generator=gen)
        flip = torch.rand(m, generator=gen) < self.flip
        device = self.images.device
        order, top, left, flip = (t.to(device, non_blocking=True) for t in (order, top, left, flip))
        augment = self.padding > 0 or self.flip > 0
        for i in range(len(self)):
            s = slice(i * self.batch_size, (i + 1) * self.batch_size)
            x = self.images[order[s]]
            if augment:
                x = crop_flip(x, top[s], left[s], flip[s], self.padding)
            x = x.to(torch.float32, memory_format=torch.contiguous_format)
            yield x.sub_(self.shift).mul_(self.scale), self.labels[order[s]]
