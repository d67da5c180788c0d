"""Training from litdata shards (`data=streaming`): local, file:// or object storage, any scale.

`python -m vitlab.data.shards` writes the shards (shards.py). Each split is a litdata
StreamingDataset: its chunks are split over ranks and workers, streamed through a bounded
local cache when remote, and the images are decoded and augmented in the loader's workers
with the same transforms as the image-folder path; Mixup/CutMix mix on the device as there.

Epochs: every training sample once per epoch over all ranks, in equal batch counts per rank
(litdata drops the last < world_size x batch_size samples of a shuffled epoch in DDP, or with
`drop_last`); the order is drawn from (`seed`, epoch). Validation and test: every sample exactly
once over the ranks, in stored order, whatever the world size (no drop_last; see `_eval_loader`).
Resume: the position in the stream is taken from the trainer's own restored counters (epoch,
batches done in it) when an epoch starts, not from Lightning's loader-state restore, which skips
epoch-boundary checkpoints, never sets a streaming dataset's epoch, and is skipped altogether once
`estimated_stepping_batches` has built the loader early (pytorch-lightning#20550,
litData#775). The loader's own state, saved with the data module, tells litdata which
worker layout the checkpoint had, so a changed worker count resumes with exactly the unseen
samples (litdata's elastic resume).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from copy import deepcopy
from pathlib import Path

import torch
from torch.utils.data import get_worker_info

from ..errors import ConfigError, DataError
from ..internals import batches_ready
from .datamodule import ImageDataModule
from .keyed import OwnStreams
from .shards import MANIFEST, decode, read_manifest, require_litdata


def litdata_dir(path: str) -> str:
    """litdata's name for a place: `file:///x` becomes its `local:/x` (read like object
    storage, through the cache), s3:// gs:// azure:// stay, a plain path is read in place."""
    return "local:" + path[len("file://"):] if path.startswith("file://") else str(Path(path).expanduser())


def load_manifest(input_dir: str, storage_options: dict | None = None) -> dict:
    """The converter's manifest, from a local folder, or fetched by litdata's own downloader
    (S3, GCS, Azure: the credentials streaming uses)."""
    local = input_dir[len("file://"):] if input_dir.startswith("file://") else input_dir
    if "://" not in local:
        found = read_manifest(Path(local).expanduser())
        if found is None:
            raise DataError(f"data.input_dir={input_dir} holds no {MANIFEST}: write shards with "
                            f"`python -m vitlab.data.shards <image folder> {input_dir}`")
        return found
    from litdata.streaming.downloader import get_downloader

    url = input_dir.rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            downloader = get_downloader(url, tmp, [], storage_options)
            downloader.download_file(f"{url}/{MANIFEST}", f"{tmp}/{MANIFEST}")
            return json.loads(Path(tmp, MANIFEST).read_text())
        except Exception as error:  # each store raises its own kind: name the place and the cause
            raise DataError(f"cannot read {url}/{MANIFEST}: {error}; check data.input_dir and the "
                            f"store's credentials") from error


class DecodeSample:
    """litdata's per-sample transform: {"image": bytes, "label", "id"} -> (image, label[, id]).

    In a loader worker the random transforms draw from the worker's generators (seeded from the
    loader's own generator); without workers they run in the training process, where torch's
    and Python's global generators are the model's (dropout, drop-path): there they draw from
    streams of their own, seeded by `seed`."""

    def __init__(self, transform, channels: int, return_ids: bool, seed: int = 0):
        self.transform, self.channels, self.return_ids = transform, channels, return_ids
        self.own = OwnStreams(seed)

    def __call__(self, sample: Mapping):
        image = decode(sample["image"], self.channels)
        image = self.transform(image) if get_worker_info() else self.own(self.transform, image)
        return (image, sample["label"], sample["id"]) if self.return_ids else (image, sample["label"])


class TrainerSyncedLoader:
    """The training StreamingDataLoader, put at the trainer's position when a pass starts.

    Lightning fetches the first batch of an epoch after restoring its loops: the current
    epoch and the batches already done in it are then known, whatever kind of checkpoint the
    run resumed from. `load_state_dict` only keeps the checkpoint's loader state (its worker
    layout); the position always comes from the trainer."""

    def __init__(self, loader, trainer, saved: dict | None = None):
        self.loader, self.trainer, self.saved = loader, trainer, saved

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.saved = state

    def _position(self, epoch: int, done: int) -> None:
        """Start epoch `epoch` (0-based, the trainer's) after its first `done` batches: as
        litdata's own resume state of the checkpoint's layout, with the trainer's position."""
        loader = self.loader
        loader.dataset.reset_state_dict()
        if done == 0:  # a fresh epoch; litdata counts epochs from 1 and adds the 1 itself
            loader.restore, loader.current_epoch = False, epoch
            return
        state = deepcopy(self.saved or loader.state_dict())
        batch, workers = state["dataset"]["batch_size"], state["dataset"]["num_workers"]
        world = state["dataset"]["world_size"]
        yielded = done * batch
        state.update(current_epoch=epoch + 1, num_samples_yielded=yielded,
                     latest_worker_idx=(done - 1) % workers)
        state["dataset"].update(current_epoch=epoch + 1, num_samples_yielded=yielded,
                                sample_in_epoch=yielded * world)
        state["dataset"].pop("resume_mode", None)
        loader.load_state_dict(state)

    def __iter__(self):
        trainer = self.trainer
        if trainer is None:  # outside a Trainer: litdata counts the passes as epochs
            yield from self.loader
            return
        done = batches_ready(trainer) if trainer.training else 0
        self._position(trainer.current_epoch, done)
        self.saved = None  # the next epochs start fresh
        yield from self.loader


