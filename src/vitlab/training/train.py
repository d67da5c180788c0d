"""Training pipeline: validate -> data -> model -> fit -> test best checkpoint -> bias probes
of it -> summary.

The summary is written when the run starts ("running") and again when it ends, whatever the
ending: "completed", "interrupted" (Ctrl-C / SIGTERM; a checkpoint was saved), "diverged"
(non-finite loss) or "failed".
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from ..analysis.probes.run import check_sizes, probe_summary
from ..callbacks.guards import DivergenceError, InterruptCheckpoint
from ..callbacks.requeue import Requeued
from ..callbacks.throughput import Throughput
from ..errors import ConfigError
from ..objectives.optim import fused_where_possible
from ..runs.build_model import build_model
from ..runs.summary import SUMMARY, read_summary, write_summary
from .config_checks import validate
from .distributed import BatchPlan, batch_plan, job_scope, refuse_on_every_rank, slurm_requeued
from .fp8 import float8_training
from .loggers import finish_loggers, log_run_config
from .study_plan import step_budget, training_budget

log = logging.getLogger(__name__)
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a name -> config mapping (callbacks, loggers)."""
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def build(cfg: DictConfig, plan: BatchPlan | None = None):
    """Data module, LightningModule and Trainer of a composed config. `data.batch_size` is the
    global batch: each process loads its share, accumulated when data.max_device_batch says so
    (`plan`: validate's, else computed here)."""
    plan = plan or batch_plan(cfg)
    # a compiled model wants one batch shape: no recompilation, and CUDA graphs can replay
    fixed = {"drop_last": True} if cfg.get("compile") and cfg.data.get("drop_last") is None else {}
    model = build_model(cfg.model)  # first: a checkpoint that does not fit stops the run early
    datamodule = instantiate(cfg.data, batch_size=plan.device_batch, **fixed)
    budget = step_budget(cfg, datamodule, plan)  # equal steps at every data size, or None
    callbacks = instantiate_dict(cfg.get("callbacks"))
    # callbacks that must see a hook before the others say so (ExactResume.runs_first), whatever
    # their place in the YAML; the rest keep their order (a stable sort)
    callbacks.sort(key=lambda c: not getattr(c, "runs_first", False))
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    trainer = instantiate(cfg.trainer, accumulate_grad_batches=plan.accumulate, callbacks=callbacks,
                          logger=instantiate_dict(cfg.get("logger")) or False,
                          **(budget.trainer_overrides(plan.accumulate) if budget else {}))
    if cfg.get("fp8"):
        model = float8_training(model, trainer.strategy.root_device)
    # the module compiles what its step runs (BaseModule), in place: checkpoints keep the names
    module = instantiate(cfg.module, model=model, compile=bool(cfg.get("compile")),
                         compile_mode=cfg.get("compile_mode"),
                         **(budget.module_overrides() if budget else {}))
    fast_path(cfg, module, trainer.strategy.root_device)
    return datamodule, module, trainer


def fast_path(cfg: DictConfig, module: L.LightningModule, device: torch.device) -> None:
    """AdamW's fused kernel on the CPU and CUDA; on CUDA fp32 matmuls at `matmul_precision`
    (high: TF32); no driver probe at every step where there is no NVIDIA driver."""
    skip_failing_nvml_probe()
    if device.type == "cuda":
        torch.set_float32_matmul_precision(cfg.get("matmul_precision") or "highest")
    module.optimizer_factory = fused_where_possible(module.optimizer_factory, device)


def skip_failing_nvml_probe() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so torch.cuda.is_available() asks NVML
    (which does not poison fork) before CUDA is initialised. torch's optimisers ask at every
    step, and on a machine without NVIDIA's driver torch then loads libnvidia-ml anew each time,
    fails and falls back to the CUDA runtime's count (docs/guides/performance.md times it).
    Where that library cannot load, ask the runtime directly: the same answer, without the
    failing load. Where it loads (a GPU machine), nothing changes."""
    if os.environ.get(NVML_CHECK) != "1" or torch.version.cuda is None or torch.version.hip:
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ[NVML_CHECK] = "0"


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """`last` means this run folder's checkpoints/last.ckpt; a path must exist."""
    if ckpt_path is None:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (resume a run with hydra.run.dir=<its folder> ckpt_path=last)" \
            if ckpt_path == "last" else ""
        raise ConfigError(f"ckpt_path={ckpt_path}: no checkpoint at {path}{hint}")
    return str(path)


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """Never overwrite a finished run: only resuming may reuse a run folder."""
    if (run_dir / SUMMARY).is_file() and not resuming:
        status = read_summary(run_dir).get("status")
        raise ConfigError(f"run folder {run_dir} already holds a run ({status}); choose another "
                          f"hydra.run.dir, or resume it with ckpt_path=last")


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _status(error: BaseException, interrupt: InterruptCheckpoint | None) -> str:
    if isinstance(error, Requeued):
        return "requeued"
    # Lightning turns Ctrl-C into SystemExit(1) after its on_exception hooks ran
    if isinstance(error, (KeyboardInterrupt, SIGTERMException)) or (interrupt and interrupt.path):
        return "interrupted"
    return "diverged" if isinstance(error, DivergenceError) else "failed"


def train(cfg: DictConfig) -> dict:
    """Train and test one configuration; return (and write) its summary. In a data-parallel
    run every process runs this; only global rank 0 writes the summary."""
    with job_scope(cfg.paths.output_dir):
        return _train(cfg)


def probes_wanted(cfg: DictConfig) -> bool:
    """Probes after testing: asked for, and refused before training if their grids do not tile."""
    probes = cfg.get("probes")
    if not (probes and probes.get("enabled") and cfg.get("test")):
        return False
    size = cfg.data.get("img_size")
    if size is not None:
        check_sizes(probes, (size, size) if isinstance(size, int) else tuple(size))
    return True


