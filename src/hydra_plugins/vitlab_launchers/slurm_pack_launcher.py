"""hydra/launcher=slurm_pack: a sweep's single-device jobs packed onto SLURM GPU nodes.

Built on hydra-submitit-launcher's SlurmLauncher (its `__call__` runs one Hydra job in a submitit
task). `launch` groups the jobs into bundles of jobs_per_gpu x gpus_per_node and submits them as
one SLURM job array through submitit: each array task is one node's worth of jobs, started by
srun as that many tasks; task r runs the bundle's job r on GPU r // jobs_per_gpu and sees a
single-process SLURM environment (vitlab.launch.bundles). Multi-device (DDP) jobs stay with
hydra/launcher=slurm: one SLURM job each, one task per GPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class SlurmPackLauncher(SlurmLauncher):
    def __init__(self, jobs_per_gpu: int = 1, cluster: str = "slurm", **submitit_params: Any):
        super().__init__(**submitit_params)
        self.jobs_per_gpu = jobs_per_gpu
        self.cluster = cluster

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vitlab.launch.hydra_jobs import one_line_errors

        with one_line_errors():
            return self._launch(job_overrides, initial_job_idx)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton

        from vitlab.launch import bundles, hydra_jobs
        from vitlab.launch.slots import check_positive, check_single_device

        assert self.config is not None and self.hydra_context is not None
        check_positive("hydra.launcher.jobs_per_gpu", self.jobs_per_gpu)
        gpus_per_node = int(self.params.get("gpus_per_node") or 0)
        configs = hydra_jobs.sweep_configs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        for i, need in enumerate(hydra_jobs.demands(configs, gpus_per_node)):
            check_single_device(need, f"job #{initial_job_idx + i}", "hydra/launcher=slurm_pack packs "
                                "single-device jobs", "run multi-device jobs with hydra/launcher=slurm")
        sweep_dir = hydra_jobs.make_sweep_dir(self.config)
        size = bundles.bundle_size(self.jobs_per_gpu, gpus_per_node)
        jobs = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                 Singleton.get_state()) for i, o in enumerate(job_overrides)]
        groups = bundles.make_bundles(jobs, size)
        log.info(f"Submitit '{self.cluster}': {len(jobs)} jobs in {len(groups)} bundle(s) of up to {size} "
                 f"({self.jobs_per_gpu} per GPU x {gpus_per_node} GPU(s) per node), sweep output dir: "
                 f"{sweep_dir}")
        full, last = [b for b in groups if len(b) == size], [b for b in groups if len(b) < size]
        handles = []  # (submitit job, its bundle): full bundles form one array, a smaller last one its own
        for same_size in (full, last):
            if same_size:
                executor = self._executor(len(same_size[0]), gpus_per_node)
                handles += zip(executor.map_array(self.run_bundle, same_size), same_size, strict=True)
        results = []
        for job, bundle in handles:
            for task, params in enumerate(bundle):
                try:
                    results.append(job.task(task).result())
                except Exception as error:  # the task's process died: record it, go on
                    cfg = configs[params[2] - initial_job_idx]
                    results.append(hydra_jobs.failed_return(params[0], error, hydra_jobs.job_dir(cfg)))
        return results

    def _executor(self, tasks: int, gpus_per_node: int):
        """A submitit executor for bundles of `tasks` jobs: one node, one task per job."""
        import submitit

        from vitlab.launch.bundles import gpus_for

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {k: v for k, v in self.params.items() if k not in ("submitit_folder", "max_num_timeout")}
        params.update(nodes=1, tasks_per_node=tasks, gpus_per_node=gpus_for(tasks, self.jobs_per_gpu,
                                                                             gpus_per_node))
        timeouts = self.params.get("max_num_timeout", 0)
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self.cluster,
                                         slurm_max_num_timeout=timeouts, local_max_num_timeout=timeouts)
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def run_bundle(self, bundle: Sequence[tuple]) -> JobReturn | None:
        """In each task of a bundle: pick this task's job, give it its GPU and a one-process view
        of the SLURM job, run it (SlurmLauncher.__call__)."""
        import submitit
        import torch

        from vitlab.launch.bundles import single_process_env

        rank = submitit.JobEnvironment().local_rank
        if rank >= len(bundle):
            return None
        cpus = self.params.get("cpus_per_task")
        os.environ.update(single_process_env(os.environ, rank, self.jobs_per_gpu, cpus))
        if cpus:  # torch is imported already (unpickling the task function): tell it directly
            torch.set_num_threads(int(cpus))
        return self(*bundle[rank])
