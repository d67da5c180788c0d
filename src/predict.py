"""Predict with a trained run: `python src/predict.py ckpt_path=<run folder> images=<folder>`."""

import sys

import hydra
from omegaconf import DictConfig

from vitlab.cli import check_command_line
from vitlab.errors import run_or_exit
from vitlab.runs.predict import run_predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    path = run_or_exit(run_predict, cfg)
    print(f"predictions: {path}")


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "predict")  # an unknown key: one line, exit 2
    main()
