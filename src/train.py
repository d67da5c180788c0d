"""Train a model: `python src/train.py model=vit_lite data=cifar10 trainer=gpu seed=1`."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from vitlab.distributed import worker_argv
from vitlab.errors import VitlabError
from vitlab.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except VitlabError as e:
        print(f"error: {e}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the job as failed and runs the others
        sys.exit(2)  # a user-fixable input error: one line, no traceback
    except SIGTERMException:  # pre-empted: a checkpoint was saved; exit as killed by SIGTERM
        sys.exit(143)
    acc = summary.get("test", {}).get("test/acc")
    if rank_zero_only.rank:  # a DDP worker: rank 0 reports
        return acc
    if acc is not None:
        print(f"test accuracy: {acc:.4f}  ({summary['wall_time_s']:.0f} s)")
    print(f"run folder: {summary['run_dir']}")
    return acc


if __name__ == "__main__":
    sys.argv = worker_argv(sys.argv)  # a DDP worker runs its own job's config, in its folder
    main()