def probe_best(cfg: DictConfig, module: L.LightningModule, datamodule, trainer: L.Trainer) -> dict:
    """The bias probes of the weights just tested (the best checkpoint's), on the device; what
    goes wrong is recorded in the summary, never raised: the run is already complete."""
    if "test/acc" not in trainer.callback_metrics:
        return {"probes": {"skipped": {"all": "no test/acc: the probes need a classifier"}}}
    try:
        return probe_summary(module.model, datamodule.test_dataloader(), cfg.probes,
                             trainer.strategy.root_device, cfg.data.get("mean"), cfg.data.get("std"))
    except Exception as error:  # noqa: BLE001 - recorded, the trained run stays completed
        log.warning("probes failed after training: %s", error)
        return {"probes": {"skipped": {"all": f"{type(error).__name__}: {error}"}}}


def _train(cfg: DictConfig) -> dict:
    start = time.time()
    plan = validate(cfg)
    with_probes = probes_wanted(cfg)
    run_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    resumed_from = ckpt_path or slurm_requeued(run_dir)  # Lightning picks a requeued job's hpc_ckpt
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module, trainer = build(cfg, plan)
    rank0 = trainer.is_global_zero  # known once the Trainer exists (SLURM, torchrun, submitit)
    if trainer.world_size > 1:  # the model is built alike on every rank; from here each its own
        # streams (dropout, drop-path, augmentation), as timm seeds them; Lightning's DDP setup
        # re-seeds every rank from PL_GLOBAL_SEED, which this sets too
        L.seed_everything(cfg.seed + trainer.global_rank, workers=True, verbose=False)
    refusal = None
    if rank0:
        try:
            check_run_dir(run_dir, resuming=resumed_from is not None)
        except ConfigError as error:
            refusal = str(error)
    refuse_on_every_rank(trainer, refusal)
    datamodule.setup("fit")
    summary = {
        "status": "running",
        "run_dir": str(run_dir),
        "started_at": round(start, 3),  # unix time: when jobs of a sweep ran, and side by side
        "seed": cfg.seed,
        "tags": list(cfg.get("tags") or []),
        "model": cfg.model._target_,
        "parameters": count_parameters(module.model),
        "train_images": len(datamodule.splits["train"]),
        "resumed_from": resumed_from,
        "batch": plan.as_dict(),
        "budget": training_budget(cfg, trainer),
    }
    if rank0:
        write_summary(run_dir, summary)
    try:
        log_run_config(trainer.loggers, cfg, summary["parameters"])
        fit_start = time.time()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        summary["fit_time_s"] = round(time.time() - fit_start, 2)  # the probes' cost is measured against it
        ckpt = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)  # best by val/acc
        best = ckpt.best_model_path if ckpt else ""
        summary["best_checkpoint"] = best or None
        summary["val"] = {"best": float(ckpt.best_model_score) if best else None,
                          **_metrics(trainer, "val/")}
        if cfg.get("test") and not trainer.fast_dev_run:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            summary["test"] = _metrics(trainer, "test/")
            if with_probes and rank0:
                summary.update(probe_best(cfg, module, datamodule, trainer))
                if summary.get("probe_time_s") is not None:  # the cost, beside the training's
                    log.info("bias probes: %.1f s on %d images (%.1f %% of the fit's %.1f s)",
                             summary["probe_time_s"], summary["probe_images"],
                             100 * summary["probe_time_s"] / max(summary["fit_time_s"], 1e-9),
                             summary["fit_time_s"])
        summary["skipped_images"] = sorted(_skipped(datamodule, trainer))  # every rank's
        summary["status"] = "completed"
    except BaseException as error:  # record how the run ended, then let it propagate
        interrupt = next((c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)), None)
        summary["status"] = _status(error, interrupt)
        summary["error"] = str(error) or type(error).__name__
        summary["interrupt_checkpoint"] = str(interrupt.path) if interrupt and interrupt.path else None
        if isinstance(error, Requeued):
            summary["interrupt_checkpoint"] = error.path
            log.info("%s", error)
        raise
    finally:
        throughput = next((c for c in trainer.callbacks if isinstance(c, Throughput)), None)
        speed = throughput.images_per_sec if throughput else None  # this process's
        summary["images_per_sec"] = speed * trainer.world_size if speed else None  # all of them
        summary["global_step"] = trainer.global_step
        summary["epochs"] = trainer.current_epoch
        if "skipped_images" not in summary:  # a run that failed: this rank's, no collective
            summary["skipped_images"] = sorted(_skipped(datamodule))
        summary["classes"] = [str(c) for c in getattr(datamodule, "classes", ())]  # for export, predict
        for callback in trainer.callbacks:  # figures' data (attention distance, ...) for reports
            summary.update(getattr(callback, "summary_values", {}))
        summary["finished_at"] = round(time.time(), 3)
        summary["wall_time_s"] = round(summary["finished_at"] - start, 2)
        if rank0:
            write_summary(run_dir, summary)
        finish_loggers(trainer.loggers, summary)  # a sweep's next job: own W&B run
    return summary


def _skipped(datamodule, trainer: L.Trainer | None = None) -> set[str]:
    """Unreadable images skipped with data.skip_corrupt=true, from every split (and its loader
    workers); with a `trainer` of several processes, from every rank (each read its share)."""
    found = set()
    for split in datamodule.splits.values():
        ds = split
        while hasattr(ds, "dataset"):  # through Subset wrappers
            ds = ds.dataset
        found |= getattr(ds, "skipped", set())
    if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
        ranks = [None] * trainer.world_size
        torch.distributed.all_gather_object(ranks, found)
        found = set().union(*ranks)
    return found
