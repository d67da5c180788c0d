"""Shared test helpers: compose the real Hydra configs and run the real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(overrides: list[str] = (), config_name: str = "train", output_dir: str = "."):
    """The config `python src/train.py <overrides>` would run, with paths.output_dir set."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def run_entry(script: str, overrides: list[str], cwd: Path, timeout: int = 600):
    """Run src/<script> as a user would; returns the CompletedProcess (text output)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, str(ROOT / "src" / script), *overrides], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def compose_cfg(tmp_path):
    return lambda overrides=(), **kw: compose_config(overrides, output_dir=tmp_path, **kw)
