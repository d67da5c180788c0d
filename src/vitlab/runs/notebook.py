"""A finished run folder, back in memory for analysis (notebooks): its config, the model with
the weights of a checkpoint, and its data module."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import instantiate

from .run_folder import load_model
from .summary import read_summary


def latest_folder(pattern: str, root: str | Path = "outputs") -> Path | None:
    """The newest folder matching `pattern` under `root` (e.g. "train/runs/*"), or None."""
    found = [p for p in Path(root).glob(pattern) if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_run(run_dir: str | Path, checkpoint: str = "best.ckpt"):
    """(config, model in eval mode, data module set up for fit, summary) of a run folder."""
    run_dir = Path(run_dir)
    path = run_dir / "checkpoints" / checkpoint
    cfg, model = load_model(path if path.is_file() else run_dir / "checkpoints" / "last.ckpt")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return cfg, model, datamodule, read_summary(run_dir)
