"""Data-parallel runs: the global batch split over processes, and the glue that lets Lightning's
own launchers (its DDP subprocess launcher, SLURM, torchrun, submitit) run a Hydra job.

Batch rule: `data.batch_size` is the global batch of one optimiser step. With world size W
(trainer.devices x trainer.num_nodes) each process takes G / W images per step; when that exceeds
`data.max_device_batch`, it is split into k = ceil((G / W) / max) micro-batches whose gradients
are accumulated, so every process holds G / (W k) images at a time. The optimiser step is the
same whatever W and k: same global batch, same learning rate, same schedule.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

JOB_ARGS = "VITLAB_JOB_ARGS"  # rank 0 -> the workers Lightning starts: which job to run, where
SPAWNED = "VITLAB_SPAWNED_WORKER"  # rank 0 -> the workers Lightning starts: rank 0 checked already


@dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    world_size: int
    accumulate: int       # micro-batches per optimiser step, per process
    device_batch: int     # images per forward pass, per process

    def as_dict(self) -> dict:
        return asdict(self)


def num_devices(devices, accelerator: str | None = "auto") -> int:
    """How many devices Lightning will use per node for a `trainer.devices` value."""
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and devices not in ("auto", "-1"):  # "2" or GPU ids "0,1"
        return len([d for d in devices.split(",") if d.strip()]) if "," in devices else int(devices)
    if isinstance(devices, int) and devices > 0:
        return devices
    # "auto" / -1: every visible GPU when one is asked for (or auto-detected), else 1 process
    gpu = accelerator in ("gpu", "cuda") or (accelerator in (None, "auto") and torch.cuda.is_available())
    return max(1, torch.cuda.device_count()) if gpu else 1


def world_size(cfg: DictConfig) -> int:
    trainer = cfg.get("trainer") or {}
    return num_devices(trainer.get("devices", 1), trainer.get("accelerator")) * int(
        trainer.get("num_nodes", 1) or 1)


def batch_plan(cfg: DictConfig) -> BatchPlan:
    """Per-process batch and gradient accumulation for the config's global batch; a one-line
    ConfigError when the global batch does not split evenly."""
    g, w = int(cfg.data.batch_size), world_size(cfg)
    if g % w:
        raise ConfigError(f"data.batch_size={g} (the global batch) is not divisible by the world size "
                          f"{w} (trainer.devices x trainer.num_nodes); use a multiple of {w}, "
                          f"e.g. {max(w, g // w * w)}")
    per_process, cap = g // w, cfg.data.get("max_device_batch")
    k = math.ceil(per_process / cap) if cap else 1
    if per_process % k:
        raise ConfigError(f"data.batch_size={g} gives {per_process} images per process, which "
                          f"data.max_device_batch={cap} cannot split into {k} equal micro-batches; "
                          f"use a global batch that is a multiple of {w * k}")
    return BatchPlan(global_batch=g, world_size=w, accumulate=k, device_batch=per_process // k)


def refuse_on_every_rank(trainer, refusal: str | None) -> None:
    """End every process with rank 0's one-line refusal (`refusal`: its ConfigError message, or
    None), so that no rank waits for the others in a collective until its timeout.

    Where every process exists already (torchrun, SLURM, submitit), the process group is set up
    now (Lightning's fit reuses it) and rank 0's verdict broadcast. Where Lightning will start the
    workers, rank 0 refuses before they exist, and the workers it starts skip the check."""
    if trainer.world_size > 1 and SPAWNED not in os.environ:
        if trainer.strategy.cluster_environment.creates_processes_externally:
            trainer.strategy.setup_environment()
            refusal = trainer.strategy.broadcast(refusal, src=0)
        elif trainer.is_global_zero:
            os.environ[SPAWNED] = "1"  # job_scope restores the environment afterwards
    if refusal:
        raise ConfigError(refusal)


def slurm_requeued(run_dir) -> str | None:
    """A SLURM job requeued (time limit, pre-emption: callbacks/requeue.py) comes back to its own
    run folder, where Lightning resumes from the newest hpc_ckpt_<n>.ckpt saved there: its path."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return None
    saved = [(int(p.stem.rsplit("_", 1)[1]), p) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt")
             if p.stem.rsplit("_", 1)[1].isdigit()]
    return str(max(saved)[1]) if saved else None


def export_submitit_local_env() -> None:
    """submitit's local executor starts one process per task but tells only submitit which is
    which: export the torch.distributed variables Lightning reads (SLURM needs nothing: Lightning
    reads SLURM's own variables)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local" and int(os.environ.get("SUBMITIT_LOCAL_NTASKS", 1)) > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def check_shared_run_dir() -> None:
    """Under torchrun (or a bare `srun`) every process composes its own config and Hydra would
    give each its own timestamped folder: the run folder must be named on the command line."""
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1
    srun = int(os.environ.get("SLURM_STEP_NUM_TASKS", 1)) > 1 and "SUBMITIT_EXECUTOR" not in os.environ
    if not (torchrun or srun):
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN:
        return
    if not any(o.startswith("hydra.run.dir=") for o in HydraConfig.get().overrides.hydra):
        raise ConfigError("every process of a torchrun / srun launch composes its own config: set "
                          "hydra.run.dir=outputs/train/runs/<name> so that they share one run folder")


@contextmanager
def job_scope(run_dir) -> Iterator[None]:
    """One Hydra job in this process. Lightning's DDP launcher re-runs the script for ranks > 0
    with rank 0's command line — in a multirun that is the whole sweep — so record the job's own
    overrides and folder for them (see `worker_argv`). Afterwards undo what DDP left behind
    (LOCAL_RANK, MASTER_PORT, ... and the process group): otherwise the next job of a multirun
    would believe its workers already exist and wait for them forever."""
    check_shared_run_dir()
    saved = dict(os.environ)
    export_submitit_local_env()
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        os.environ[JOB_ARGS] = json.dumps([
            "--config-name", hc.job.config_name, *hc.overrides.task,
            f'hydra.run.dir="{run_dir}"', "hydra.output_subdir=null", "hydra.mode=RUN"])
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) | set(saved):
            if key not in saved:
                del os.environ[key]
            elif os.environ.get(key) != saved[key]:
                os.environ[key] = saved[key]


def worker_argv(argv: list[str]) -> list[str]:
    """The command line a DDP worker (LOCAL_RANK > 0) started by Lightning should run: its job's
    overrides in its job's folder, as recorded by rank 0; any other process runs `argv`."""
    args, rank = os.environ.get(JOB_ARGS), os.environ.get("LOCAL_RANK", "0")
    if args is None or rank == "0":
        return argv
    return [argv[0], *json.loads(args), f"hydra.job.name=train_ddp_process_{rank}"]
