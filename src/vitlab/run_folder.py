"""A run folder read back: its saved config, its checkpoint and its model, for evaluation,
analysis and any tool that starts from a trained run (`ckpt_path=<run folder | .ckpt>`).

This is the one place a run folder's saved config is read, so what such a config may build
is decided here, once, for every reader."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .summary import SUMMARY, read_summary

SAVED_CONFIG = Path(".hydra") / "config.yaml"


def run_dir_of(path: str | Path) -> Path:
    """The run folder of a checkpoint inside it (or the folder itself)."""
    path = Path(path).expanduser().resolve()
    for folder in (path, *path.parents):
        if (folder / SAVED_CONFIG).is_file():
            return folder
    raise ConfigError(f"ckpt_path={path}: no {SAVED_CONFIG} in any parent folder "
                      f"(the checkpoint must lie inside a vitlab run folder)")


def run_config(path: str | Path) -> DictConfig:
    """The resolved config saved by Hydra in the run folder of `path` (a folder or a checkpoint)."""
    return OmegaConf.load(run_dir_of(path) / SAVED_CONFIG)


def checkpoint_of(path: str | Path) -> Path:
    """A checkpoint file as given; for a run folder, the best checkpoint its summary names,
    else checkpoints/best.ckpt, else checkpoints/last.ckpt."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    summary = read_summary(path) if (path / SUMMARY).is_file() else {}
    best = (summary or {}).get("best_checkpoint")
    for candidate in (best, path / "checkpoints" / "best.ckpt", path / "checkpoints" / "last.ckpt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return path / "checkpoints" / "last.ckpt"


def load_model(path: str | Path, cfg: DictConfig | None = None) -> tuple[DictConfig, torch.nn.Module]:
    """(the run's config, its model in eval mode with the checkpoint's weights) of a run folder or
    checkpoint; `cfg` replaces the saved config (e.g. merged with a new image size)."""
    from .build_model import build_model

    ckpt = checkpoint_of(path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={path}: no checkpoint at {ckpt}")
    cfg = run_config(path) if cfg is None else cfg
    model = build_model(cfg.model, pretrained=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return cfg, model.eval()
