"""A trained run as an ONNX file with a dynamic batch axis, checked by onnxruntime against the
PyTorch logits as part of the export (a file that runs differently is never left behind)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...errors import ConfigError
from ..trained import Trained

OPSET = 18


def _require():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as e:
        raise ConfigError(f"--to onnx needs the onnx extra ({e.name} is not installed): "
                          f"pip install -e '.[onnx]'") from None
    return onnxruntime


def export_onnx(trained: Trained, out: Path, atol: float = 1e-4) -> Path:
    """Write <out>/model.onnx (input `images` N x C x H x W, output `logits` N x classes) and
    <out>/preprocess.json; raises if onnxruntime's logits differ from PyTorch's by more than atol."""
    runtime = _require()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    example = trained.example(batch=2)
    torch.onnx.export(trained.model, (example,), str(path), input_names=["images"],
                      output_names=["logits"], opset_version=OPSET, dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    (out / "preprocess.json").write_text(json.dumps(
        {"input_size": [trained.in_chans, *trained.img_size], "resize": trained.resize,
         "mean": trained.mean, "std": trained.std, "label_names": trained.classes}, indent=2) + "\n")
    try:
        check_onnx(trained, path, runtime, atol)
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return path


def check_onnx(trained: Trained, path: Path, runtime=None, atol: float = 1e-4) -> float:
    """max |Δ logits| between PyTorch and onnxruntime on a batch of another size than the export's."""
    runtime = runtime or _require()
    session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = trained.example(batch=3, seed=1)
    with torch.no_grad():
        expected = trained.model(images).numpy()
    got = session.run(["logits"], {"images": images.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    if diff > atol:
        raise RuntimeError(f"{path}: onnxruntime's logits differ from PyTorch's by {diff:.2e} "
                           f"(> {atol})")
    return diff
