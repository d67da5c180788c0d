"""Every private Lightning and torchmetrics attribute vitlab reads or writes, in one place.

Exact resume (docs/guides/reliability.md, "Resuming mid-epoch"), the SLURM requeue and the keyed
loaders need state that neither library exposes: the loop's loader cache and logging step, the
batch counters of an interrupted epoch, a metric's raw accumulators, the cluster environment and
the HPC checkpoint path. Each is reached through a function here, so that an upgrade that renames
one breaks in one module, and `missing()` (run by tests/test_internals.py against the installed
versions) names what moved in one line each, instead of a resumed run quietly training on other
batches.
"""

from __future__ import annotations

from torchmetrics import Metric

# what each accessor reads: (owner, attribute path) -> who needs it
READS = {
    ("FitLoop", "_combined_loader"): "callbacks/exact_resume.py: rebuild the training loader after a restore",
    ("FitLoop", "restarted_mid_epoch"): "data/datamodule.py: where a resumed epoch starts",
    ("_TrainingEpochLoop", "_batches_that_stepped"): "exact_resume.py, log_to_loggers: the logging step",
    ("_TrainingEpochLoop", "batch_progress.current.ready"): "data/: the batch being fetched",
    ("_TrainingEpochLoop", "batch_progress.current.processed"): "data/datamodule.py: the batches done",
    ("Trainer", "_accelerator_connector.cluster_environment"): "callbacks/requeue.py: SLURM",
    ("Trainer", "_checkpoint_connector.hpc_save_path"): "callbacks/requeue.py: the hpc_ckpt name",
    ("Metric", "_update_count"): "callbacks/metric_state.py: a metric's accumulators",
    ("Metric", "_defaults"): "callbacks/metric_state.py",
    ("Metric", "_reductions"): "callbacks/metric_state.py",
    ("Metric", "_computed"): "callbacks/metric_state.py",
}


# ---- Lightning's fit loop

def reload_train_loader(trainer) -> None:
    """Build the training loader anew (Lightning's own way: setup_data rebuilds a cleared cache)."""
    trainer.fit_loop._combined_loader = None
    trainer.fit_loop.setup_data()


def restarted_mid_epoch(trainer) -> bool:
    return bool(trainer.fit_loop.restarted_mid_epoch)


def logging_step(trainer) -> int:
    """The step the loggers file this batch's values under (what Lightning's callbacks log with)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_to_loggers(trainer, values: dict) -> None:
    """Per-step values straight to the loggers, as Lightning's own callbacks log (the learning
    rate): no `self.log`, whose walk over Lightning's result collection is a measurable part
    of a small CPU step. For values that need no reduction over processes or progress bar;
    rank zero only (each logger's log_metrics says so)."""
    values = {k: float(v) for k, v in values.items()}
    values["epoch"] = trainer.current_epoch  # as Lightning adds to the values it logs
    for logger in trainer.loggers:
        logger.log_metrics(values, step=logging_step(trainer))


def set_logging_step(trainer, step: int) -> None:
    trainer.fit_loop.epoch_loop._batches_that_stepped = step


def batches_ready(trainer) -> int:
    """The index in its epoch of the batch being fetched."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready


def batches_processed(trainer) -> int:
    """The batches of this epoch whose step ran (a SIGTERM checkpoint is saved after its step)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def cluster_environment(trainer):
    return trainer._accelerator_connector.cluster_environment


def hpc_save_path(trainer) -> str:
    return trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)


# ---- torchmetrics' accumulators

def metric_state_names(metric: Metric) -> list[str]:
    return list(metric._defaults)


def metric_reduction(metric: Metric, state: str):
    return metric._reductions.get(state)


def metric_updates(metric: Metric) -> int:
    return metric._update_count


def set_metric_updates(metric: Metric, count: int) -> None:
    """After putting back a metric's states: its update count, and no stale computed value."""
    metric._update_count = count
    metric._computed = None


def missing() -> list[str]:
    """What of READS the installed Lightning and torchmetrics lack, one line each."""
    import lightning
    import torchmetrics
    from lightning.pytorch import Trainer
    from torchmetrics.classification import MulticlassAccuracy

    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=1)
    owners = {"FitLoop": trainer.fit_loop, "_TrainingEpochLoop": trainer.fit_loop.epoch_loop,
              "Trainer": trainer, "Metric": MulticlassAccuracy(num_classes=2)}
    versions = f"lightning {lightning.__version__}, torchmetrics {torchmetrics.__version__}"
    lost = []
    for (owner, path), why in READS.items():
        obj = owners[owner]
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            lost.append(f"{owner}.{path} is gone in {versions}: {why} reads it "
                        f"(vitlab/internals.py); pin the versions in pyproject.toml or adapt it")
    return lost
