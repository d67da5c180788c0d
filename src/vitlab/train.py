"""Training pipeline: validate -> data -> model -> fit -> test best checkpoint -> summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .callbacks.throughput import Throughput
from .config_checks import validate
from .summary import write_summary

log = logging.getLogger(__name__)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a name -> config mapping (callbacks, loggers)."""
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig):
    """Data module, LightningModule and Trainer of a composed config."""
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    module = instantiate(cfg.module, model=model)
    trainer = instantiate(cfg.trainer, callbacks=instantiate_dict(cfg.get("callbacks")),
                          logger=instantiate_dict(cfg.get("logger")) or False)
    return datamodule, module, trainer


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def train(cfg: DictConfig) -> dict:
    """Train and test one configuration; return (and write) its summary."""
    start = time.time()
    validate(cfg)
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build(cfg)
    datamodule.setup("fit")
    summary = {
        "status": "running",
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "tags": list(cfg.get("tags") or []),
        "model": cfg.model.get("_name", None) or cfg.model._target_,
        "parameters": count_parameters(module.model),
        "train_images": len(datamodule.splits["train"]),
    }
    write_summary(run_dir, summary)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    ckpt = trainer.checkpoint_callback
    summary["val"] = {"best": float(ckpt.best_model_score) if ckpt and ckpt.best_model_score is not None else None,
                      **_metrics(trainer, "val/")}
    summary["best_checkpoint"] = ckpt.best_model_path if ckpt else None
    if cfg.get("test") and not trainer.fast_dev_run:
        trainer.test(module, datamodule=datamodule, ckpt_path="best" if ckpt and ckpt.best_model_path else None)
        summary["test"] = _metrics(trainer, "test/")
    throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
    summary["images_per_sec"] = throughput.images_per_sec if throughput else None
    summary["epochs"] = trainer.current_epoch
    summary["wall_time_s"] = round(time.time() - start, 2)
    summary["status"] = "completed"
    write_summary(run_dir, summary)
    return summary
