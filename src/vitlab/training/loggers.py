"""Loggers for studies: a W&B logger that groups a sweep's runs and never stops a run, and the
resolved config plus parameter count logged to every logger.

W&B mode: the WANDB_MODE environment variable when set (online | offline | disabled), else
`offline` from the config (default true). Offline runs are written to
<run folder>/wandb/offline-run-* and uploaded later with `wandb sync <that folder>`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def hydra_run_info() -> dict:
    """Choices, overrides and sweep of the current Hydra job; empty outside a Hydra run."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return {"choices": {k: v for k, v in hc.runtime.choices.items() if v is not None},
            "overrides": list(hc.overrides.task), "multirun": multirun,
            "sweep": Path(hc.sweep.dir).name if multirun else None,
            "job_name": hc.job.name, "override_dirname": hc.job.override_dirname}


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with defaults for studies: `group` = the sweep
    (<experiment>_<sweep folder>), `job_type` = the model preset, tags += model, positional
    variant and training fraction. If W&B cannot start online, it falls back to offline."""

    def __init__(self, offline: bool = True, group: str | None = None, job_type: str | None = None,
                 tags: list | None = None, train_fraction: float | None = None, **kwargs):
        info = hydra_run_info()
        choices = info.get("choices", {})
        experiment = choices.get("experiment")
        if group is None and info.get("multirun"):
            group = f"{experiment or info['job_name']}_{info['sweep']}"
        elif group is None:
            group = experiment
        labels = {"model": choices.get("model"), "pos_embed": choices.get("model/pos_embed"),
                  "train_fraction": train_fraction}
        tags = [*(tags or []), *(f"{k}={v}" for k, v in labels.items() if v is not None)]
        if kwargs.get("name") is None and info.get("multirun"):
            kwargs["name"] = info["override_dirname"][:120] or None
        mode = os.environ.get("WANDB_MODE") or ("offline" if offline else "online")
        if mode == "online":  # fail fast rather than wait long for an unreachable server
            kwargs.setdefault("settings", {"init_timeout": 30})
        # mode goes to wandb.init; Lightning's own `offline` flag would set WANDB_MODE for the
        # whole process (every later job of a sweep) and forbid log_model
        super().__init__(offline=False, group=group, job_type=job_type or choices.get("model"),
                         tags=[str(t)[:64] for t in tags], mode=mode, **kwargs)

    @property
    @rank_zero_experiment
    def experiment(self):
        try:
            return super().experiment
        except Exception as error:  # unreachable, no API key, ...: never fail the run for it
            if self._wandb_init.get("mode") == "offline":
                raise
            log.warning("W&B could not start online (%s); logging offline instead, upload later "
                        "with `wandb sync`", error)
            self._wandb_init["mode"] = "offline"
            self._wandb_init.pop("settings", None)
            return super().experiment

    def finish(self, summary: dict) -> None:
        """Put the run summary's status and throughput into the W&B summary and end the run
        (jobs of a sweep share a process: the next job needs its own W&B run)."""
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            keys = ("status", "parameters", "images_per_sec", "wall_time_s", "train_images")
            self._experiment.summary.update({k: summary[k] for k in keys if summary.get(k) is not None})
            self._experiment.finish(exit_code=0 if summary.get("status") == "completed" else 1)
            self._experiment = None


# config keys whose values are credentials (a store client's keys, tokens): logged as keys only
SECRET_KEYS = ("storage_options",)
REDACTED = "<redacted>"


def redact_secrets(node):
    """`node` (a plain container) with every value under a SECRET_KEYS key replaced by REDACTED."""
    if isinstance(node, dict):
        return {k: ({kk: REDACTED for kk in v} if isinstance(v, dict) else REDACTED if v else v)
                if k in SECRET_KEYS else redact_secrets(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_secrets(v) for v in node]
    return node


def _resolved(cfg: DictConfig) -> dict:
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:...} when composed outside a Hydra run (tests, notebooks)
        config = OmegaConf.to_container(cfg, resolve=False)
    return redact_secrets(config)


def log_run_config(loggers: list, cfg: DictConfig, parameters: int) -> None:
    """The resolved config, the command-line overrides (how reports group runs) and the
    parameter count, to every logger."""
    params = {"config": _resolved(cfg), "parameters": parameters,
              "overrides": hydra_run_info().get("overrides", [])}
    for logger in loggers:
        logger.log_hyperparams(params)


def finish_loggers(loggers: list, summary: dict) -> None:
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.finish(summary)
            except Exception as error:  # the summary matters more than the W&B upload
                log.warning("W&B finish failed: %s", error)
