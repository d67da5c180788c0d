"""SLURM packing: a sweep's single-device jobs in bundles, one bundle per SLURM array task.

A bundle of B = jobs_per_gpu (K) x gpus_per_node (G) jobs runs as one SLURM job of B tasks on one
node with G GPUs; task r runs the bundle's job r on GPU r // K. Each task then looks to Lightning
like a single-process SLURM job (SLURM_NTASKS=1, ...), not like rank r of a B-process run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

# Variables that tell Lightning (SLURM's) and vitlab.training.distributed (submitit's local executor) how
# many processes form one run and which one this is: in a bundle each task is a run of its own.
# (submitit has read its own task id already: its result still lands in the task's own pickle.)
_ONE = {
    "SLURM_NTASKS": "1", "SLURM_NPROCS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_TASKS_PER_NODE": "1",
    "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_NNODES": "1",
    "SLURM_JOB_NUM_NODES": "1", "SLURM_STEP_NUM_NODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0", "SUBMITIT_LOCAL_NTASKS": "1",
}


def bundle_size(jobs_per_gpu: int, gpus_per_node: int) -> int:
    """Jobs per bundle (= tasks per SLURM job): K per GPU, or K per node without GPUs."""
    return jobs_per_gpu * max(1, gpus_per_node)


def make_bundles(jobs: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive groups of `size` jobs; the last one may be smaller."""
    return [list(jobs[i:i + size]) for i in range(0, len(jobs), size)]


def gpus_for(bundle_len: int, jobs_per_gpu: int, gpus_per_node: int) -> int:
    """GPUs a bundle needs: a last, smaller bundle asks for fewer."""
    return min(gpus_per_node, math.ceil(bundle_len / jobs_per_gpu)) if gpus_per_node else 0


def single_process_env(environ: Mapping[str, str], local_rank: int, jobs_per_gpu: int,
                       cpus_per_task: int | None = None) -> dict[str, str]:
    """The variables to set in task `local_rank` of a bundle before its job starts (and before
    CUDA initialises): its own GPU (entry local_rank // K of the GPUs the task sees), and a
    one-process view of the SLURM job so that Lightning trains alone on that GPU."""
    env = {k: v for k, v in _ONE.items() if k in environ}
    if "SLURM_NTASKS" in environ:  # Lightning wants NTASKS_PER_NODE whenever NTASKS is set
        env["SLURM_NTASKS_PER_NODE"] = "1"
    gpus = [g for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[(local_rank // jobs_per_gpu) % len(gpus)]
    if cpus_per_task:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cpus_per_task)
    return env
