"""A trained run as the tools that use it see it: its classifier, its class names and the
preprocessing its evaluation used. Export (vitlab.runs.export) and prediction (vitlab.runs.predict) start
here; the run folder itself is read by run_folder.py only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torchvision.transforms import v2

from ..data.transforms import build_transform
from ..errors import ConfigError
from ..model_kind import target_class
from .run_folder import checkpoint_of, load_model, run_dir_of
from .summary import SUMMARY, read_summary


@dataclass
class Trained:
    """A run's model in eval mode on the CPU, with what it needs to be used elsewhere."""

    path: Path                      # as given: a run folder or a checkpoint inside one
    run_dir: Path
    checkpoint: Path
    cfg: DictConfig                 # the run's saved config
    model: nn.Module
    classes: list[str]              # class index -> name
    summary: dict = field(default_factory=dict)

    @property
    def in_chans(self) -> int:
        return int(self.cfg.data.in_chans)

    @property
    def img_size(self) -> tuple[int, int]:
        size = self.cfg.data.img_size
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def mean(self) -> list[float]:
        return [float(m) for m in self.cfg.data.mean]

    @property
    def std(self) -> list[float]:
        return [float(s) for s in self.cfg.data.std]

    @property
    def resize(self) -> int:
        """The shorter side an image is resized to before the centre crop: the run's
        data.resize (image folders), else its image size (datasets stored at that size)."""
        return int(self.cfg.data.get("resize") or min(self.img_size))

    def eval_transform(self) -> v2.Compose:
        """The data module's evaluation transform (resize, centre crop, normalise) for any
        image a user brings: PIL or uint8 tensor in, a normalised float tensor out."""
        return build_transform(self.mean, self.std, (), self.resize)

    def example(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        """A fixed random batch of normalised input images, to compare two runtimes on."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.in_chans, *self.img_size, generator=g)


def class_names(summary: dict, num_classes: int) -> list[str]:
    """The names the run's data module gave its classes (summary.json `classes`; runs from before
    it was recorded, or data without names: the class indices)."""
    names = summary.get("classes")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def check_classifier(cfg: DictConfig, path) -> None:
    """Only a supervised run has class logits to use; a pre-training run (MAE) or another module
    is refused with the way forward."""
    target = str(cfg.get("module", {}).get("_target_", ""))
    if not getattr(target_class(cfg.get("module")), "classifies", False):
        raise ConfigError(f"{path}: a run of {target or 'no module'} has no trained classifier "
                          f"(a pre-training run?); fine-tune it first (model.pretrained=<this run>) "
                          f"and use that run")


def load_trained(path: str | Path) -> Trained:
    """The trained classifier of a run folder or checkpoint, on the CPU in eval mode."""
    from .run_folder import run_config

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"ckpt_path={path} does not exist (a run folder or a .ckpt inside one)")
    run_dir = run_dir_of(path)
    check_classifier(run_config(path), path)
    cfg, model = load_model(path)
    summary = read_summary(run_dir) if (run_dir / SUMMARY).is_file() else {}
    num_classes = int(cfg.data.num_classes)
    return Trained(path, run_dir, checkpoint_of(path), cfg, model,
                   class_names(summary, num_classes), summary)
