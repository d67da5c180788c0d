"""A finished run folder, back in memory for analysis (notebooks): its config, the model with
the weights of a checkpoint, and its data module."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..build_model import build_model


def latest_folder(pattern: str, root: str | Path = "outputs") -> Path | None:
    """The newest folder matching `pattern` under `root` (e.g. "train/runs/*"), or None."""
    found = [p for p in Path(root).glob(pattern) if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_run(run_dir: str | Path, checkpoint: str = "best.ckpt"):
    """(config, model in eval mode, data module set up for fit, summary) of a run folder."""
    run_dir = Path(run_dir)
    cfg: DictConfig = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = build_model(cfg.model, pretrained=False)
    path = run_dir / "checkpoints" / checkpoint
    if not path.is_file():
        path = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    summary = json.loads((run_dir / "summary.json").read_text())
    return cfg, model.eval(), datamodule, summary
