"""The run summary: a small JSON file in every run folder that reports read without a logger,
and the checkpoint a run folder stands for (the best one its summary names)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SUMMARY = "summary.json"


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a crash leaves the old file or none, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = Path(run_dir) / SUMMARY
    write_atomic(path, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_summary(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


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
