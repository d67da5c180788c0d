"""Train a model: `python src/train.py model=vit_lite data=cifar10 trainer=gpu seed=1`."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from vitlab.errors import VitlabError
from vitlab.train import train

log = logging.getLogger("vitlab")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except VitlabError as e:  # a user-fixable input error: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    acc = summary.get("test", {}).get("test/acc")
    if acc is not None:
        print(f"test accuracy: {acc:.4f}  ({summary['wall_time_s']:.0f} s)")
    print(f"run folder: {summary['run_dir']}")
    return acc


if __name__ == "__main__":
    main()
