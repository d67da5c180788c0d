"""Convert an image folder once into litdata shards that `data=streaming` reads.

  `python -m vitlab.data.shards <image folder> <out dir> [--skip-corrupt] [--workers N] [--max-size 256]`

The folder has the layout `data=imagefolder` reads: train/<class>/*, optional val/, test/.
Without val/ the validation split is held out of train exactly as the image-folder path does
(stratified, `--val-fraction`, `--split-seed`). Every split becomes `<out dir>/<split>/`: litdata
chunks of samples {"image": the file's encoded bytes, "label": int, "id": int}, where `id` is
the image's position in its folder's sorted listing. The file list is shuffled (seeded) before
writing: a folder is sorted by class, and litdata shuffles only the order of chunks and the
order inside a chunk (litData#797), so unshuffled shards would give one-class batches.

`<out dir>/manifest.json` names the classes and counts the samples; it is written last and
holds a key of every file's path, size and modification time and the options, so re-running
on an unchanged folder does nothing, and an interrupted conversion is redone. Every image is
decoded once, with the decoder training uses: an unreadable one is an error naming its path,
or, with `--skip-corrupt`, left out and counted in the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from ..errors import DataError, VitlabError
from .datasets.imagefolder import imagefolder
from .splits import labels_of, stratified_split

MANIFEST = "manifest.json"
VERSION = 1  # bump when the sample layout changes
INSTALL_HINT = "pip install 'vitlab[streaming]'"


def require_litdata():
    """litdata, or a one-line error naming the extra that installs it."""
    try:
        import litdata
    except ImportError:
        from ..errors import ConfigError

        raise ConfigError(f"streaming shards need litdata, which is not installed: {INSTALL_HINT}") from None
    return litdata


def decode(data: bytes | np.ndarray, channels: int = 3) -> torch.Tensor:
    """Encoded image bytes -> uint8 (C, H, W): the decoder of conversion checks and of training."""
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(buffer, mode=ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY)


def split_items(root: Path, val_fraction: float, split_seed: int) -> tuple[list[str], dict[str, list]]:
    """Classes and, per split, the (id, path, label) of every image; ids index the listing of
    the split's folder (train's, for a validation split held out of train)."""
    splits = imagefolder(str(root))
    items = {}
    for name in ("train", "val", "test"):
        ds = splits.train if name == "val" and splits.val is None else getattr(splits, name)
        items[name] = [(i, path, label) for i, (path, label) in enumerate(ds.samples)]
    if splits.val is None:  # the held-out split of ImageDataModule: same seed, same images
        val_idx, train_idx = stratified_split(labels_of(splits.train), val_fraction, split_seed)
        items["val"] = [items["train"][i] for i in val_idx]
        items["train"] = [items["train"][i] for i in train_idx]
    return list(splits.classes), items


def contents_key(items: dict[str, list], options: dict) -> str:
    """Hash of every file's path, label, size and modification time, and the options."""
    h = hashlib.sha256(json.dumps({"version": VERSION, **options}, sort_keys=True).encode())
    for name, split in items.items():
        for i, path, label in split:
            st = os.stat(path)
            h.update(f"{name}|{i}|{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_manifest(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def shrink(data: bytes, max_size: int) -> bytes:
    """An image whose shorter side exceeds `max_size`, resized to it and stored as JPEG
    (quality 90); smaller ones keep their bytes."""
    with Image.open(io.BytesIO(data)) as img:
        if min(img.size) <= max_size:
            return data
        scale = max_size / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        out = io.BytesIO()
        img.convert("RGB").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0).save(
            out, "JPEG", quality=90)
        return out.getvalue()


def encode_sample(item: tuple[int, str, int], failures: str, max_size: int | None = None) -> dict | None:
    """One sample for litdata's optimize (runs in its worker processes). An unreadable image
    is recorded in this process's file under `failures` and left out."""
    i, path, label = item
    try:
        data = Path(path).read_bytes()
        decode(data)
        if max_size:
            data = shrink(data, max_size)
    except Exception as error:  # any decoder error: the caller decides (error or skip)
        with open(Path(failures) / f"{os.getpid()}.txt", "a") as f:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            f.write(json.dumps([path, reason]) + "\n")
        return None
    return {"image": data, "label": int(label), "id": int(i)}


