"""Evaluate a checkpoint: `python src/eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt`."""

import sys

import hydra
from omegaconf import DictConfig

from vitlab.cli import check_command_line
from vitlab.errors import run_or_exit
from vitlab.training.evaluate import evaluate, headline


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    print(headline(run_or_exit(evaluate, cfg), cfg.split))


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "eval")  # an unknown preset or key: one line, exit 2
    main()
