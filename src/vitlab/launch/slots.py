"""Which GPUs a packed sweep's next job may use.

Each GPU has `jobs_per_gpu` slots. A job of N devices (trainer.devices, DDP) takes one slot on
each of N distinct GPUs, or waits until they are free; a job that could never fit is a one-line
error before anything starts. CPU-only jobs take one of `cpu_jobs` slots, whatever their number
of processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError


@dataclass(frozen=True)
class Demand:
    devices: int          # processes of the job, one per device (trainer.devices)
    gpu: bool             # runs on GPUs (else on the CPU)
    nodes: int = 1        # trainer.num_nodes


class SlotPool:
    """Free slots per GPU and for CPU-only jobs; `take` hands out GPU ids, `release` returns them."""

    def __init__(self, gpus: Sequence[int], jobs_per_gpu: int, cpu_jobs: int | None = None):
        check_positive("hydra.launcher.jobs_per_gpu", jobs_per_gpu)
        cpu_jobs = jobs_per_gpu if cpu_jobs is None else cpu_jobs
        check_positive("hydra.launcher.cpu_jobs", cpu_jobs)
        self.gpus = list(gpus)
        self.jobs_per_gpu = jobs_per_gpu
        self.free = dict.fromkeys(self.gpus, jobs_per_gpu)
        self.cpu_jobs = self.cpu_free = cpu_jobs

    def check(self, demand: Demand, job: str) -> None:
        """A one-line ConfigError when `demand` could not run even on an idle machine."""
        if demand.nodes > 1:
            raise ConfigError(f"{job} asks for trainer.num_nodes={demand.nodes}: a packing launcher runs "
                              f"on one machine; use hydra/launcher=slurm for multi-node jobs")
        if demand.gpu and demand.devices > len(self.gpus):
            have = f"only {len(self.gpus)} are" if self.gpus else "none is"
            raise ConfigError(f"{job} needs {demand.devices} GPU(s) but {have} available to the launcher "
                              f"(hydra.launcher.gpus / CUDA_VISIBLE_DEVICES); lower trainer.devices"
                              + ("" if self.gpus else " or use trainer=cpu"))

    def take(self, demand: Demand) -> tuple[int, ...] | None:
        """GPU ids for the job (() for a CPU job), or None when it has to wait. Emptiest GPUs
        first, so that jobs spread over all GPUs before any GPU gets a second one."""
        if not demand.gpu:
            if self.cpu_free == 0:
                return None
            self.cpu_free -= 1
            return ()
        candidates = sorted((g for g in self.gpus if self.free[g] > 0), key=lambda g: -self.free[g])
        if len(candidates) < demand.devices:
            return None
        chosen = tuple(sorted(candidates[:demand.devices]))
        for g in chosen:
            self.free[g] -= 1
        return chosen

    def release(self, gpus: tuple[int, ...]) -> None:
        if not gpus:
            self.cpu_free += 1
        for g in gpus:
            self.free[g] += 1


def check_single_device(demand: Demand, job: str, why: str, instead: str) -> None:
    """Launchers that run one process per job (slurm_pack, ray) refuse DDP jobs in one line."""
    if demand.devices > 1 or demand.nodes > 1:
        raise ConfigError(f"{job} asks for {demand.devices} device(s) x {demand.nodes} node(s): {why}; "
                          f"{instead}")


def check_positive(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} must be a whole number >= 1")


def visible_gpus(gpus=None, environ=None) -> list[int]:
    """The GPU ids jobs may be given: `gpus` (a list of ids, or a count of the visible ones), else
    every GPU this process sees. Ids are what CUDA_VISIBLE_DEVICES of a job will name, so under
    a restricted CUDA_VISIBLE_DEVICES they are its entries, not 0..n-1."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [e.strip() for e in listed.split(",") if e.strip()]
        if not all(e.isdigit() for e in entries):
            raise ConfigError(f"CUDA_VISIBLE_DEVICES={listed!r}: the packing launcher needs GPU indices, "
                              f"not UUIDs; set hydra.launcher.gpus=[0,1,...]")
        seen = [int(e) for e in entries]
    else:
        import torch

        seen = list(range(torch.cuda.device_count()))
    if gpus is None:
        return seen
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        if not 0 <= gpus <= len(seen):
            raise ConfigError(f"hydra.launcher.gpus={gpus}: {len(seen)} GPU(s) are visible")
        return seen[:gpus]
    ids = list(gpus)
    if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in ids):
        raise ConfigError(f"hydra.launcher.gpus={ids}: expected GPU indices like [0,1] (or a count, or null)")
    return ids


def job_demand(cfg: DictConfig, gpus_available: int) -> Demand:
    """Devices, GPU or CPU, and nodes of one job, from its composed config (the trainer's
    `accelerator`, `devices`, `num_nodes`); `auto` means the GPUs when there are any."""
    from ..training.distributed import num_devices

    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus_available > 0)
    devices = trainer.get("devices", 1)
    if OmegaConf.is_list(devices):
        devices = list(devices)
    if devices in ("auto", -1, "-1"):
        n = max(1, gpus_available) if gpu else 1
    else:
        n = num_devices(devices, accelerator)
    return Demand(devices=n, gpu=gpu, nodes=int(trainer.get("num_nodes", 1) or 1))


def threads_per_process(cores: int, processes: int) -> int:
    """CPU threads for each of `processes` busy at once on `cores` cores (at least 1)."""
    return max(1, cores // max(1, processes))


def cpu_cores() -> int:
    """Cores this process may run on (a cgroup or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
