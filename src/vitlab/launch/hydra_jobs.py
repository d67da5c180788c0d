"""Hydra glue the packing launchers share: each job's own composed config, its folder, and a
job whose process died turned into a failed Hydra result (and a failed summary)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError
from ..runs.summary import SUMMARY, read_summary, write_summary
from .slots import Demand, job_demand

log = logging.getLogger(__name__)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A launcher's input error (jobs_per_gpu=0, a job needing more GPUs than exist) ends the
    sweep before any job starts with one line and exit status 2, as src/train.py does for a
    run's config, instead of Hydra's traceback through the plugin."""
    try:
        yield
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def sweep_configs(hydra_context, config: DictConfig, job_overrides: Sequence[Sequence[str]],
                  initial_job_idx: int) -> list[DictConfig]:
    """The config each job will run (as the job itself composes it), numbered as Hydra numbers it."""
    configs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
            cfg.hydra.job.id = f"job_id_for_{idx}"  # a scheduler's id, where there is one, replaces it
        configs.append(cfg)
    return configs


def demands(configs: Sequence[DictConfig], gpus_available: int) -> list[Demand]:
    """What each job needs. A trainer section that cannot be read (say trainer.devices=abc) counts
    as one device: the job then fails in its own process and is recorded like any failed job."""
    out = []
    for cfg in configs:
        try:
            out.append(job_demand(cfg, gpus_available))
        except Exception:  # the job reports its own error
            out.append(Demand(devices=1, gpu=gpus_available > 0))
    return out


def make_sweep_dir(config: DictConfig) -> Path:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:  # as hydra-submitit-launcher does
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    return sweep_dir


def job_dir(cfg: DictConfig) -> Path | None:
    """<sweep dir>/<subdir> of a numbered sweep config, None when it cannot be resolved here."""
    try:
        return Path(str(cfg.hydra.sweep.dir)) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    except Exception:  # e.g. a subdir naming the job id, known only in the job
        return None


def failed_return(overrides: Sequence[str], error: BaseException, folder: Path | None) -> JobReturn:
    """A job whose process ended without a result (crash, kill, timeout): a FAILED JobReturn
    that carries the error, so that Hydra reports it after the whole sweep ran. A summary the run
    left at "running" says "failed" instead, so that the report lists the job as failed."""
    first = (str(error).strip().splitlines() or [""])[0]
    message = f"the job's process ended without a result ({type(error).__name__}: {first})"
    log.error(f"job {list(overrides)}: {message}")
    if folder is not None and (folder / SUMMARY).is_file():
        summary = read_summary(folder)
        if summary.get("status") == "running":
            write_summary(folder, {**summary, "status": "failed", "error": message})
    ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
    ret.return_value = error
    return ret
