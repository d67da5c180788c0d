"""A folder of unlabelled images: every image under `data_dir`, in any sub-folders, read
recursively; no class folders, no labels (each image's label is 0 and nothing reads it).

For MAE pre-training (module=mae), which learns from the pixels alone; a classifier refuses it
(config_checks.check_data). A fixed, seeded `test_fraction` of the images is the test split;
the data module holds out data.val_fraction of the rest for validation, as for any source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Subset
from torchvision.datasets.folder import IMG_EXTENSIONS

from ...errors import DataError
from ..splits import Splits
from .imagefolder import CheckedImageFolder


class UnlabelledImages(CheckedImageFolder):
    """Every image file under `root` (sorted paths, so the order is the same on every machine),
    with the unreadable-file handling of a class-folder dataset."""

    def find_classes(self, directory):
        return [], {}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        paths = sorted(p for p in Path(directory).rglob("*")
                       if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        return [(str(p), 0) for p in paths]


def unlabelled(data_dir: str, test_fraction: float = 0.1, split_seed: int = 0,
               skip_corrupt: bool = False, **_) -> Splits:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data.data_dir={root} does not exist")
    images = UnlabelledImages(str(root), skip_corrupt)
    n_test = int(np.ceil(test_fraction * len(images)))
    if len(images) < 3 or not 0 < n_test < len(images) - 1:
        raise DataError(f"{root} has {len(images)} image(s) ({', '.join(IMG_EXTENSIONS)}); a test "
                        f"split of data.dataset.test_fraction={test_fraction} and a validation split "
                        "need at least 3 and a fraction in (0, 1)")
    order = np.random.default_rng(split_seed).permutation(len(images))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Splits(train=Subset(images, train.tolist()), test=Subset(images, test.tolist()), classes=(),
                  source=str(root), labelled=False)
