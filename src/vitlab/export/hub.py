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


def _recipe(cfg, summary: dict) -> str:
    optimizer = cfg.module.get("optimizer") or {}
    name = str(optimizer.get("_target_", "?")).rsplit(".", 1)[-1]
    return (f"{name}, lr {optimizer.get('lr', '?')}, batch {cfg.data.get('batch_size', '?')}, "
            f"{summary.get('epochs', '?')} epochs, seed {cfg.get('seed')}")


def model_card(trained: Trained, license: str = "apache-2.0") -> str:
    """README.md with the hub's metadata header: preset, data, recipe, metrics, training command."""
    cfg, summary = trained.cfg, trained.summary
    config = timm_config(trained)
    count = sum(p.numel() for p in trained.model.parameters())
    size = f"{trained.in_chans} x {trained.img_size[0]} x {trained.img_size[1]}"
    data = str(cfg.data.get("_target_", "")).rsplit(".", 1)[-1]
    dataset = cfg.data.get("dataset") or cfg.data.get("root") or data
    return f"""---
license: {license}
library_name: timm
tags: [image-classification, timm, vitlab]
---
# {trained.run_dir.name}

A Vision Transformer trained with [vitlab](https://github.com/vitlab/vitlab), exported to timm's
layout (`{config['architecture']}` with the model arguments in `config.json`).

| | |
|---|---|
| architecture | {config['architecture']} ({count:,} parameters) |
| input | {size}, mean {trained.mean}, std {trained.std} |
| data | {dataset} ({len(trained.classes)} classes) |
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


def export_hub(trained: Trained, out: Path, license: str = "apache-2.0") -> Path:
    export_timm(trained, out)
    (out / "README.md").write_text(model_card(trained, license))
    return out
