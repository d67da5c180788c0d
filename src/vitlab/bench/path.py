"""The paths users run: the default run's training step on its real loaders, against a bare loop.

`python src/bench.py mode=path` builds the training run `python src/train.py` would (the
default: vit_micro on the digits; `fit_overrides` changes it) once per data path:

- `loader`: the DataLoader in the training process (keyed per-image augmentation, 0 workers);
- `workers`: the same with `path_workers` loader processes;
- `device`: the split on the training device, augmented there in batches;
- `streaming`: litdata shards of the same images (written to a temporary folder), 0 workers.

and times its training steps through `Trainer.fit` against a bare PyTorch loop over the same
pipeline written plainly, with the same model, initialisation, optimiser, schedule and clipping
(fit.BareLoop): for the DataLoader paths a torch DataLoader over the same images with the
same per-image transforms, shuffled by torch and drawing from the global generator as a
hand-written script would (so whatever vitlab's keyed loader costs beyond that — a per-image
seeding, say — shows in the ratio); on the device and for streaming, the data module's own
loader without a Trainer (the same batches; there the ratio is the framework's step overhead).
Mixup/CutMix as configured, on both sides.
Validation, checkpoints and end-of-run figures are off in both: they are not the step (a real
run saves two small checkpoints per epoch: about 7 % of the default run's fit). Rounds
alternate which side runs first; the ratio is bare time / vitlab time (1.0: the framework costs
nothing over a hand-written loop), the median of the per-round ratios.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader
from torchvision.transforms.functional import to_pil_image

from ..data.datamodule import Transformed
from ..data.keyed import KeyedTransform
from .fit import BareLoop, sync, vitlab_round

NO_FIGURES = ["~callbacks.attention", "~callbacks.confusion_matrix", "~callbacks.pos_similarity",
              "~callbacks.model_checkpoint", "~callbacks.last_checkpoint"]


def path_overrides(name: str, workers: int, shards: Path | None) -> list[str]:
    if name == "loader":
        return ["data.on_device=false", "data.num_workers=0"]
    if name == "workers":
        return ["data.on_device=false", f"data.num_workers={workers}"]
    if name == "device":
        return ["data.on_device=true"]
    if name == "streaming":
        return ["data=streaming", f"data.input_dir={shards}", "data.num_workers=0", "data.pin_memory=false"]
    raise ValueError(f"unknown path {name!r}: use loader, workers, device or streaming")


def train_config(cfg: DictConfig, preset: str, path: list[str], out_dir: str, steps: int) -> DictConfig:
    overrides = [
        f"model={preset}", f"data.batch_size={cfg.batch_size}", "trainer.accelerator=cpu"
        if cfg.device == "cpu" else "trainer.accelerator=auto", *path,
        "+trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "trainer.max_epochs=-1",
        f"+trainer.max_steps={steps}", "trainer.enable_progress_bar=false", "test=false",
        "probes.enabled=false", f"paths.output_dir={out_dir}", *NO_FIGURES,
        "+trainer.enable_checkpointing=false",  # else Lightning's own saves one every (short) epoch
        *(cfg.fit_overrides or []),
    ]
    train_cfg = compose(config_name="train", overrides=overrides)
    with open_dict(train_cfg):
        train_cfg.seed = 0
    return train_cfg


def like(streaming: DictConfig, default: DictConfig) -> DictConfig:
    """The streaming run given the default data's images: classes, size, channels, normalisation
    and augmentation (its own defaults are ImageNet's)."""
    with open_dict(streaming):
        for key in ("num_classes", "img_size", "in_chans", "mean", "std", "augment"):
            streaming.data[key] = default.data[key]
    return streaming


def digits_shards(train_cfg: DictConfig, root: Path) -> Path:
    """The default data's splits as litdata shards (PNG image folder -> vitlab.data.shards)."""
    from ..data.shards import convert

    datamodule = instantiate(train_cfg.data)
    raw = datamodule.dataset()
    folder = root / "folder"
    for split, data in (("train", raw.train), ("test", raw.test)):
        for i in range(len(data)):
            image, label = data[i]
            out = folder / split / raw.classes[label]
            out.mkdir(parents=True, exist_ok=True)
            (to_pil_image(image) if torch.is_tensor(image) else image).save(out / f"{i:05d}.png")
    convert(folder, root / "shards", workers=1, verbose=False,
            val_fraction=train_cfg.data.get("val_fraction", 0.1))
    return root / "shards"


def plain_loader(datamodule) -> DataLoader:
    """What a hand-written script would use for the data module's DataLoader path: the same
    images and per-image transforms, torch's shuffle, the global generator."""
    keyed = datamodule.splits["train"]
    workers = datamodule.num_workers
    return DataLoader(Transformed(keyed.dataset, keyed.transform), batch_size=datamodule.batch_size,
                      shuffle=True, drop_last=datamodule.drop_last, **datamodule.worker_processes(),
                      persistent_workers=workers > 0)


def bare_batches(datamodule):
    """Training batches, epoch after epoch, mixed as the data module's batch hook mixes."""
    datamodule.trainer = None
    keyed = isinstance(datamodule.splits.get("train"), KeyedTransform) and not datamodule.on_device
    plain = plain_loader(datamodule) if keyed else None
    for epoch in itertools.count():
        loader = plain or datamodule.train_dataloader()
        for i, (x, y, *_) in enumerate(loader):
            if datamodule.mix is not None:
                x, y = datamodule.mix(x, y, seed=(0, 0, epoch, i))
            yield x, y


def bare_round(train_cfg: DictConfig, warmup: int, steps: int) -> float:
    L.seed_everything(train_cfg.seed, verbose=False)
    datamodule = instantiate(train_cfg.data)
    datamodule.setup("fit")
    device = torch.device("cuda" if torch.cuda.is_available() and train_cfg.trainer.accelerator != "cpu"
                          else "cpu")
    bare = BareLoop(train_cfg, device, total_steps=warmup + steps + 1)
    bare.model.train()
    t0 = 0.0
    for i, (x, y) in enumerate(bare_batches(datamodule), start=1):
        bare.step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        elif i == warmup + steps:
            sync(device)
            return time.perf_counter() - t0
    raise AssertionError("unreachable: the batches are endless")


def run_path(cfg: DictConfig, preset: str) -> dict:
    warmup, steps = max(1, cfg.warmup), cfg.steps
    result = {"preset": preset, "mode": "path", "batch_size": cfg.batch_size, "warmup": warmup,
              "steps": steps, "rounds": cfg.rounds, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "paths": {}}
    with tempfile.TemporaryDirectory(prefix="vitlab-bench-path-") as out:
        default, shards = train_config(cfg, preset, [], out, 1), None
        for name in cfg.data_paths:
            if name == "streaming":
                try:
                    shards = digits_shards(default, Path(out) / "streaming")
                except ImportError as error:  # litdata is an optional extra
                    result["paths"][name] = {"skipped": str(error)}
                    continue
            train_cfg = train_config(cfg, preset, path_overrides(name, cfg.path_workers, shards), out,
                                     warmup + steps + 1)
            if name == "streaming":
                train_cfg = like(train_cfg, default)
            times = {"vitlab": [], "bare": []}
            for r in range(cfg.rounds):
                for side in ("vitlab", "bare") if r % 2 == 0 else ("bare", "vitlab"):
                    times[side].append(vitlab_round(train_cfg, None, warmup, steps) if side == "vitlab"
                                       else bare_round(train_cfg, warmup, steps))
            row = {side: {"images_per_s": cfg.batch_size * steps / statistics.median(t),
                          "rounds_ms": [round(s / steps * 1e3, 3) for s in t]} for side, t in times.items()}
            pairs = zip(times["vitlab"], times["bare"], strict=True)
            row["ratio"] = statistics.median(b / v for v, b in pairs)
            row["overrides"] = path_overrides(name, cfg.path_workers, Path("<shards>"))
            result["paths"][name] = row
    return result


def report_path(r: dict) -> str:
    lines = [f"{r['preset']}, batch {r['batch_size']}, {r['threads']} threads, torch {r['torch']}: "
             f"{r['rounds']} rounds of {r['steps']} steps after {r['warmup']} warm-up steps per side",
             f"{'path':12}{'vitlab img/s':>14}{'bare img/s':>12}{'ratio':>8}"]
    for name, row in r["paths"].items():
        if "skipped" in row:
            lines.append(f"{name:12}skipped: {row['skipped']}")
            continue
        lines.append(f"{name:12}{row['vitlab']['images_per_s']:14.1f}{row['bare']['images_per_s']:12.1f}"
                     f"{row['ratio']:8.3f}")
    lines.append("ratio = bare loop time / vitlab time over the same loader (1.0: no framework overhead)")
    return "\n".join(lines)
