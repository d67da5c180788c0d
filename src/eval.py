"""Evaluate a checkpoint: `python src/eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt`."""

import sys

import hydra
from omegaconf import DictConfig

from vitlab.errors import VitlabError
from vitlab.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        metrics = evaluate(cfg)
    except VitlabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    acc = metrics.get(f"{cfg.split}/acc")
    print(f"{cfg.split} accuracy: {acc:.4f}")


if __name__ == "__main__":
    main()
