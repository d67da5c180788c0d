"""The images every figure and probe evaluates on: evenly spaced over the split, never its first
ones. An image folder's split is in class order, so its first images are of one or two classes."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader, IterableDataset, Subset


def spaced(n: int, images: int) -> list[int]:
    """`images` indices evenly spaced over 0..n-1 (all n when there are fewer), first and last
    included."""
    return torch.linspace(0, n - 1, min(n, images)).round().long().unique().tolist()


def first_images(loader: Iterable, images: int,
                 batch_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's first `images` (image, label) pairs as a list of batches of `batch_size`
    (default: the loader's own), kept on the CPU; [] when it has none."""
    xs, ys, count = [], [], 0
    for x, y, *_ in loader:
        take = min(len(x), images - count)
        xs.append(x[:take].cpu())
        ys.append(y[:take].cpu())
        count += take
        if count >= images:
            break
    if not count:
        return []
    if batch_size is None:
        return list(zip(xs, ys, strict=True))
    return list(zip(torch.cat(xs).split(batch_size), torch.cat(ys).split(batch_size), strict=True))


def spaced_images(loader: Iterable, images: int,
                  batch_size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`images` (image, label) pairs evenly spaced over the loader's split, as first_images
    returns them. A DataLoader over a map-style dataset reads only those images; another loader
    (the on-device one, whose splits are small by design) is read whole, then spaced; a stream
    (an IterableDataset) gives its first images, in its own order."""
    dataset = getattr(loader, "dataset", None)
    if isinstance(loader, DataLoader):
        if not isinstance(dataset, IterableDataset) and len(dataset) > images:
            loader = DataLoader(Subset(dataset, spaced(len(dataset), images)), batch_size=loader.batch_size,
                                num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                                multiprocessing_context=loader.multiprocessing_context)
        return first_images(loader, images, batch_size)
    every = first_images(loader, 2**62)
    if not every:
        return []
    x, y = torch.cat([b[0] for b in every]), torch.cat([b[1] for b in every])
    keep = torch.tensor(spaced(len(y), images))
    size = batch_size or len(every[0][1])
    return list(zip(x[keep].split(size), y[keep].split(size), strict=True))
