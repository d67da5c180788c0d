"""A trained run as a Hugging Face hub folder: the timm folder plus a model card (README.md),
ready for `huggingface_hub.upload_folder(repo_id=..., folder_path=<folder>)`; nothing is uploaded."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..trained import Trained
from .timm import export_timm, timm_config


def _metric(summary: dict, split: str) -> str:
    acc = (summary.get(split) or {}).get(f"{split}/acc")
    return f"{100 * acc:.2f} %" if isinstance(acc, (int, float)) else "not measured"


def _command(trained: Trained) -> str:
    overrides = trained.run_dir / ".hydra" / "overrides.yaml"
    args = OmegaConf.load(overrides) if overrides.is_file() else []
    return "python src/train.py " + " ".join(str(a) for a in args)


def _choices(trained: Trained) -> dict:
    """The config groups the run chose (`model: vit_micro`, `data: digits`), from Hydra's record."""
    hydra = trained.run_dir / ".hydra" / "hydra.yaml"
    if not hydra.is_file():
        return {}
    return dict(OmegaConf.load(hydra).hydra.runtime.get("choices") or {})


def _title(trained: Trained, choices: dict) -> str:
    """The model by its preset and run: `vit_micro, run 2026-12-05_10-00-00/5` (a sweep's job
    folder is a number: its sweep's folder names it)."""
    preset = choices.get("model") or type(trained.model).__name__
    run = trained.run_dir.name
    if run.isdigit():
        run = f"{trained.run_dir.parent.name}/{run}"
    return f"{preset}, run {run}"


# what each data preset is, in words (a preset not listed is named by its key)
DATA = {"digits": "scikit-learn's handwritten digits (8x8, upsampled)", "cifar10": "CIFAR-10",
        "cifar100": "CIFAR-100", "imagefolder": "an image folder", "streaming": "litdata shards",
        "fake": "synthetic images"}


def _data(trained: Trained, choices: dict) -> str:
    """The data by what it is: the preset in words, the training images and classes, the share
    of the training split; never a raw config node (its interpolations mean nothing outside)."""
    cfg, summary = trained.cfg, trained.summary
    name = choices.get("data")
    what = DATA.get(name, name) or "the run's data"
    parts = [f"{len(trained.classes)} classes"]
    if summary.get("train_images"):
        parts.insert(0, f"{summary['train_images']:,} training images")
    fraction = OmegaConf.select(cfg, "data.train_fraction", default=1.0)
    if isinstance(fraction, (int, float)) and fraction < 1:
        parts.append(f"{fraction:.0%} of the training split")
    return f"{what} ({', '.join(parts)})"


def _recipe(cfg, summary: dict) -> str:
    optimizer = cfg.module.get("optimizer") or {}
    name = str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
    return (f"{name}, lr {optimizer.get('lr', '?')}, batch {cfg.data.get('batch_size', '?')}, "
            f"{summary.get('epochs', '?')} epochs, seed {cfg.get('seed')}")


def model_card(trained: Trained, license: str = "apache-2.0", link: str | None = None) -> str:
    """README.md with the hub's metadata header: preset, data, recipe, metrics, training command.
    `link`: where the training code lives, linked only when the user gives it."""
    cfg, summary = trained.cfg, trained.summary
    config = timm_config(trained)
    count = sum(p.numel() for p in trained.model.parameters())
    size = f"{trained.in_chans} x {trained.img_size[0]} x {trained.img_size[1]}"
    choices = _choices(trained)
    vitlab = f"[vitlab]({link})" if link else "vitlab"
    return f"""---
license: {license}
library_name: timm
tags: [image-classification, timm, vitlab]
---
# {_title(trained, choices)}

A Vision Transformer trained with {vitlab}, exported to timm's layout
(`{config['architecture']}` with the model arguments in `config.json`).

| | |
|---|---|
| architecture | {config['architecture']} ({count:,} parameters) |
| input | {size}, mean {trained.mean}, std {trained.std} |
| data | {_data(trained, choices)} |
| recipe | {_recipe(cfg, summary)} |
| validation accuracy | {_metric(summary, 'val')} |
| test accuracy | {_metric(summary, 'test')} |

Trained with:

```
{_command(trained)}
```

## Use

```python
import timm
model = timm.create_model("hf-hub:<user>/<repo>", pretrained=True)   # after upload
model = timm.create_model("local-dir:<this folder>", pretrained=True)  # before
```

Labels: {', '.join(trained.classes)}.
"""


def export_hub(trained: Trained, out: Path, license: str = "apache-2.0", link: str | None = None) -> Path:
    export_timm(trained, out)
    (out / "README.md").write_text(model_card(trained, license, link))
    return out
