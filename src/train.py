"""Train a model: `python src/train.py model=vit_lite data=cifar10 trainer=gpu seed=1`."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from vitlab.cli import check_command_line
from vitlab.errors import ConfigError, user_error
from vitlab.training.distributed import worker_argv
from vitlab.training.train import train


def check_objective(cfg: DictConfig) -> str:
    """`objective` names a summary value: test/<metric>, val/<metric> or val/best. (With
    test=false a test/ objective has no value: the run returns None.)"""
    name = str(cfg.get("objective") or "test/acc")
    section, _, metric = name.partition("/")
    if section not in ("val", "test") or not metric:
        raise ConfigError(f"objective={name}: use test/acc, test/acc_top5, val/best or val/<metric>")
    return name


def objective_value(summary: dict, name: str) -> float | None:
    """The summary's value of the objective: test/acc -> summary["test"]["test/acc"],
    val/best -> summary["val"]["best"] (the best validation accuracy, which chose best.ckpt)."""
    section, _, metric = name.partition("/")
    values = summary.get(section) or {}
    return values.get(name, values.get(metric))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        objective = check_objective(cfg)
        summary = train(cfg)
        value = objective_value(summary, objective)  # None without that metric (test=false, debug=fast)
    except Exception as e:  # only user-fixable errors are handled here
        error = user_error(e)  # also one raised while Hydra instantiated a part
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed and runs the others
        sys.exit(2)  # a user-fixable input error: one line, no traceback
    except SIGTERMException:  # pre-empted: a checkpoint was saved; exit as killed by SIGTERM
        sys.exit(143)
    if rank_zero_only.rank:  # a DDP worker: rank 0 reports
        return value
    acc = summary.get("test", {}).get("test/acc")
    if acc is not None:
        print(f"test accuracy: {acc:.4f}  ({summary['wall_time_s']:.0f} s)")
    if objective != "test/acc" and value is not None:
        print(f"objective {objective}: {value:.4f}")
    print(f"run folder: {summary['run_dir']}")
    return value  # what a sweeper (Optuna) optimises


if __name__ == "__main__":
    sys.argv = worker_argv(sys.argv)  # a DDP worker runs its own job's config, in its folder
    check_command_line(sys.argv[1:], "train")  # an unknown preset or key: one line, exit 2
    main()
