"""What a dataset builder returns, and the seeded, stratified subsets the data module takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError


@dataclass
class Splits:
    """Raw splits; items are (image, label) with PIL or uint8 tensor images.

    `val` is None when the source has no validation split: the data module then takes one
    from train. `classes` names the labels 0..K-1.
    """

    train: Dataset
    test: Dataset
    classes: Sequence[str]
    val: Dataset | None = None
    source: str = ""  # where the data came from, for messages
    labelled: bool = True  # False: images only (datasets/unlabelled.py), no classes


def labels_of(ds: Dataset) -> np.ndarray:
    """Integer labels of a dataset without decoding its images."""
    if isinstance(ds, Subset):
        return labels_of(ds.dataset)[np.asarray(ds.indices)]
    targets = getattr(ds, "targets", None)
    if targets is None:
        raise TypeError(f"{type(ds).__name__} has no `targets`; dataset builders must provide it")
    return torch.as_tensor(targets).numpy() if not isinstance(targets, np.ndarray) else targets


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (taken, rest): `fraction` of the data, in proportion within every class (at
    least one of each), seeded. The total is ceil(fraction * N), as scikit-learn's split."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = fraction * counts
    k = np.maximum(1, np.floor(exact)).astype(int)
    # hand the remaining images to the classes with the largest remainders
    short = int(np.ceil(fraction * len(labels) - 1e-9)) - k.sum()
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable")[: max(0, short)]:
        k[i] += 1
    taken, rest = [], []
    for c, n in zip(classes, np.minimum(k, counts), strict=True):
        idx = rng.permutation(np.flatnonzero(labels == c))
        taken.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(taken)), np.sort(np.concatenate(rest))


def per_class_subset(labels: np.ndarray, samples_per_class: int, seed: int) -> np.ndarray:
    """Indices of `samples_per_class` images of every class (all of a smaller class), seeded."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == c))[:samples_per_class]
             for c in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def check_splits(splits: Splits) -> None:
    """Fail early on data no training can use: too few classes or an empty split."""
    if splits.labelled and len(splits.classes) < 2:
        raise DataError(f"{splits.source}: found {len(splits.classes)} class(es) "
                        f"({', '.join(map(str, splits.classes)) or 'none'}); a classifier needs at least 2")
    for name in ("train", "val", "test"):
        ds = getattr(splits, name)
        if ds is not None and len(ds) == 0:
            raise DataError(f"{splits.source}: the {name} split is empty")
