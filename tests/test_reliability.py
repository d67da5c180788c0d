"""No lost work, no silent failure: resume, interrupts, divergence, atomic outputs."""

import json
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from conftest import ROOT

from vitlab.callbacks.guards import DivergenceError
from vitlab.errors import ConfigError
from vitlab.runs.summary import read_summary, write_summary
from vitlab.training.train import train

SMALL = ["data.train_fraction=0.15", "data.batch_size=32", "trainer.enable_progress_bar=false",
         "model.depth=2", "module.warmup_epochs=1",
         "probes.enabled=false"]  # the bias probes run after the test: nothing here depends on them


class StopAt(L.Callback):
    """Raise `error` when epoch `epoch` starts (after the previous epoch's checkpoints)."""

    def __init__(self, epoch, error):
        self.epoch, self.error = epoch, error

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise self.error


def train_with(cfg, *extra_callbacks):
    """train(cfg) with extra callbacks added to the Trainer the config builds."""
    import vitlab.training.train as pipeline

    original = pipeline.instantiate_dict

    def with_extra(node):
        found = original(node)
        return found + list(extra_callbacks) if node is cfg.get("callbacks") else found

    pipeline.instantiate_dict = with_extra
    try:
        return train(cfg)
    finally:
        pipeline.instantiate_dict = original


def weights(run_dir, name="last.ckpt"):
    return torch.load(run_dir / "checkpoints" / name, weights_only=True)["state_dict"]


