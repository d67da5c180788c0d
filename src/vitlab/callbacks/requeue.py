"""SLURM's requeue (time limit, pre-emption) at a step boundary, so that the requeued job
resumes exactly where this one stopped.

Lightning's own handler (SLURMEnvironment auto_requeue) saves hpc_ckpt_<n>.ckpt inside the signal
handler, wherever the process is: halfway through a backward pass or an optimiser step, with the
step counted or not. Such a checkpoint cannot resume exactly. This callback installs its handler
first (Lightning then leaves the signal alone); the handler only notes the signal. At the next
step boundary (the start of a training step, where interrupted.ckpt is saved too) every rank
saves hpc_ckpt_<n>.ckpt together, rank 0 asks SLURM to requeue the job (`scontrol requeue`, as
Lightning does), and the run ends with status `requeued`. The requeued job comes back to the same
run folder and Lightning resumes from the newest hpc_ckpt (ExactResume continues the epoch).

With several processes the ranks may see the signal at different steps: they decide together,
at the steps where FiniteLoss reads its flag (every step on a CPU, every log interval on a GPU,
seconds against SLURM's warning time of signal_delay_s)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from ..internals import cluster_environment, hpc_save_path
from .guards import check_due

log = logging.getLogger(__name__)


class Requeued(SystemExit):
    """The run saved hpc_ckpt and SLURM requeued it: not a failure (exit code 0)."""

    def __init__(self, path: str, step: int):
        super().__init__(0)
        self.path, self.step = path, step

    def __str__(self) -> str:
        return f"requeued at step {self.step}: resumes from {self.path}"


def _job_id() -> str:
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]


class SlurmRequeue(L.Callback):
    def __init__(self, check_every_n_steps: int | None = None):
        self.check_every_n_steps = check_every_n_steps
        self.signalled = False
        self._signal: int | None = None
        self._previous = None

    def setup(self, trainer, pl_module, stage):  # before Lightning registers its handlers
        env = cluster_environment(trainer)
        if stage != "fit" or not (isinstance(env, SLURMEnvironment) and env.auto_requeue):
            return
        self._signal = env.requeue_signal or signal.SIGUSR1
        self._previous = signal.signal(self._signal, self._note)

    def _note(self, signum, frame) -> None:  # a signal handler: nothing else, it may be mid-step
        log.info("SLURM requeue signal %s: checkpoint and requeue at the next step", signum)
        self.signalled = True

    def teardown(self, trainer, pl_module, stage):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):  # Lightning skips teardown hooks then
        self._restore()

    def _restore(self) -> None:
        if self._signal is not None:
            signal.signal(self._signal, self._previous or signal.SIG_DFL)
            self._signal = None

    def _due(self, trainer) -> bool:
        # one process: a Python flag, free to read; several: a collective, at FiniteLoss's steps
        return trainer.world_size == 1 or check_due(trainer, self.check_every_n_steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._signal is None or not self._due(trainer):  # not a SLURM job, or a step in between
            return
        signalled = self.signalled
        if trainer.world_size > 1:  # collective: every rank takes it at the same step
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if not signalled:
            return
        path = hpc_save_path(trainer)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            job = _job_id()
            try:
                result = subprocess.call(["scontrol", "requeue", job])
            except FileNotFoundError:  # not on a SLURM node's PATH
                result = 127
            if result != 0:
                log.warning("scontrol requeue %s failed (exit code %d): resume by hand with ckpt_path=%s",
                            job, result, path)
        raise Requeued(path, trainer.global_step)
