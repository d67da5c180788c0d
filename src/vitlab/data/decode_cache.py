"""Decode once: an image folder's images as one uint8 tensor in a cache file.

The on-device loader holds a split as one uint8 tensor; for an image folder that means
decoding every file. A sweep of 21 runs over CIFAR-10's 60,000 JPEGs would decode them 21
times, so the decoded tensor is saved in `cache_dir`, one file per (folder, image size), and
reused while the folder's contents stay the same: the file list with every file's size and
modification time is part of the key. A changed folder or an unreadable cache file is decoded
again, with a warning, and the cache rewritten (atomically: a crash leaves the old file or none).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

VERSION = 1  # bump when the cached layout changes


def contents_key(samples: list[tuple[str, int]], resize: int | None) -> str:
    """Hash of the file list, labels, sizes and modification times, and the decode size."""
    h = hashlib.sha256(f"v{VERSION}|resize={resize}".encode())
    for path, label in samples:
        st = os.stat(path)
        h.update(f"{path}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_file(cache_dir: str | Path, root: str | Path, resize: int | None) -> Path:
    name = hashlib.sha256(f"{Path(root).resolve()}|{resize}".encode()).hexdigest()[:20]
    root = Path(root)
    return Path(cache_dir).expanduser() / f"{root.parent.name}-{root.name}-{resize or 'native'}-{name}.pt"


def _load(path: Path, key: str, root) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if data["key"] == key:
            return data["images"], data["labels"]
        log.warning("decode cache: %s changed since %s was written; decoding it again", root, path)
    except Exception as error:  # truncated, corrupt, another format: rebuild it
        log.warning("decode cache: %s is unreadable (%s); decoding %s again", path, error, root)
    return None


def _save(path: Path, key: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"key": key, "images": images, "labels": labels}, tmp)
        os.replace(tmp, path)
    except OSError as error:  # a read-only or full cache folder costs speed, not the run
        log.warning("decode cache: could not write %s (%s)", path, error)
        tmp.unlink(missing_ok=True)


def cached(dataset, resize: int | None, cache_dir: str | Path | None,
           decode: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """`decode()` of a folder dataset (torchvision ImageFolder: `.root`, `.samples`), through
    the cache; anything else, or no cache_dir, is decoded directly."""
    samples, root = getattr(dataset, "samples", None), getattr(dataset, "root", None)
    if cache_dir is None or samples is None or root is None:
        return decode()
    key = contents_key(samples, resize)
    path = cache_file(cache_dir, root, resize)
    found = _load(path, key, root)
    if found is not None:
        return found
    images, labels = decode()
    if not getattr(dataset, "skipped", None):  # never cache stand-ins for unreadable files
        _save(path, key, images, labels)
    return images, labels
