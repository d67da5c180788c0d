"""Image folders: <root>/train/<class>/*.jpg, <root>/test/<class>/..., and optionally val/.

Without a val folder the data module takes a validation split from train with a fixed seed.
Unreadable images raise an error naming the file, or are skipped and counted with
`skip_corrupt=true`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision import datasets

from ...errors import DataError
from ..splits import Splits


class CheckedImageFolder(datasets.ImageFolder):
    """ImageFolder whose unreadable files name themselves (or are replaced and counted)."""

    def __init__(self, root: str, skip_corrupt: bool = False):
        super().__init__(root)
        self.skip_corrupt = skip_corrupt
        self._skipped_here: set[str] = set()
        # a DataLoader worker's copy of this dataset dies with the worker: each process also
        # notes the paths it skipped in a file of this folder, which the main process reads
        self.skip_log = tempfile.mkdtemp(prefix="vitlab-skipped-") if skip_corrupt else None
        if self.skip_log:
            weakref.finalize(self, shutil.rmtree, self.skip_log, ignore_errors=True)

    @property
    def skipped(self) -> set[str]:
        """Every unreadable file skipped so far, by this process or any of its loader workers."""
        found = set(self._skipped_here)
        for log in Path(self.skip_log).glob("*.txt") if self.skip_log else ():
            found.update(log.read_text().splitlines())
        return found

    def _note_skipped(self, path: str) -> None:
        if path not in self._skipped_here:
            self._skipped_here.add(path)
            with open(Path(self.skip_log) / f"{os.getpid()}.txt", "a") as f:
                f.write(path + "\n")

    def __getitem__(self, index):
        path, target = self.samples[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB"), target
        except (OSError, UnidentifiedImageError, SyntaxError) as e:
            if not self.skip_corrupt:
                raise DataError(f"cannot read image {path}: {e} (fix or remove it, or set "
                                f"data.skip_corrupt=true to skip unreadable images)") from e
            self._note_skipped(path)
            # stand in the next readable image so the batch keeps its size
            return self[(index + 1) % len(self.samples)]


def _folder(root: Path, name: str, skip_corrupt: bool) -> CheckedImageFolder:
    path = root / name
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist: expected {root}/{name}/<class>/<image>"
                        f" (set data.data_dir to the dataset root)")
    try:
        return CheckedImageFolder(str(path), skip_corrupt)
    except FileNotFoundError as e:  # no class folders, or class folders without images
        raise DataError(f"the {name} split is empty: {path}: {e}") from e


def imagefolder(data_dir: str, train_dir: str = "train", val_dir: str | None = "val",
                test_dir: str = "test", skip_corrupt: bool = False, **_) -> Splits:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data.data_dir={root} does not exist")
    train = _folder(root, train_dir, skip_corrupt)
    test = _folder(root, test_dir, skip_corrupt)
    val = _folder(root, val_dir, skip_corrupt) if val_dir and (root / val_dir).is_dir() else None
    for name, split in (("test", test), ("val", val)):
        if split is not None and split.classes != train.classes:
            missing = sorted(set(train.classes) - set(split.classes))
            extra = sorted(set(split.classes) - set(train.classes))
            raise DataError(f"class folders differ between {root / train_dir} and {split.root}: "
                            f"missing in {name}: {missing or 'none'}, only in {name}: {extra or 'none'}")
    return Splits(train=train, val=val, test=test, classes=train.classes, source=str(root))
