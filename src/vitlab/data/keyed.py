"""Random numbers keyed by what they are for, not by who draws them or when.

An epoch's order comes from (seed, epoch), an image's augmentation from (seed, epoch, its index
in the split). Keyed draws are the same on any number of processes and workers and after a
resume at any step: nothing of them is saved in a checkpoint or agreed between ranks, and the
training loaders never touch the global generators (which stay the model's: dropout, drop-path).

A global batch of B images is split across W processes as consecutive shares of B / W: a run on
2 processes trains on exactly the global batches of a run on 1.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch.utils.data import Dataset, DistributedSampler

_MASK = 2**64 - 1
ORDER, AUGMENT = 1, 2  # what a key is for: two uses of one (seed, epoch) never share a stream


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of integers (splitmix64 over them): distinct keys give
    unrelated seeds, in a microsecond, so it can run for every image."""
    h = 0x9E3779B97F4A7C15
    for k in keys:
        h = (h ^ (int(k) & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _MASK
        h ^= h >> 29
    return h >> 1


def generator(*keys: int) -> torch.Generator:
    """A CPU torch generator seeded by `derive_seed(*keys)`."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def rank_order(n: int, batch: int, seed: int, epoch: int, shuffle: bool = True, rank: int = 0,
               world_size: int = 1, drop_last: bool = False) -> torch.Tensor:
    """The split's indices this rank trains on in `epoch`, in order, for a per-rank batch of
    `batch`: the epoch's order (keyed by seed and epoch) cut into global batches of
    batch * world_size, of which rank r takes the r-th share. A last partial global batch is
    dropped with `drop_last`, else shared as evenly as the ranks allow (one image at least)."""
    order = torch.randperm(n, generator=generator(seed, ORDER, epoch)) if shuffle else torch.arange(n)
    global_batch = batch * world_size
    whole = n // global_batch * global_batch
    mine = order[:whole].view(-1, world_size, batch)[:, rank].reshape(-1)
    rest = order[whole:]
    if drop_last or len(rest) < world_size:  # a rank without an image would stop the others
        return mine
    return torch.cat([mine, rest.tensor_split(world_size)[rank]])


class KeyedSampler(DistributedSampler):
    """(index, epoch) keys of this rank's images, in `rank_order`. `start` = (epoch, batches):
    that epoch skips its first batches (a resumed epoch continues where the interrupted one
    stopped).
    A DistributedSampler, so that Lightning keeps it under DDP instead of replacing it."""

    def __init__(self, size: int, batch: int, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, start: tuple[int, int] = (0, 0)):
        self.size, self.batch, self.seed, self.shuffle = size, batch, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.start = 0, start

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        return rank_order(self.size, self.batch, self.seed, self.epoch, self.shuffle, self.rank,
                          self.world_size, self.drop_last)

    def __len__(self) -> int:
        return len(self._order())

    def __iter__(self):
        order = self._order()
        start_epoch, batches = self.start
        if self.epoch == start_epoch and batches:
            order, self.start = order[batches * self.batch:], (0, 0)
        return iter([(i, self.epoch) for i in order.tolist()])


def _keyed(key) -> bool:
    """Whether a dataset key is an (index, epoch) pair of a KeyedSampler, not a plain index."""
    return isinstance(key, tuple) and key[1] is not None


class KeyedTransform(Dataset):
    """A random transform applied to the images of a dataset of (image, label), each image under
    torch's and Python's generators seeded by (seed, epoch, index), from the (index, epoch) keys
    of a KeyedSampler. Plain indices are transformed unseeded. torchvision's transforms draw from
    torch's global generator, timm's from Python's: both are forked around the call, so the
    caller's streams are untouched and a worker's seed does not matter."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int = 0):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if not _keyed(key):
            image, label = self.dataset[key[0] if isinstance(key, tuple) else key]
            return self.transform(image), label
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list) -> list:
        """A batch of keys at once (the DataLoader's batched fetch): the generators are saved
        and restored once around the batch, not around every image; each image still draws
        under its own seed, so the values are those of one key at a time. Plain indices draw
        from the caller's streams, so are not forked."""
        if not all(_keyed(key) for key in keys):
            return [self[key] for key in keys]
        state = random.getstate()
        # the CPU generator alone: torch.manual_seed would also reseed every device's (the
        # model's dropout stream on a GPU), and queue a lazy CUDA call per image
        with torch.random.fork_rng(devices=[]):
            try:
                return [self._draw(index, epoch) for index, epoch in keys]
            finally:
                random.setstate(state)

    def _draw(self, index: int, epoch: int):
        image, label = self.dataset[index]
        seed = derive_seed(self.seed, AUGMENT, epoch, index)
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        return self.transform(image), label


class OwnStreams:
    """Runs a function under torch's CPU and Python's global generators swapped for streams of
    its own (seeded by `seed`, carried on from call to call), and puts the caller's back: for
    library transforms that can only draw from the global generators, run in a process whose
    global generators belong to someone else (the model's, in a loader without workers)."""

    def __init__(self, seed: int):
        self.torch_state = torch.Generator().manual_seed(derive_seed(seed)).get_state()
        self.python_state = random.Random(derive_seed(seed)).getstate()

    def __call__(self, fn: Callable, *args):
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        torch.set_rng_state(self.torch_state)
        random.setstate(self.python_state)
        try:
            return fn(*args)
        finally:
            self.torch_state, self.python_state = torch.get_rng_state(), random.getstate()
            torch.set_rng_state(torch_state)
            random.setstate(python_state)


class ImageKeys:
    """The per-image random parameters of one epoch for a batched (on-device) augmentation.

    Each draw site names a `salt`; its values for the whole split are drawn once per epoch from
    (seed, epoch, salt) and image i takes row i, so an image's crop or flip does not depend on
    the chunk, batch or rank it arrives in. Tables are cached for the epoch (N values per site)."""

    def __init__(self, seed: int, epoch: int, size: int, ids: torch.Tensor | None = None,
                 tables: dict | None = None):
        self.seed, self.epoch, self.size = seed, epoch, size
        self.ids = torch.arange(size) if ids is None else ids  # CPU indices into the split
        self._tables = {} if tables is None else tables

    def for_images(self, ids: torch.Tensor) -> ImageKeys:
        """These keys for the images `ids` (CPU indices into the split), sharing the tables."""
        return ImageKeys(self.seed, self.epoch, self.size, ids, self._tables)

    def _table(self, salt: tuple[int, ...], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        if salt not in self._tables:
            self._tables[salt] = draw(generator(self.seed, AUGMENT, self.epoch, *salt))
        return self._tables[salt][self.ids]

    def rand(self, *salt: int, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Uniform [0, 1) values, (len(ids), *shape)."""
        return self._table((1, *salt, *shape), lambda g: torch.rand(self.size, *shape, generator=g))

    def randint(self, low: int, high: int, *salt: int) -> torch.Tensor:
        """Integers in [low, high), one per image."""
        return self._table((2, low, high, *salt),
                           lambda g: torch.randint(low, high, (self.size,), generator=g))

    def group_seed(self, *salt: int) -> int:
        """One seed for these images together (a library that draws a whole batch's parameters):
        the same images give the same seed, whatever else is around them."""
        per_image = self._table((3, *salt), lambda g: torch.randint(0, 2**62, (self.size,), generator=g))
        return derive_seed(*salt, int(per_image.sum()) & _MASK, len(per_image))
