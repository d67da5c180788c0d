"""hydra/sweeper=tuned: a fair comparison. Every configuration of a grid gets its own Optuna
study on the validation split, then its best setting trains on several seeds and is tested.

Stage 1, tuning: for each point of the grid (`params` and the command line: every choice sweep
but `seed`, e.g. model/pos_embed=a,b,c) hydra-optuna-sweeper's own OptunaSweeper, built afresh
from `optuna` (so each study starts from the same seeded sampler), runs `optuna.n_trials` trials
with `tuning_overrides` (objective=val/best test=false: the study never sees the test split).
Interval sweeps on the command line join the search space, plain values go to every job.
`variant_params` are search-space entries for a knob only some points have (a positional
variant's own init_std): a point tunes them where its composed config holds the key.
Stage 2, final: each point with its best trial's values (Optuna's optimization_results.yaml) on
every value of `seed`, tested. One sweep folder holds everything:
  tune/<point>/<trial>/                     a tuning trial's run folder
  tune/<point>/optimization_results.yaml   Optuna's best trial of that point
  final/<job>/                              a final run's folder
  tuned.yaml                                per point: its search space, chosen values, best val,
                                            final jobs
Every job keeps the sweep's hydra.sweep.dir (one sweep for loggers); its stage is its subdir.
"""

import copy
import itertools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

SEED = "seed"  # the grid key whose values are the final stage's seeds, not configurations
MANIFEST = "tuned.yaml"


def require_optuna() -> None:
    """One line instead of a traceback when the optional extra is missing."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage layer: a log line per plugin
    try:
        import hydra_plugins.hydra_optuna_sweeper.optuna_sweeper  # noqa: F401
        import optuna  # noqa: F401
    except ImportError as error:
        print(f"error: hydra/sweeper=tuned (experiment=posemb_tuned) needs Optuna ({error}): "
              "pip install 'vitlab[optuna]'", file=sys.stderr)
        raise SystemExit(2) from None


def split_arguments(lines: Sequence[str], config_loader=None) -> dict[str, Any]:
    """The sweep's overrides (params first, the command line last: it wins) as the grid of
    points (lists of overrides), the seeds, the overrides every job gets and the extra search
    space (interval sweeps, for Optuna)."""
    parser = OverridesParser.create(config_loader=config_loader)
    by_key = {o.get_key_element(): o for o in parser.parse_overrides(list(lines))}
    axes, seeds, fixed, search = [], [None], [], []
    for key, o in by_key.items():
        if key == SEED:
            swept = o.is_sweep_override()
            seeds = list(o.sweep_string_iterator()) if swept else [o.get_value_element_as_str()]
        elif o.is_discrete_sweep():
            axes.append([f"{key}={value}" for value in o.sweep_string_iterator()])
        elif o.is_sweep_override():
            search.append(o.input_line)
        else:
            fixed.append(o.input_line)
    return {"grid": [list(p) for p in itertools.product(*axes)], "seeds": seeds, "fixed": fixed,
            "search": search}


def point_folder(point: Sequence[str]) -> str:
    """tune/<values of the point>, e.g. tune/relative_bias."""
    name = ",".join(o.split("=", 1)[1] for o in point).replace("/", "_")
    return f"tune/{name or 'all'}"


def stage_config(config: DictConfig, folder: str) -> DictConfig:
    """The sweep's config for one stage: its jobs run in <sweep>/<folder>/<job number>/ (set as
    their hydra.sweep.subdir, as if typed on the command line: each job composes its own config
    from the hydra overrides), and the stage's own files land in <sweep>/<folder>/."""
    cfg = copy.deepcopy(config)
    OmegaConf.copy_cache(from_config=config, to_config=cfg)  # the same ${now:} as the sweep
    with open_dict(cfg):
        cfg.hydra.sweep.dir = f"{config.hydra.sweep.dir}/{folder}"
        kept = [o for o in cfg.hydra.overrides.hydra if not str(o).startswith("hydra.sweep.subdir=")]
        cfg.hydra.overrides.hydra = [*kept, f"hydra.sweep.subdir='{folder}/${{hydra.job.num}}'"]
    return cfg


