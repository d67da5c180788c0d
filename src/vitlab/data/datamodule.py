"""The LightningDataModule: any dataset builder, seeded splits and subsets, transforms, loaders."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ConfigError, DataError
from ..internals import batches_processed, batches_ready, restarted_mid_epoch
from .device_augment import device_augment, runs_on_device
from .keyed import KeyedSampler, KeyedTransform
from .mix import BatchMix
from .on_device import DeviceLoader, as_uint8
from .splits import Splits, check_splits, labels_of, per_class_subset, stratified_split
from .transforms import build_transform
from .workers import start_method, worker_processes


class Transformed(Dataset):
    """Applies a transform to the images of a dataset of (image, label)."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, label = self.dataset[i]
        return self.transform(image), label


class ImageDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: Callable[[], Splits],
        num_classes: int,
        img_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Mapping | Sequence = (),
        resize: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.1,
        train_fraction: float = 1.0,
        samples_per_class: int | None = None,
        split_seed: int = 0,
        shuffle: bool = True,
        on_device: bool | str = False,
        mix=None,
        drop_last: bool | None = None,
        cache_dir: str | None = None,
        multiprocessing_context: str | None = "forkserver",
        **_,  # dataset options (data_dir, download, ...) are bound into `dataset` by the config
    ):
        """`dataset` builds the raw splits. The validation split (when the source has none) and
        the training subset for data-size studies are stratified and seeded by `split_seed`,
        which stays fixed across training seeds so every seed sees the same images.

        `batch_size` is what one loader yields: train.build passes each process its share of
        the config's global batch. `shuffle=False` keeps the training order fixed (tests that
        compare a DDP run with a single-process one on the same batches).

        `on_device=True` holds each split as one uint8 tensor on the training device and
        augments there, batched (on_device.py, device_augment.py); image folders are decoded
        once into `cache_dir` (decode_cache.py). `"auto"`: on the device when every augmentation
        has a batched version there (grey images have no colour policies), else the DataLoader.

        `mix` (timm's Mixup) mixes training batches on the device, in both loaders, into soft
        targets. `drop_last` drops the last partial training batch; None = when a batch must
        have the one shape (mixing pairs images; train.build asks for it under compile).

        Training order and augmentation are keyed by (seed, epoch, image index) (keyed.py), with
        the run's seed (train.py seeds before building this, alike on every rank): the same
        global batches and augmented images on any number of processes and workers, and a run
        resumed mid-epoch continues at the batch the loop counters say (`_resume_position`)."""
        super().__init__()
        self.seed = torch.initial_seed()
        self.dataset = dataset
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.shuffle = shuffle
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.multiprocessing_context = start_method(num_workers, multiprocessing_context)  # workers.py
        self.val_fraction, self.train_fraction = val_fraction, train_fraction
        self.samples_per_class, self.split_seed = samples_per_class, split_seed
        self.train_transform = build_transform(mean, std, augment, resize)
        self.eval_transform = build_transform(mean, std, (), resize)
        self.classes: Sequence[str] = ()
        self.splits: dict[str, Dataset] = {}
        self.mix = BatchMix.of(mix)
        self.drop_last = self.mix is not None if drop_last is None else drop_last
        if self.mix is not None and batch_size % 2:
            raise ConfigError(f"Mixup/CutMix pair the images of a batch: the batch per process "
                              f"({batch_size}) must be even; change data.batch_size")
        if on_device not in (True, False, "auto"):
            raise ConfigError(f"data.on_device={on_device!r}: use true, false or auto")
        if on_device == "auto":
            on_device = runs_on_device(augment, img_size, in_chans)
        self.on_device, self.cache_dir = on_device, cache_dir
        if on_device:  # checked now: a config error, before any data is read
            self.device_augment = device_augment(augment, img_size, in_chans)
            self.mean, self.std, self.resize = list(mean), list(std), resize
            self._device_data: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = self.dataset()
        check_splits(raw)
        if len(raw.classes) != self.num_classes:
            raise DataError(f"{raw.source} has {len(raw.classes)} classes but data.num_classes="
                            f"{self.num_classes}; set data.num_classes={len(raw.classes)}")
        self.classes = raw.classes
        train, val = raw.train, raw.val
        if val is None:  # hold out a fixed, stratified validation split from train
            val_idx, train_idx = stratified_split(labels_of(train), self.val_fraction, self.split_seed)
            train, val = Subset(train, train_idx), Subset(train, val_idx)
        self.full_train_images = len(train)  # before any share: a study's equal-steps budget
        if self.samples_per_class:
            train = Subset(train, per_class_subset(labels_of(train), self.samples_per_class,
                                                   self.split_seed))
        elif self.train_fraction < 1.0:
            train = Subset(train, stratified_split(labels_of(train), self.train_fraction,
                                                   self.split_seed)[0])
        if self.drop_last and len(train) < self.batch_size:  # Lightning would just not train
            raise DataError(f"{len(train)} training images are fewer than one batch per process "
                            f"({self.batch_size}), and partial batches are dropped (Mixup/CutMix or "
                            f"compile); lower data.batch_size or set data.drop_last=false")
        self.splits = {
            "train": KeyedTransform(train, self.train_transform, self.seed),
            "val": Transformed(val, self.eval_transform),
            "test": Transformed(raw.test, self.eval_transform),
        }

    def _device_loader(self, split: str, shuffle: bool) -> DeviceLoader:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        if (split, str(device)) not in self._device_data:  # once per split: decode and upload
            images, labels = as_uint8(self.splits[split].dataset, self.resize, self.cache_dir,
                                      threads=self.num_workers)
            self._device_data[split, str(device)] = images.to(device), labels.to(device)
        images, labels = self._device_data[split, str(device)]
        train = split == "train"
        return DeviceLoader(
            images, labels, self.batch_size if train else self.eval_batch_size,
            self.mean, self.std, shuffle=shuffle, seed=self.seed,
            augment=self.device_augment if train else None, drop_last=train and self.drop_last,
            rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1,
            epoch=(lambda: trainer.current_epoch) if trainer else None, every_image=not train,
            start=self._resume_position() if train else (0, 0),
        )

    def worker_processes(self) -> dict:
        """The loaders' num_workers and how those processes start (workers.py)."""
        return worker_processes(self.num_workers, self.multiprocessing_context)

    def _loader(self, split: str, shuffle: bool, sampler=None) -> DataLoader | DeviceLoader:
        if self.on_device:
            return self._device_loader(split, shuffle)
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            drop_last=split == "train" and self.drop_last,
            **self.worker_processes(),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # a loader's first iterator draws its workers' base seed: from its own generator,
            # not the global one (the model's dropout stream). With persistent workers that draw
            # happens once, so a resumed run would make it at another point of the stream.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Mixup/CutMix of a training batch, on its device, seeded by (seed, rank, epoch, batch)
        so that a run repeats and a resumed run draws what the uninterrupted one did."""
        trainer = self.trainer
        if self.mix is None or trainer is None or not trainer.training:
            return batch
        batch_idx = batches_ready(trainer)
        mixed = self.mix(batch[0], batch[1], seed=(torch.initial_seed(), trainer.global_rank,
                                                   trainer.current_epoch, batch_idx))
        return (*mixed, *batch[2:])  # anything after (images, labels) passes through: sample ids

    def _resume_position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained) when the fit resumed mid-epoch (an interrupt
        or SLURM requeue checkpoint), from the loop counters Lightning restored; else (0, 0).
        callbacks.exact_resume rebuilds the loader once they are restored."""
        trainer = self.trainer
        if trainer is None or not restarted_mid_epoch(trainer):
            return 0, 0
        # processed, not completed: a SIGTERM checkpoint is saved after its step ran, before it completed
        return trainer.current_epoch, batches_processed(trainer)

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        if self.on_device:
            return self._device_loader("train", shuffle=self.shuffle)
        trainer = self.trainer
        sampler = KeyedSampler(len(self.splits["train"]), self.batch_size, self.seed, self.shuffle,
                               rank=trainer.global_rank if trainer else 0,
                               world_size=trainer.world_size if trainer else 1,
                               drop_last=self.drop_last, start=self._resume_position())
        sampler.set_epoch(trainer.current_epoch if trainer else 0)  # a resumed run's: not 0
        return DataLoader(
            self.splits["train"], batch_size=self.batch_size, sampler=sampler, drop_last=self.drop_last,
            **self.worker_processes(), pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            # the workers' base seed from the loader's own generator, not the global one (the
            # model's); the images' randomness is keyed and does not use it
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _eval_loader(self, split: str) -> DataLoader | DeviceLoader:
        """Every image of the split exactly once over the ranks, whatever the world size: rank r
        takes images r, r + W, ... (Lightning's unpadded sampler, which it leaves in place, not
        its DistributedSampler, which pads by repeating images), so ranks may differ by one
        batch; the metrics' synced sums count each image once."""
        trainer = self.trainer
        world = trainer.world_size if trainer else 1
        check_eval_share(split, len(self.splits[split]), world)
        if self.on_device or world < 2:
            return self._loader(split, shuffle=False)
        sampler = UnrepeatedDistributedSampler(self.splits[split], world, trainer.global_rank,
                                               shuffle=False)
        return self._loader(split, shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader | DeviceLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        return self._eval_loader("test")


def check_eval_share(split: str, images: int, world_size: int) -> None:
    """Every rank needs at least one image to evaluate: a rank with none would wait for the
    others in the metrics' sync (and DDP's first-batch buffer sync)."""
    if 0 < images < world_size:
        raise DataError(f"the {split} split has {images} images, fewer than the {world_size} "
                        f"processes evaluating it; use fewer processes (trainer.devices)")
