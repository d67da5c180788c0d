"""CIFAR-10 and CIFAR-100 through torchvision (its on-disk format, `download` optional).

CIFAR has no validation split: the data module takes one from train with a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import datasets

from ...errors import DataError
from ..splits import Splits

_FOLDERS = {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python"}


def _cifar(cls, data_dir: str, download: bool) -> Splits:
    root = Path(data_dir).expanduser()
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
        raise DataError(
            f"{cls.__name__} not found or corrupt in data.data_dir={root} (expected "
            f"{root / _FOLDERS[cls.__name__]}); set data.download=true or point data.data_dir "
            f"at the folder that holds it"
        ) from e
    return Splits(train=train, test=test, classes=train.classes, source=str(root))


def cifar10(data_dir: str = "data", download: bool = False, **_) -> Splits:
    return _cifar(datasets.CIFAR10, data_dir, download)


def cifar100(data_dir: str = "data", download: bool = False, **_) -> Splits:
    return _cifar(datasets.CIFAR100, data_dir, download)
