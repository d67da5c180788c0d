"""A run resumed mid-epoch (checkpoints/interrupted.ckpt, SLURM's hpc_ckpt_*.ckpt) continues at
the batch where it stopped, so it ends exactly as the uninterrupted run would.

Lightning builds and starts the training loader inside `configure_optimizers` (the schedule asks
for `trainer.estimated_stepping_batches`), before it restores the loop counters from the
checkpoint: that loader starts epoch 0 at batch 0 (and a loader state saved in the checkpoint
would not be loaded). Once the counters are restored (training start), this rebuilds the loader;
the datamodule then starts it in the epoch, and at the batch, the counters name
(ImageDataModule._resume_position).
The counters, not a loader's own count, say where to resume: a loader has already yielded the
batch(es) Lightning prefetched.

What the checkpoint's position means depends on the batches: a resume with another global batch
(data.batch_size) or another batch per step over the ranks (data.max_device_batch) is refused in
one line before training. Another number of processes with the same batches is re-planned
exactly: the ranks split the same global batches (data/keyed.py).

The checkpoint also keeps every rank's training-epoch metric accumulators (metric_state.py), put
back on a mid-epoch resume: the interrupted epoch's train/acc and train/loss_epoch cover all of
its batches.
"""

from __future__ import annotations

import lightning as L
import torch.distributed as dist

from ..errors import ConfigError
from ..internals import reload_train_loader, restarted_mid_epoch, set_logging_step
from .metric_state import metric_states, restore_metric_states
from .rng_state import _world


def _batches(trainer) -> dict[str, int]:
    """The global batch of one optimiser step, and the images of one step over all ranks."""
    step = trainer.datamodule.batch_size * trainer.world_size
    return {"global_batch": step * trainer.accumulate_grad_batches, "step_batch": step,
            "world_size": trainer.world_size}


class ExactResume(L.Callback):
    runs_first = True  # it puts the logging step back before any other callback logs (train.build)

    def __init__(self):
        self._batches: dict[str, int] = {}
        self._fix_log_step = False
        self._module = None
        self._saved_metrics: list[dict] | None = None  # per rank, from the checkpoint

    def setup(self, trainer, pl_module, stage):  # before a checkpoint is restored
        self._module = pl_module
        if getattr(trainer, "datamodule", None) is not None and hasattr(trainer.datamodule, "batch_size"):
            self._batches = _batches(trainer)

    def state_dict(self) -> dict:
        state = dict(self._batches)
        if self._module is not None:
            rank, world = _world()
            ranks = [metric_states(self._module)]
            if world > 1:  # collective: Lightning calls this on every rank for each checkpoint
                ranks = [None] * world
                dist.all_gather_object(ranks, metric_states(self._module))
            state["train_metrics"] = ranks
        return state

    def load_state_dict(self, state: dict) -> None:
        self._saved_metrics = state.get("train_metrics")
        now = self._batches
        for key, what in (("global_batch", "global batch (data.batch_size)"),
                          ("step_batch", "batch per step over all processes (data.max_device_batch)")):
            if now and key in state and state[key] != now[key]:
                raise ConfigError(
                    f"ckpt_path: the checkpoint was trained with a {what} of {state[key]} "
                    f"({state['world_size']} process(es)), this run has {now[key]} "
                    f"({now['world_size']} process(es)): resume with the checkpoint's batch settings")

    def on_train_start(self, trainer, pl_module):
        if trainer.ckpt_path:  # resumed, at an epoch's end or in the middle of one
            reload_train_loader(trainer)
            self._fix_log_step = restarted_mid_epoch(trainer)
            if self._fix_log_step and self._saved_metrics:
                restore_metric_states(pl_module, self._saved_metrics, *_world())
        self._saved_metrics = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Lightning's epoch loop adds one to its logging step (_batches_that_stepped) on any
        # mid-epoch restart, assuming a checkpoint saved inside a step before it counted;
        # an interrupt checkpoint is saved between steps, so every row after the resume would be
        # logged one step late. One optimiser per step (automatic optimisation): the logging
        # step is the global step. This callback comes first, before the LR monitor logs.
        if self._fix_log_step:
            set_logging_step(trainer, trainer.global_step)
            self._fix_log_step = False
