"""Top-k predictions of a trained run on a folder of images or a list of files: a CSV row per
image (an unreadable one gets its error, not a crash) and a figure of the first few."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

from ..errors import ConfigError
from .trained import Trained, load_trained

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def image_paths(images) -> list[Path]:
    """The files of `images`: a folder (searched recursively for image files), a file, or a list
    of both."""
    items = [images] if isinstance(images, (str, Path)) else list(images)
    found = []
    for item in map(Path, items):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise ConfigError(f"images={item}: no such file or folder")
    if not found:
        raise ConfigError(f"images={images}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def read_image(path: Path, in_chans: int) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L" if in_chans == 1 else "RGB")


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def predict(trained: Trained, paths: list[Path], top_k: int = 5, batch_size: int = 64,
            device: str = "auto") -> list[dict]:
    """A row per path: its top-k class names and probabilities, or the error that stopped it."""
    device = pick_device(device)
    model, transform = trained.model.to(device), trained.eval_transform()
    top_k = min(top_k, len(trained.classes))
    rows: list[dict] = []
    for start in range(0, len(paths), batch_size):
        tensors, readable = [], []
        for path in paths[start:start + batch_size]:
            row = {"path": str(path), "error": ""}
            rows.append(row)
            try:
                tensors.append(transform(read_image(path, trained.in_chans)))
                readable.append(row)
            except Exception as e:  # unreadable or not an image: recorded, the rest go on
                row["error"] = f"{type(e).__name__}: {e}"
        if not tensors:
            continue
        with torch.no_grad():
            probs = model(torch.stack(tensors).to(device)).float().softmax(-1).cpu()
        values, indices = probs.topk(top_k, dim=-1)
        for row, p, i in zip(readable, values.tolist(), indices.tolist(), strict=True):
            for rank in range(top_k):
                row[f"class_{rank + 1}"] = trained.classes[i[rank]]
                row[f"prob_{rank + 1}"] = round(p[rank], 6)
    return rows


def write_csv(rows: list[dict], top_k: int, path: Path) -> Path:
    columns = ["path", *[f"{k}_{r}" for r in range(1, top_k + 1) for k in ("class", "prob")], "error"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def draw(rows: list[dict], in_chans: int, path: Path, count: int = 8) -> Path | None:
    """The first `count` readable images with their top-1 class and probability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if not r["error"]][:count]
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(2 * len(shown), 2.3), squeeze=False)
    for ax, row in zip(axes[0], shown, strict=True):
        ax.imshow(read_image(Path(row["path"]), in_chans), cmap="gray" if in_chans == 1 else None)
        ax.set_title(f"{row['class_1']} {100 * row['prob_1']:.0f}%", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_predict(cfg) -> Path:
    """`python src/predict.py ckpt_path=<run> images=<folder or files>`: predictions.csv (and
    predictions.png) in the output folder."""
    trained = load_trained(cfg.ckpt_path)
    paths = image_paths(cfg.images)
    top_k = min(int(cfg.top_k), len(trained.classes))
    rows = predict(trained, paths, top_k, int(cfg.batch_size), str(cfg.device))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, top_k, out / "predictions.csv")
    if cfg.figure:
        draw(rows, trained.in_chans, out / "predictions.png", int(cfg.figure))
    return csv_path
