"""Evaluate a checkpoint with the model and data of the run that wrote it."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..runs.build_model import build_model
from ..runs.run_folder import run_config
from ..runs.summary import write_summary
from .config_checks import validate


def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt_path = Path(cfg.ckpt_path)
    if not ckpt_path.is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist")
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split!r} must be test or val")
    # `+data.img_size=48`, `+data.batch_size=256`, ...: on top of the run's own (unresolved)
    # config, so the model follows a new image size through its interpolations
    run_cfg = OmegaConf.merge(run_config(ckpt_path),
                              {k: cfg[k] for k in ("data", "model") if k in cfg})
    validate(run_cfg)
    datamodule = instantiate(run_cfg.data)
    module = instantiate(run_cfg.module, model=build_model(run_cfg.model, pretrained=False))
    precision = cfg.trainer.precision or run_cfg.trainer.precision
    trainer = L.Trainer(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices,
                        precision=precision, logger=False, default_root_dir=cfg.paths.output_dir)
    run = trainer.validate if cfg.split == "val" else trainer.test
    results = run(module, datamodule=datamodule, ckpt_path=str(ckpt_path))[0]
    metrics = {k: float(v) for k, v in results.items()}  # synced: every image once, any world size
    if trainer.is_global_zero:
        write_summary(Path(cfg.paths.output_dir), {"status": "completed", "ckpt_path": str(ckpt_path),
                                                   "split": cfg.split, cfg.split: metrics,
                                                   "world_size": trainer.world_size})
    return metrics


def headline(metrics: dict[str, float], split: str) -> str:
    """The one line eval.py prints: a classifier's accuracy, or an MAE pre-training run's
    reconstruction loss (it has no classes; its test masks are the fixed ones of training)."""
    if f"{split}/acc" in metrics:
        return f"{split} accuracy: {metrics[f'{split}/acc']:.4f}"
    return f"{split} reconstruction loss: {metrics[f'{split}/loss']:.4f}"