def _failures(folder: Path) -> list[list[str]]:
    return sorted(json.loads(line) for f in folder.glob("*.txt") for line in f.read_text().splitlines())


def convert(src: str | Path, out_dir: str | Path, skip_corrupt: bool = False, workers: int | None = None,
            seed: int = 0, chunk_bytes: str = "64MB", chunk_size: int | None = None,
            val_fraction: float = 0.1, split_seed: int = 0, max_size: int | None = None,
            verbose: bool = True) -> dict:
    """Write the shards of every split and the manifest; return the manifest. Nothing is written
    when the manifest in `out_dir` already matches the folder and the options. `max_size`
    stores images with a larger shorter side resized to it (JPEG, quality 90): fewer pixels to
    store, download and decode when training at 224 px (decode cost grows with the pixels)."""
    litdata = require_litdata()
    root, out = Path(src).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    classes, items = split_items(root, val_fraction, split_seed)
    options = {"seed": seed, "chunk_bytes": chunk_bytes, "chunk_size": chunk_size,
               "val_fraction": val_fraction, "split_seed": split_seed, "skip_corrupt": skip_corrupt,
               "max_size": max_size}
    key = contents_key(items, options)
    old = read_manifest(out)
    if old is not None and old.get("key") == key:
        if verbose:
            print(f"{out}: shards are up to date with {root}; nothing to do")
        return old
    if out.exists() and any(out.iterdir()) and old is None:
        raise DataError(f"{out} is not empty and holds no {MANIFEST}; choose an empty or new output folder")
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the end the shards are incomplete
    manifest = {"version": VERSION, "key": key, "source": str(root), "classes": classes,
                "options": options, "splits": {}}
    workers = workers or os.cpu_count() or 1
    for name, split in items.items():
        order = np.random.default_rng([seed, len(name)]).permutation(len(split))
        shutil.rmtree(out / name, ignore_errors=True)
        with tempfile.TemporaryDirectory() as failures:
            litdata.optimize(
                fn=partial(encode_sample, failures=failures, max_size=max_size),
                inputs=[split[i] for i in order],
                output_dir=str(out / name), chunk_bytes=None if chunk_size else chunk_bytes,
                chunk_size=chunk_size, num_workers=min(workers, len(split)), reorder_files=False,
                keep_data_ordered=True, mode="overwrite", verbose=verbose, start_method="fork")
            failed = _failures(Path(failures))
        if failed and not skip_corrupt:
            shutil.rmtree(out / name, ignore_errors=True)
            path, error = failed[0]
            raise DataError(f"cannot read image {path}: {error} ({len(failed)} unreadable in {name}; fix "
                            f"or remove them, or pass --skip-corrupt to leave them out)")
        manifest["splits"][name] = {"samples": len(split) - len(failed), "skipped": [p for p, _ in failed]}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    if verbose:
        counts = ", ".join(f"{k} {v['samples']}" for k, v in manifest["splits"].items())
        skipped = sum(len(v["skipped"]) for v in manifest["splits"].values())
        note = f"; {skipped} unreadable images skipped" if skipped else ""
        print(f"{out}: {len(classes)} classes; {counts} images{note}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitlab.data.shards", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="image folder: train/<class>/*, optional val/, test/")
    p.add_argument("out", help="output folder (local; upload it to object storage afterwards)")
    p.add_argument("--skip-corrupt", action="store_true", help="leave unreadable images out (counted)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: every core)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order the samples are written in")
    p.add_argument("--chunk-bytes", default="64MB", help="chunk size in bytes (64MB suits object storage)")
    p.add_argument("--chunk-size", type=int, default=None, help="or: samples per chunk")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held out of train when there is no val/")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that held-out split (data.split_seed)")
    p.add_argument("--max-size", type=int, default=None,
                   help="store images resized to this shorter side when larger (JPEG q90), e.g. 256")
    args = p.parse_args(argv)
    try:
        convert(args.src, args.out, args.skip_corrupt, args.workers, args.seed, args.chunk_bytes,
                args.chunk_size, args.val_fraction, args.split_seed, args.max_size)
    except VitlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
