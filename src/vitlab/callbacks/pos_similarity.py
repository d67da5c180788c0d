"""At the end of training: the positional-embedding similarity figure (ViT paper, Fig. 7 centre)
saved as PNG in the run folder and logged to the loggers that take images. Variants without a
learned table (none, sincos, relative ones) are skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ..analysis.pos_similarity import (
    has_learned_table,
    plot_position_similarity,
    position_similarity,
)

log = logging.getLogger(__name__)


class PositionSimilarity(L.Callback):
    def __init__(self, filename: str = "pos_similarity.png", key: str = "pos_embed/similarity"):
        self.filename = filename
        self.key = key
        self.summary_values: dict = {}  # copied into summary.json: what a report redraws

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = getattr(pl_module, "model", pl_module)
        if not trainer.is_global_zero or not has_learned_table(model):
            return
        sim, grid = position_similarity(model), model.pos_embed.grid
        self.summary_values = {"pos_similarity": {
            "grid": list(grid), "values": [[round(float(v), 3) for v in row.flatten()] for row in sim]}}
        fig = plot_position_similarity(sim, grid)
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
        log.info("positional-embedding similarity: %s", path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=[str(path)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(self.key, fig, trainer.global_step, close=False)