class StreamingDataModule(ImageDataModule):
    def __init__(
        self,
        input_dir: str,
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
        seed: int = 0,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: Mapping | None = None,
        mix=None,
        drop_last: bool | None = None,
        return_ids: bool = False,
        on_device: bool = False,
        multiprocessing_context: str | None = "forkserver",
        **_,
    ):
        """`input_dir` holds the shards (a folder, file://, s3://, gs://, azure://). Remote
        chunks are cached in `cache_dir`, at most `max_cache_size` ("50GB"), and evicted once
        read; `storage_options` go to the store's client (e.g. an S3 endpoint_url). `seed` draws
        each epoch's order. `return_ids=True` adds each image's id to a batch: (images, labels,
        ids), for audits and tests."""
        require_litdata()
        if on_device:
            raise ConfigError("data.on_device=true holds a whole split in device memory; streaming "
                              "shards never do: set data.on_device=false")
        super().__init__(dataset=None, num_classes=num_classes, img_size=img_size, in_chans=in_chans,
                         mean=mean, std=std, augment=augment, resize=resize, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         mix=mix, drop_last=drop_last, multiprocessing_context=multiprocessing_context)
        self.input_dir, self.seed, self.in_chans = str(input_dir), int(seed), in_chans
        self.stream_cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.storage_options = dict(storage_options) if storage_options else None
        self.return_ids = return_ids
        self.manifest: dict = {}
        self.world: tuple[int, int] | None = None  # (world size, rank) the datasets were built for
        self._train_loader: TrainerSyncedLoader | None = None
        self._resume_state: dict | None = None  # the checkpoint's training-loader state

    def setup(self, stage: str | None = None) -> None:
        """Read the manifest; build the datasets for this process's place among the ranks
        (litdata reads it when a dataset is constructed, so again once DDP has started)."""
        from litdata.utilities.env import _DistributedEnv

        env = _DistributedEnv.detect()
        if self.splits and self.world == (env.world_size, env.global_rank):
            return
        if not self.manifest:
            self.manifest = load_manifest(self.input_dir, self.storage_options)
            classes = self.manifest["classes"]
            if len(classes) != self.num_classes:
                raise DataError(f"{self.input_dir} has {len(classes)} classes but data.num_classes="
                                f"{self.num_classes}; set data.num_classes={len(classes)}")
            self.classes = classes
        self.world = (env.world_size, env.global_rank)
        self.splits = {name: self._dataset(name) for name in ("train", "val", "test")}
        self._train_loader = None

    def _dataset(self, split: str):
        from litdata import StreamingDataset

        train = split == "train"
        transform = self.train_transform if train else self.eval_transform
        cache = None
        if self.stream_cache_dir and "://" in self.input_dir:
            cache = str(Path(self.stream_cache_dir).expanduser() / "streaming")
        ds = StreamingDataset(
            litdata_dir(f"{self.input_dir.rstrip('/')}/{split}"), cache_dir=cache, shuffle=train,
            seed=self.seed, max_cache_size=self.max_cache_size, storage_options=self.storage_options,
            drop_last=True if train and (self.drop_last or self.world[0] > 1) else False,
            transform=DecodeSample(transform, self.in_chans, self.return_ids, self.seed))
        ds.skipped = set(self.manifest["splits"][split]["skipped"])  # left out by --skip-corrupt
        # litdata reads a local folder in place with a "window" shuffle: whole chunks per worker,
        # trimmed to the shortest under drop_last (up to 40 % of a small set unseen per epoch)
        # and sequential stripes of chunks. The global chunk shuffle keeps every sample.
        ds.posix_fast = None
        return ds

    def _streaming_loader(self, split: str):
        from litdata import StreamingDataLoader

        train = split == "train"
        return StreamingDataLoader(
            self.splits[split], batch_size=self.batch_size if train else self.eval_batch_size,
            **self.worker_processes(), pin_memory=self.pin_memory,
            persistent_workers=False,
            # the workers' base seed from the loader's own generator, not the global one (the model's)
            generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> TrainerSyncedLoader:
        trainer = self.trainer
        self.setup("fit")
        if trainer is not None and trainer.world_size != self.world[0]:
            raise DataError(f"the streaming datasets were built for {self.world[0]} process(es) but the "
                            f"trainer runs {trainer.world_size}: build them in setup(), after DDP starts")
        self._train_loader = TrainerSyncedLoader(self._streaming_loader("train"), trainer, self._resume_state)
        self._resume_state = None
        return self._train_loader

    def _eval_loader(self, split: str):
        """Every image of the split exactly once over the ranks: without drop_last litdata gives
        each rank floor(floor(N / batch) / W) whole batches and the last rank the rest, so ranks
        may differ by several batches (the metrics' synced sums count each image once). A rank
        without a batch would wait in the metrics' sync: refused here, the same on every rank."""
        world, samples = self.world[0], int(self.manifest["splits"][split]["samples"])
        if world > 1 and samples // self.eval_batch_size < world:
            raise DataError(f"the {split} split has {samples} images, fewer than one batch of "
                            f"{self.eval_batch_size} for each of the {world} processes (litdata "
                            f"leaves the others none); set a smaller +data.eval_batch_size or use "
                            f"fewer processes")
        return self._streaming_loader(split)

    def val_dataloader(self):
        self.setup("fit")
        return self._eval_loader("val")

    def test_dataloader(self):
        self.setup("test")
        return self._eval_loader("test")

    def state_dict(self) -> dict:
        """The training loader's litdata state (its worker layout), saved in every checkpoint."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader else {}

    def load_state_dict(self, state: dict) -> None:
        """Called before the loaders are built: kept for the training loader."""
        self._resume_state = state.get("train_loader")
