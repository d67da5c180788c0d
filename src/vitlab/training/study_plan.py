"""Equal steps at every data size: the training budget of a data-size study.

With a fixed `trainer.max_epochs`, a run on 10 % of the data takes a tenth of the optimiser steps
of the full-data run, which confounds "needs more data" with "got fewer steps" (the ViT paper,
Sec. 4.4, trains every subset fully). `study.equal_steps=true` turns the epochs into steps:

    steps = ceil(N_full / global_batch) x trainer.max_epochs     (floor with drop_last)

where N_full is the training split before `data.train_fraction` / `data.samples_per_class`, so
every fraction takes the full-data run's steps (`study.steps=<int>` sets them directly). The
trainer then runs `max_steps` with `max_epochs=-1`, the cosine schedule follows the steps
(optim.schedule_steps reads Lightning's estimate), a warm-up in epochs becomes full-data epochs'
steps, and validation runs every steps / study.val_checks optimiser steps, not every (tiny) epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from ..errors import ConfigError
from .distributed import BatchPlan


@dataclass(frozen=True)
class StepBudget:
    steps: int                 # optimiser steps of every run of the study
    full_data_epochs: float    # what those steps are in epochs of the full training split
    val_every: int             # optimiser steps between validations
    warmup_steps: int | None   # the module's warm-up in steps (None: the module's own setting)

    def trainer_overrides(self, accumulate: int) -> dict:
        # val_check_interval counts micro-batches; with check_val_every_n_epoch=None it counts
        # across epoch boundaries, so a tiny fraction is not validated every few steps
        return {"max_steps": self.steps, "max_epochs": -1, "check_val_every_n_epoch": None,
                "val_check_interval": self.val_every * accumulate}

    def module_overrides(self) -> dict:
        return {} if self.warmup_steps is None else {"warmup_steps": self.warmup_steps}


def full_data_steps(full_images: int, global_batch: int, epochs: int, drop_last: bool = False) -> int:
    """Optimiser steps of `epochs` epochs over the full training split."""
    per_epoch = full_images // global_batch if drop_last else math.ceil(full_images / global_batch)
    return max(1, per_epoch) * epochs


def step_budget(cfg: DictConfig, datamodule, plan: BatchPlan) -> StepBudget | None:
    """The study's step budget, or None when runs train for `trainer.max_epochs` (the default
    outside data-size studies). Sets up the data module (the full split's size is needed)."""
    study = cfg.get("study") or {}
    if not study.get("equal_steps") and study.get("steps") is None:
        return None
    datamodule.setup("fit")
    full = getattr(datamodule, "full_train_images", None)
    if full is None:
        raise ConfigError(f"study.equal_steps needs the full training split's size, which "
                          f"{type(datamodule).__name__} does not give; set study.steps instead")
    per_epoch = full_data_steps(full, plan.global_batch, 1, bool(datamodule.drop_last))
    if study.get("steps") is not None:
        steps = int(study.steps)
    else:
        epochs = cfg.trainer.get("max_epochs")
        if not epochs or epochs < 1:
            raise ConfigError("study.equal_steps converts trainer.max_epochs (of the full data) to "
                              "steps: set trainer.max_epochs >= 1, or study.steps")
        steps = per_epoch * int(epochs)
    if steps < 1:
        raise ConfigError(f"study.steps={steps}: use at least 1")
    val_every = max(1, steps // max(1, int(study.get("val_checks") or 30)))
    module = cfg.get("module") or {}
    warmup = None
    if "warmup_steps" in module and module.get("warmup_steps") is None and module.get("warmup_epochs"):
        warmup = round(float(module.warmup_epochs) * per_epoch)  # full-data epochs, as the budget
    return StepBudget(steps, round(steps / per_epoch, 2), val_every, warmup)


def training_budget(cfg: DictConfig, trainer) -> dict:
    """The plan a run trained under, for summary.json: equal steps or equal epochs."""
    study = cfg.get("study") or {}
    fixed = study.get("steps") is not None
    equal = bool(study.get("equal_steps")) or fixed
    return {"equal_steps": equal, "max_steps": trainer.max_steps, "max_epochs": trainer.max_epochs,
            "full_data_epochs": cfg.trainer.get("max_epochs") if equal and not fixed else None,
            "val_check_interval": trainer.val_check_interval,
            "check_val_every_n_epoch": trainer.check_val_every_n_epoch}
