"""Save a figure into the run folder and log it to the loggers that take images."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def save_and_log(trainer: L.Trainer, fig: Figure, filename: str, key: str) -> Path:
    path = Path(trainer.default_root_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    log.info("%s: %s", key, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, fig, trainer.global_step, close=False)
    return path