class TunedSweeper(Sweeper):
    def __init__(self, optuna: DictConfig, params: DictConfig | None = None,
                 tuning_overrides: Sequence[str] = (), variant_params: DictConfig | None = None):
        self.optuna = optuna  # instantiated once per study: a fresh, seeded sampler each
        self.params = params or {}
        self.variant_params = dict(variant_params or {})
        self.tuning_overrides = list(tuning_overrides)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        require_optuna()
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        plan = split_arguments([*(f"{k}={v}" for k, v in self.params.items()), *arguments],
                               self.hydra_context.config_loader)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal([[*plan["fixed"], *point] for point in plan["grid"]])
        points = [self.tune(point, plan) for point in plan["grid"]]
        jobs = final_jobs(points, plan)
        manifest = {"seeds": plan["seeds"], "tuning_overrides": self.tuning_overrides,
                    "search_space": {**OmegaConf.to_container(self.optuna.params or {}),
                                     **dict(o.split("=", 1) for o in plan["search"])},
                    "points": points}
        OmegaConf.save(OmegaConf.create(manifest), sweep_dir / MANIFEST)
        log.info(f"Chosen values per point: {sweep_dir / MANIFEST}")
        returns = self.final(jobs)
        untuned = [" ".join(p["overrides"]) for p in points if p["error"]]
        for ret in returns:
            _ = ret.return_value  # a failed final run fails the sweep, after all of them ran
        if untuned:
            raise RuntimeError(f"no completed tuning trial for: {'; '.join(untuned)} (see {MANIFEST})")
        return returns

    def tune(self, point: list[str], plan: dict) -> dict:
        """One Optuna study for this point; its best trial's values."""
        folder = point_folder(point)
        cfg = stage_config(self.config, folder)
        job = self.hydra_context.config_loader.load_sweep_config(self.config, [*plan["fixed"], *point])
        own = present_params(job, self.variant_params)
        space = {**OmegaConf.to_container(self.optuna.params or {}), **own}
        name = self.optuna.study_name  # one study per point, also in a shared Optuna storage
        study = instantiate(self.optuna, study_name=f"{name}:{folder}" if name else None,
                            params=space)
        study.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg)
        log.info(f"Tuning {' '.join(point) or 'the config'}: {self.optuna.n_trials} trials in {folder}/")
        out = {"overrides": point, "folder": folder, "search_space": {
                   **space, **dict(o.split("=", 1) for o in plan["search"])},
               "best_value": None, "best_params": None, "final_jobs": [], "error": None}
        try:
            study.sweep([*plan["fixed"], *point, *plan["search"], *self.tuning_overrides])
        except ValueError as error:  # every trial failed: Optuna has no best trial
            log.error(f"Tuning {' '.join(point)} failed: {error}")
            out["error"] = str(error)
            return out
        best = OmegaConf.load(Path(cfg.hydra.sweep.dir) / "optimization_results.yaml")
        out.update(best_value=best.best_value, best_params=OmegaConf.to_container(best.best_params))
        return out

    def final(self, jobs: list[list[str]]) -> list[JobReturn]:
        """All final runs in one launch (a parallel launcher runs them side by side)."""
        if not jobs:
            return []
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function,
            config=stage_config(self.config, "final"))
        log.info(f"Final stage: {len(jobs)} runs of the tuned settings in final/")
        returns = list(launcher.launch(jobs, initial_job_idx=0))
        failed = sum(r.status == JobStatus.FAILED for r in returns)
        if failed:
            log.error(f"{failed} of {len(returns)} final runs failed")
        return returns


def present_params(job: DictConfig, variant_params: dict) -> dict:
    """The entries of `variant_params` whose key this point's composed config holds."""
    return {k: v for k, v in variant_params.items() if OmegaConf.select(job, k) is not None}


def final_jobs(points: list[dict], plan: dict) -> list[list[str]]:
    """The overrides of every final run: each tuned point with its best values on every seed;
    each point records its jobs' folders (final/<job number>)."""
    jobs = []
    for p in (p for p in points if p["best_params"] is not None):
        best = [f"{k}={v}" for k, v in p["best_params"].items()]
        for seed in plan["seeds"]:
            p["final_jobs"].append(f"final/{len(jobs)}")
            jobs.append([*plan["fixed"], *p["overrides"], *best,
                         *([f"{SEED}={seed}"] if seed is not None else [])])
    return jobs
