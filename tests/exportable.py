"""A run folder as train.py leaves it (saved config, best checkpoint, summary), made without
training: the model of `overrides` with random weights far from zero, so logits mean something."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import compose_config
from omegaconf import OmegaConf

from vitlab.runs.build_model import build_model


def make_run(folder: Path, overrides: list[str], classes: list[str] | None = None) -> Path:
    cfg = compose_config(overrides, output_dir=folder)
    (folder / ".hydra").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    OmegaConf.save(cfg, folder / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / ".hydra" / "overrides.yaml")
    chosen = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in ("model", "data"))
    choices = {"model": "vit_micro", "data": "digits", **chosen}  # as Hydra records them
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}),
                   folder / ".hydra" / "hydra.yaml")
    torch.manual_seed(0)
    model = build_model(cfg.model, pretrained=False)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(std=0.1)
    best = folder / "checkpoints" / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, best)
    classes = classes or [f"class_{i}" for i in range(int(cfg.data.num_classes))]
    (folder / "summary.json").write_text(json.dumps(
        {"status": "completed", "best_checkpoint": str(best), "classes": classes,
         "test": {"test/acc": 0.5}, "epochs": 1}))
    return folder
