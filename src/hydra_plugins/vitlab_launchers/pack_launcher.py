"""hydra/launcher=pack: a sweep's jobs side by side on this machine, `jobs_per_gpu` per GPU.

Built on hydra-submitit-launcher's LocalLauncher: its `__call__` runs one Hydra job in the
submitit process, as hydra/launcher=local does. Only `launch` differs: instead of submitting every
job at once, it submits each job to submitit's LocalExecutor when the job's slots are free, with
CUDA_VISIBLE_DEVICES set to the job's GPU(s) (visible_gpus), one process per device
(tasks_per_node, wired by vitlab.training.distributed as for hydra/launcher=local) and OMP/MKL threads
capped so that jobs sharing the CPU do not oversubscribe it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class PackLauncher(LocalLauncher):
    def __init__(self, jobs_per_gpu: int = 1, gpus: Any = None, cpu_jobs: int | None = None,
                 threads_per_process: int | None = None, poll_s: float = 1.0, **submitit_params: Any):
        super().__init__(**submitit_params)
        self.jobs_per_gpu = jobs_per_gpu
        self.gpus = OmegaConf.to_container(gpus) if OmegaConf.is_config(gpus) else gpus
        self.cpu_jobs = cpu_jobs
        self.threads_per_process = threads_per_process
        self.poll_s = poll_s

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vitlab.launch.hydra_jobs import one_line_errors

        with one_line_errors():
            return self._launch(job_overrides, initial_job_idx)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from hydra.core.singleton import Singleton

        from vitlab.launch import hydra_jobs, slots
        from vitlab.launch.packing import run_packed

        assert self.config is not None and self.hydra_context is not None
        pool = slots.SlotPool(slots.visible_gpus(self.gpus), self.jobs_per_gpu, self.cpu_jobs)
        configs = hydra_jobs.sweep_configs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        needs = hydra_jobs.demands(configs, len(pool.gpus))
        sweep_dir = hydra_jobs.make_sweep_dir(self.config)
        where = (f"{pool.jobs_per_gpu} per GPU on GPU(s) {pool.gpus}" if pool.gpus else "no GPU")
        log.info(f"Packing {len(configs)} jobs ({where}; {pool.cpu_jobs} CPU-only at once), "
                 f"sweep output dir: {sweep_dir}")
        executor = submitit.LocalExecutor(folder=self.params["submitit_folder"], max_num_timeout=0)
        cores = slots.cpu_cores()

        def submit(i: int, gpus: tuple[int, ...]):
            need = needs[i]
            busy = len(pool.gpus) * pool.jobs_per_gpu if need.gpu else pool.cpu_jobs * need.devices
            threads = self.threads_per_process or slots.threads_per_process(cores, busy)
            executor.update_parameters(
                timeout_min=self.params.get("timeout_min", 1440), tasks_per_node=need.devices,
                gpus_per_node=len(gpus), visible_gpus=list(gpus),
                stderr_to_stdout=bool(self.params.get("stderr_to_stdout", False)))
            idx = initial_job_idx + i
            with environment(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)):
                job = executor.submit(self, list(job_overrides[i]), "hydra.sweep.dir", idx,
                                      f"job_id_for_{idx}", Singleton.get_state())
            log.info(f"\tstarted #{idx} on {f'GPU {list(gpus)}' if gpus else 'the CPU'} "
                     f"({need.devices} process(es), {threads} thread(s) each; submitit job {job.job_id})")
            return job

        def finish(i: int, job) -> JobReturn:
            try:
                return job.task(0).result()  # rank 0's JobReturn
            except Exception as error:  # the process died: record it, go on
                return hydra_jobs.failed_return(job_overrides[i], error, hydra_jobs.job_dir(configs[i]))

        return run_packed(needs, pool, submit, finish, poll_s=self.poll_s, first=initial_job_idx)


@contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Variables the job's process tree inherits (submitit copies os.environ when it starts a job).
    Not submitit's `setup` lines: those run the job under `/bin/sh -c`, and a cancelled job (Ctrl-C
    handling, a launcher error) would then signal the shell, not the job."""
    saved = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
