"""Export a trained run for use outside vitlab: `python -m vitlab.runs.export <run> --to timm|onnx|hub`."""

from __future__ import annotations

from pathlib import Path

from ..trained import load_trained

FORMATS = ("timm", "onnx", "hub")


def export(path: str | Path, to: str, out: str | Path | None = None, **options) -> Path:
    """Export the run folder or checkpoint `path` to `out` (default <run>/export/<to>)."""
    from .hub import export_hub
    from .onnx import export_onnx
    from .timm import export_timm

    if to not in FORMATS:
        raise ValueError(f"--to {to}: one of {', '.join(FORMATS)}")
    trained = load_trained(path)
    out = Path(out) if out else trained.run_dir / "export" / to
    writer = {"timm": export_timm, "onnx": export_onnx, "hub": export_hub}[to]
    return writer(trained, out, **options)
