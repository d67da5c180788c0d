"""hydra/launcher=ray: a sweep on a Ray cluster (or a Ray instance started on this machine),
`jobs_per_gpu` jobs sharing each GPU.

Built on the maintained hydra-ray-launcher (RayLauncher and its `start_ray` / `launch_job_on_ray`,
which run one Hydra job in a Ray task). What this adds: each job's Ray resources from its own
config, `num_gpus = 1 / jobs_per_gpu` for a GPU job (Ray packs the fractions and sets the task's
CUDA_VISIBLE_DEVICES), `num_cpus` per job, a fresh worker process per job (`max_calls=1`, so each
job's CUDA sees only its GPU), failed tasks recorded as failed jobs, and a one-line refusal of
multi-device jobs: Lightning starts DDP ranks by re-running the command line, which in a Ray
worker is Ray's, not the sweep's.
"""

# (no `from __future__ import annotations` here: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses would look string annotations up)
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

try:
    import hydra_plugins.hydra_ray_launcher._config  # noqa: F401 - registers its `ray` first: ours replaces it
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # the `ray` extra is not installed: say so when the launcher is used
    from hydra.plugins.launcher import Launcher as RayLauncher

log = logging.getLogger(__name__)


@dataclass
class RayPackConf:
    """hydra/launcher=ray, e.g.
    python src/train.py experiment=posemb_ablation trainer=gpu hydra/launcher=ray \\
        hydra.launcher.jobs_per_gpu=4 hydra.launcher.ray.init.address=auto   # auto: join this node's cluster
    Jobs write <sweep dir>/<job number>/ as everywhere else: on a multi-node cluster the sweep dir
    must be on a filesystem every node shares, and vitlab installed on every node. (Registered over
    the plugin's own `ray` config, whose `ray.init` / `ray.remote` keys it keeps: a yaml of the same
    name would be merged into that one as a schema.)"""

    _target_: str = "hydra_plugins.vitlab_launchers.ray_pack_launcher.RayPackLauncher"
    jobs_per_gpu: int = 1        # K: jobs sharing one GPU (Ray resource num_gpus = 1 / K per GPU job)
    cpus_per_job: float = 1      # Ray resource num_cpus of each job (Ray sets its OMP_NUM_THREADS to it)
    ray: Any = field(default_factory=lambda: {
        "init": {                        # ray.init(...) arguments; null ones are not passed
            "address": None,             # null: start Ray here; "auto" / "ray://<head>:10001": join a cluster
            "num_cpus": None,            # local instance only: CPUs Ray may schedule (null: all)
            "num_gpus": None,            # local instance only: GPUs Ray may schedule (null: all)
            "include_dashboard": False,  # local instance only (starts faster); null when joining a cluster
        },
        "remote": {},                    # extra ray.remote options for every job, e.g. {memory: 8e9}
    })


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayPackConf, provider="vitlab")


class RayPackLauncher(RayLauncher):
    def __init__(self, ray: DictConfig, jobs_per_gpu: int = 1, cpus_per_job: float = 1) -> None:
        self.ray_cfg = ray
        self.jobs_per_gpu = jobs_per_gpu
        self.cpus_per_job = cpus_per_job
        self.hydra_context = self.task_function = self.config = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vitlab.launch.hydra_jobs import one_line_errors

        with one_line_errors():
            return self._launch(job_overrides, initial_job_idx)

    def _launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vitlab.errors import ConfigError
        from vitlab.launch import hydra_jobs
        from vitlab.launch.slots import check_positive, check_single_device

        try:
            import ray
            from hydra.core.singleton import Singleton
            from hydra_plugins.hydra_ray_launcher._launcher_util import launch_job_on_ray, start_ray
        except ImportError as error:
            raise ConfigError(f"hydra/launcher=ray needs the ray extra ({error}): "
                              f"pip install -e '.[ray]'") from None
        assert self.config is not None and self.hydra_context is not None
        check_positive("hydra.launcher.jobs_per_gpu", self.jobs_per_gpu)
        if not (isinstance(self.cpus_per_job, (int, float)) and self.cpus_per_job > 0):
            raise ConfigError(f"hydra.launcher.cpus_per_job={self.cpus_per_job!r} must be a number > 0")
        configs = hydra_jobs.sweep_configs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        sweep_dir = hydra_jobs.make_sweep_dir(self.config)
        init = {k: v for k, v in OmegaConf.to_container(self.ray_cfg.init, resolve=True).items()
                if v is not None}  # unset: Ray's default (and required so when joining a cluster)
        start_ray(OmegaConf.create(init))
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        log.info(f"Ray: {len(configs)} jobs, {self.jobs_per_gpu} per GPU on {cluster_gpus} GPU(s), "
                 f"{self.cpus_per_job} CPU(s) each; sweep output dir: {sweep_dir}")
        needs = hydra_jobs.demands(configs, cluster_gpus)
        for i, need in enumerate(needs):
            job = f"job #{initial_job_idx + i}"
            check_single_device(need, job, "on Ray each job is one process", "run multi-device jobs with "
                                "hydra/launcher=pack (one machine) or hydra/launcher=slurm")
            if need.gpu and not cluster_gpus:
                raise ConfigError(f"{job} needs a GPU but the Ray cluster has none; use trainer=cpu or "
                                  f"connect to a cluster with GPUs (hydra.launcher.ray.init.address)")
        extra = OmegaConf.to_container(OmegaConf.create(self.ray_cfg.get("remote") or {}), resolve=True)
        refs = []
        for cfg, need in zip(configs, needs, strict=True):
            remote = {**extra, "num_cpus": self.cpus_per_job, "max_calls": 1,
                      "num_gpus": 1 / self.jobs_per_gpu if need.gpu else 0}
            refs.append(launch_job_on_ray(self.hydra_context, OmegaConf.create(remote), cfg,
                                          self.task_function, Singleton.get_state()))
        results = []
        for ref, overrides, cfg in zip(refs, job_overrides, configs, strict=True):
            try:
                results.append(ray.get(ref))
            except Exception as error:  # the worker died: record it, go on
                results.append(hydra_jobs.failed_return(overrides, error, hydra_jobs.job_dir(cfg)))
        return results
