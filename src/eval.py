"""Evaluate a checkpoint: `python src/eval.py ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt`."""

import sys

import hydra
from omegaconf import DictConfig

from vitlab.cli import check_command_line
from vitlab.errors import user_error
from vitlab.evaluate import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    try:
        metrics = evaluate(cfg)
    except Exception as e:  # only user-fixable errors are handled here
        error = user_error(e)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    acc = metrics.get(f"{cfg.split}/acc")
    print(f"{cfg.split} accuracy: {acc:.4f}")


if __name__ == "__main__":
    check_command_line(sys.argv[1:], "eval")  # an unknown preset or key: one line, exit 2
    main()