@pytest.mark.parametrize("data", [
    ["data.on_device=false"],
    ["data.on_device=true", "data/mix=mixup_cutmix"],  # the device loader's draws, Mixup/CutMix's
], ids=["dataloader", "on_device+mixup"])
def test_resumed_run_ends_exactly_like_an_uninterrupted_one(compose_cfg, tmp_path, data):
    def cfg_for(name, *extra):
        cfg = compose_cfg([*SMALL, "trainer.max_epochs=4", "seed=7", *data, *extra])
        cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    full = train(cfg_for("full"))
    with pytest.raises(SystemExit):  # Lightning's graceful Ctrl-C ends with exit code 1
        train_with(cfg_for("cut"), StopAt(2, KeyboardInterrupt()))
    cut = read_summary(tmp_path / "cut")
    assert cut["status"] == "interrupted" and cut["global_step"] == full["global_step"] // 2
    assert (tmp_path / "cut" / "checkpoints" / "interrupted.ckpt").is_file()
    # last.ckpt is the end of the last finished epoch, whether or not its val/acc was a best
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == cut["global_step"]

    resumed = train(cfg_for("cut", "ckpt_path=last"))
    assert resumed["status"] == "completed" and resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["global_step"] == full["global_step"]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    # the CSV logger continued the same log: every epoch's validation row is there once
    rows = (tmp_path / "cut" / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    val_rows = [r for r in rows[1:] if r.split(",")[header.index("val/acc")]]
    assert len(val_rows) == 4


class StopAtStep(L.Callback):
    """Ctrl-C (or SIGTERM, as a pre-emption sends it) when training step `step` begins."""

    def __init__(self, step, sigterm=False):
        self.step, self.sigterm = step, sigterm

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.sigterm:  # Lightning's handler notes it; the loop raises at the next step
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt


def _csv_rows(run_dir):
    """metrics.csv's values by step, without the wall-clock columns (they differ between any two
    runs). By step: at the interrupted step the resumed log splits that step's values over one
    more row (the learning rate was logged before the interrupt and again after the resume)."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    timed = ("perf/", "time")
    by_step: dict[str, dict] = {}
    for r in rows:
        by_step.setdefault(r["step"], {}).update(
            {k: v for k, v in r.items() if v != "" and not any(t in k for t in timed)})
    return by_step


@pytest.mark.slow
@pytest.mark.parametrize("data,sigterm", [
    (["data.on_device=false", "data.num_workers=0"], False),
    (["data.on_device=false", "data.num_workers=0"], True),
    (["data.on_device=false", "data.num_workers=2"], True),
    (["data.on_device=true", "data/mix=mixup_cutmix"], False),
], ids=["dataloader-workers0-ctrl-c", "dataloader-workers0-sigterm", "dataloader-workers2-sigterm",
        "on_device+mixup-ctrl-c"])
def test_a_run_interrupted_mid_epoch_resumes_exactly(compose_cfg, tmp_path, data, sigterm):
    """Interrupted at step 10 of 3 epochs of 6-7 steps (mid epoch 1) and resumed from
    interrupted.ckpt: the same weights, metrics and CSV rows as the uninterrupted run; dropout
    on, so the model's own draws must continue where they stopped too."""
    def cfg_for(name, *extra):
        cfg = compose_cfg([*SMALL, "trainer.max_epochs=3", "seed=7", "model.drop_rate=0.1",
                           "trainer.log_every_n_steps=1", *data, *extra])
        cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    full = train(cfg_for("full"))
    with pytest.raises(SystemExit) if not sigterm else pytest.raises(BaseException):
        train_with(cfg_for("cut"), StopAtStep(10, sigterm))
    interrupted = tmp_path / "cut" / "checkpoints" / "interrupted.ckpt"
    assert read_summary(tmp_path / "cut")["status"] == "interrupted"
    assert 0 < torch.load(interrupted, weights_only=False)["loops"]["fit_loop"][
        "epoch_loop.batch_progress"]["current"]["completed"]  # mid-epoch indeed

    resumed = train(cfg_for("cut", f"ckpt_path={interrupted}"))
    assert resumed["global_step"] == full["global_step"]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after a mid-epoch resume"
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    full_rows, cut_rows = _csv_rows(tmp_path / "full"), _csv_rows(tmp_path / "cut")
    # one log: every step's values the same, the interrupted epoch's train/acc and
    # train/loss_epoch too (over its batches before and after the resume)
    assert cut_rows == full_rows


class SignalMidStep(L.Callback):
    """SIGUSR1 (SLURM's warning before a time limit or pre-emption) in the middle of training
    step `step`, between its forward and backward pass: where Lightning's own handler would save."""

    def __init__(self, step):
        self.step = step

    def on_before_backward(self, trainer, pl_module, loss):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def _as_slurm_job(monkeypatch, tmp_path):
    """This process as task 0 of SLURM job 4242, with an `scontrol` that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                       "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(key, value)


@pytest.mark.slow
def test_a_slurm_requeue_saves_at_the_step_boundary_and_the_requeued_job_resumes_exactly(
        compose_cfg, tmp_path, monkeypatch):
    """SLURM's SIGUSR1 arrives mid-step (between forward and backward of step 9): the run saves
    hpc_ckpt_1.ckpt at the start of step 10, requeues its job and ends `requeued`; the requeued
    job (same folder, no ckpt_path) resumes from it and ends with the weights, metrics and CSV
    rows of an uninterrupted run."""
    def cfg_for(name):
        cfg = compose_cfg([*SMALL, "trainer.max_epochs=3", "seed=7", "model.drop_rate=0.1",
                           "trainer.log_every_n_steps=1", "data.on_device=false", "data.num_workers=0"])
        cfg.paths.output_dir = str(tmp_path / name)
        return cfg

    full = train(cfg_for("full"))
    _as_slurm_job(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as ended:
        train_with(cfg_for("cut"), SignalMidStep(9))
    assert ended.value.code == 0
    hpc = tmp_path / "cut" / "hpc_ckpt_1.ckpt"
    saved = torch.load(hpc, weights_only=False)
    assert saved["global_step"] == 10 and 0 < saved["loops"]["fit_loop"][
        "epoch_loop.batch_progress"]["current"]["completed"]  # mid-epoch, between steps
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    cut = read_summary(tmp_path / "cut")
    assert (cut["status"], cut["interrupt_checkpoint"]) == ("requeued", str(hpc))

    resumed = train(cfg_for("cut"))  # the requeued job: the same command in the same folder
    assert resumed["status"] == "completed" and resumed["resumed_from"] == str(hpc)
    assert resumed["global_step"] == full["global_step"]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after a requeue"
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    assert _csv_rows(tmp_path / "cut") == _csv_rows(tmp_path / "full")


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(compose_cfg, tmp_path):
    class Poison(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                with torch.no_grad():
                    pl_module.model.head.bias.fill_(float("nan"))

    cfg = compose_cfg([*SMALL, "trainer.max_epochs=3"])
    with pytest.raises(DivergenceError, match=r"training loss is nan at step \d+ \(epoch 1\)"):
        train_with(cfg, Poison())
    summary = read_summary(tmp_path)
    assert summary["status"] == "diverged" and "loss is nan" in summary["error"]
    good = weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in good.values() if v.is_floating_point())


@pytest.mark.slow  # end-to-end runs: kept out of the 10-minute fast suite
def test_sigterm_saves_a_checkpoint_and_marks_the_summary(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *SMALL, "trainer.max_epochs=200",
         f"hydra.run.dir={run_dir}"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, output[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted", output[-2000:]
    assert (run_dir / "checkpoints" / "interrupted.ckpt").is_file()
    assert summary["interrupt_checkpoint"].endswith("interrupted.ckpt")


def test_a_finished_run_folder_is_never_overwritten(compose_cfg, tmp_path):
    write_summary(tmp_path, {"status": "completed"})
    with pytest.raises(ConfigError, match=r"already holds a run \(completed\)"):
        train(compose_cfg(SMALL))


def test_resume_without_a_checkpoint_names_the_path(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path=last: no checkpoint at .*last.ckpt"):
        train(compose_cfg([*SMALL, "ckpt_path=last"]))


def test_summary_writes_are_atomic(tmp_path, monkeypatch):
    write_summary(tmp_path, {"status": "running", "n": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr("vitlab.runs.summary.os.replace", crash)
    with pytest.raises(OSError):
        write_summary(tmp_path, {"status": "completed", "n": 2})
    assert read_summary(tmp_path) == {"status": "running", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no half-written leftovers


@pytest.mark.parametrize("world,rank,restored", [(2, 1, 1), (2, 0, 0), (3, 2, None), (1, 0, 0)])
def test_each_rank_restores_its_own_generators(monkeypatch, world, rank, restored):
    """A checkpoint of a 2-process run holds both ranks' states: rank r takes its own; a rank the
    checkpoint has no state for (another world size) keeps its own seed's stream."""
    import vitlab.callbacks.rng_state as rng

    saved = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        saved.append(rng.generator_state())
    torch.manual_seed(99)
    before = torch.get_rng_state()
    monkeypatch.setattr(rng, "_world", lambda: (rank, world))
    rng.RNGState().load_state_dict({"ranks": saved})
    expected = before if restored is None else saved[restored]["torch"]
    assert torch.equal(torch.get_rng_state(), expected)


@pytest.mark.parametrize("saved,batch,world,refused", [
    ({"global_batch": 32, "step_batch": 32, "world_size": 1}, 16, 2, None),  # re-planned exactly
    ({"global_batch": 64, "step_batch": 64, "world_size": 2}, 16, 2, "global batch .* of 64 .*has 32"),
    ({"global_batch": 32, "step_batch": 16, "world_size": 1}, 16, 2, "batch per step .* of 16 .*has 32"),
])
def test_a_resume_with_other_batches_is_refused_another_world_size_replanned(saved, batch, world, refused):
    from types import SimpleNamespace

    from vitlab.callbacks.exact_resume import ExactResume

    callback = ExactResume()
    callback.setup(SimpleNamespace(datamodule=SimpleNamespace(batch_size=batch), world_size=world,
                                   accumulate_grad_batches=1), None, "fit")
    if refused is None:
        callback.load_state_dict(saved)
    else:
        with pytest.raises(ConfigError, match=refused):
            callback.load_state_dict(saved)


def test_exact_resume_runs_first_wherever_the_yaml_puts_it(compose_cfg):
    from omegaconf import open_dict

    from vitlab.callbacks.exact_resume import ExactResume
    from vitlab.training.train import build

    cfg = compose_cfg(["trainer.max_epochs=1"])
    with open_dict(cfg):
        exact = cfg.callbacks.pop("exact_resume")
        cfg.callbacks["exact_resume"] = exact  # now last in the mapping
    assert list(cfg.callbacks)[-1] == "exact_resume"
    _, _, trainer = build(cfg)
    assert isinstance(trainer.callbacks[0], ExactResume)
