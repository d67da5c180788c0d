"""Data-parallel runs with real processes on CPU (gloo): DDP matches one process, multirun jobs
keep their workers in their own folder, the submitit local launcher and torchrun work."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, compose_config, run_entry
from omegaconf import OmegaConf

from vitlab.errors import ConfigError
from vitlab.objectives.optim import lr_factor
from vitlab.runs.report import load_sweep
from vitlab.runs.summary import read_summary
from vitlab.training.config_checks import validate
from vitlab.training.distributed import JOB_ARGS, batch_plan, job_scope, worker_argv
from vitlab.training.train import train

# tiny and deterministic: no augmentation, no dropout (vit_micro has none), fixed order
TINY = ["model.depth=2", "data/augment=none", "data.train_fraction=0.1", "data.batch_size=32",
        "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]


# --- the batch rule, without processes ------------------------------------------------------

@pytest.mark.parametrize("overrides, plan", [
    (["data.batch_size=64"], (64, 1, 1, 64)),
    (["trainer=ddp_cpu", "data.batch_size=64"], (64, 2, 1, 32)),
    (["trainer=ddp_cpu", "data.batch_size=64", "data.max_device_batch=8"], (64, 2, 4, 8)),
    (["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "data.batch_size=256"], (256, 8, 1, 32)),
    (["trainer=ddp", "trainer.devices=[0,1,2]", "data.batch_size=96"], (96, 3, 1, 32)),
])
def test_global_batch_is_split_over_processes(overrides, plan):
    p = batch_plan(compose_config(overrides))
    assert (p.global_batch, p.world_size, p.accumulate, p.device_batch) == plan


@pytest.mark.parametrize("overrides, message", [
    (["trainer=ddp", "trainer.devices=3", "data.batch_size=64"],
     "data.batch_size=64 (the global batch) is not divisible by the world size 3"),
    (["trainer=ddp_cpu", "data.batch_size=60", "data.max_device_batch=8"],
     "data.batch_size=60 gives 30 images per process, which data.max_device_batch=8 cannot split"),
    (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches is derived"),
    (["module.lr_scaling=cubic"], "module.lr_scaling='cubic' is not one of none, linear, sqrt"),
    (["data.max_device_batch=0"], "data.max_device_batch=0 is outside [1, inf]"),
])
def test_bad_batch_config_is_one_line_naming_the_keys(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_lr_scaling_rules():
    assert lr_factor("none", 1024, 256) == 1.0
    assert lr_factor("linear", 1024, 256) == 4.0
    assert lr_factor("sqrt", 1024, 256) == 2.0


def test_launcher_configs_tie_tasks_to_devices():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for launcher in ("slurm", "local"):
            cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "trainer=ddp",
                                              "trainer.devices=4"], return_hydra_config=True)
            assert cfg.hydra.launcher.tasks_per_node == 4
        assert cfg.hydra.launcher._target_.endswith("LocalLauncher")
        slurm = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"],
                        return_hydra_config=True).hydra.launcher
        assert (slurm.nodes, slurm.gpus_per_node, slurm.additional_parameters.signal) == (2, 2, "USR1@120")


def test_workers_get_their_jobs_command_line_and_env_is_restored(monkeypatch):
    monkeypatch.setenv(JOB_ARGS, json.dumps(["seed=1", 'hydra.run.dir="/r/0"']))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert worker_argv(["train.py", "-m", "seed=1,2"]) == [
        "train.py", "seed=1", 'hydra.run.dir="/r/0"', "hydra.job.name=train_ddp_process_1"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert worker_argv(["train.py", "-m"]) == ["train.py", "-m"]
    monkeypatch.delenv(JOB_ARGS)
    monkeypatch.delenv("LOCAL_RANK")
    with job_scope("/r/0"):  # what Lightning's launcher leaves in rank 0 is gone afterwards
        os.environ["MASTER_PORT"] = os.environ["LOCAL_RANK"] = "1"
    assert "MASTER_PORT" not in os.environ and "LOCAL_RANK" not in os.environ


# --- real processes ---------------------------------------------------------------------------

def losses(run_dir: Path) -> dict:
    """Per-step training losses and the final validation loss of a run."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    steps = {int(r["step"]): float(r["train/loss_step"]) for r in rows}
    return {"train": [steps[s] for s in sorted(steps)], "val": read_summary(run_dir)["val"]["val/loss"]}


def test_two_process_ddp_reaches_the_same_loss_as_one_process(tmp_path):
    """Same global batch (32), seed and data order: DDP's two shards of 16 together are the single
    process's batch of 32 (data.shuffle=false: rank r takes the r-th half of it; no augmentation
    or dropout, so no per-rank randomness), and the all-reduced mean gradient is the mean over the
    same 32 samples. What differs is float32 summation order (two means of 16 then an all-reduce
    vs one mean of 32; matmul blocking at batch 16 vs 32). Measured over 3 AdamW steps: relative
    differences of 1e-7 to 2e-7 in the train and val losses. rel=1e-5 leaves 50x room for other
    BLAS builds, while any real mismatch (another batch composition or order, a rank training on
    its own) moves the losses by 1e-3 to 1e-2 (shuffled DDP shards: 2.319 vs 2.334 at step 0)."""
    same = [*TINY, "+data.shuffle=false", "+trainer.limit_train_batches=3", "trainer.log_every_n_steps=1",
            "test=false", "~callbacks", "+trainer.enable_checkpointing=false", "seed=5"]
    single = compose_config(same, output_dir=tmp_path / "single")
    train(single)
    ddp_dir = tmp_path / "ddp"
    result = run_entry("train.py", [*same, "trainer=ddp_cpu", f"hydra.run.dir={ddp_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = losses(tmp_path / "single"), losses(ddp_dir)
    assert read_summary(ddp_dir)["batch"] == {"global_batch": 32, "world_size": 2, "accumulate": 1,
                                              "device_batch": 16}
    assert len(one["train"]) == len(two["train"]) == 3
    print("single:", one, "\nddp:   ", two)
    assert one["train"] == pytest.approx(two["train"], rel=1e-5)
    assert one["val"] == pytest.approx(two["val"], rel=1e-5)
    assert one["train"][0] != pytest.approx(one["train"][2], rel=1e-3)  # it did train


@pytest.mark.slow
@pytest.mark.parametrize("loader", [["data.on_device=true"], ["data.on_device=false", "data.num_workers=2"]],
                         ids=["on_device", "dataloader-workers2"])
def test_two_processes_train_on_the_augmented_images_of_one(tmp_path, monkeypatch, loader):
    """Shuffled, augmented (digits' random crop), 2 epochs: the two ranks' batches of 16, side by
    side, are the single process's batch of 32 at every step, pixel for pixel (order and
    augmentation keyed by seed, epoch and image index; each rank takes its half)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    augmented = [o for o in TINY if not o.startswith("data/augment")] + ["data/augment=crop"]
    same = [*augmented, "trainer.max_epochs=2", "test=false", "seed=5", "data.drop_last=true", *loader,
            "+callbacks.dump._target_=batch_dump.DumpBatches"]
    runs = {}
    for name, extra in (("one", []), ("two", ["trainer=ddp_cpu"])):
        result = run_entry("train.py", [*same, *extra, f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        dumps = sorted((tmp_path / name / "batches").glob("*.pt"))
        runs[name] = [torch.load(p, weights_only=False) for p in dumps]
    (one,), (rank0, rank1) = runs["one"], runs["two"]
    assert len(one) == len(rank0) == len(rank1) > 4 and {b[0] for b in one} == {0, 1}
    for (e, i, x, y), (e0, i0, x0, y0), (e1, i1, x1, y1) in zip(one, rank0, rank1, strict=True):
        assert (e, i) == (e0, i0) == (e1, i1)
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x), (e, i)


@pytest.mark.slow
def test_two_processes_resumed_mid_epoch_train_on_the_batches_of_the_uninterrupted_run(tmp_path, monkeypatch):
    """2-process DDP, shuffled and augmented, interrupted at step 5 (mid epoch 1 of 2) and resumed
    from interrupted.ckpt: every rank trains, step by step, on the very images (same labels,
    same augmented pixels) of the uninterrupted 2-process run, and the final weights agree."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    augmented = [o for o in TINY if not o.startswith("data/augment")] + ["data/augment=crop"]
    same = [*augmented, "trainer=ddp_cpu", "trainer.max_epochs=2", "test=false", "seed=5",
            "data.drop_last=true", "probes.enabled=false", "+callbacks.dump._target_=batch_dump.DumpBatches"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    result = run_entry("train.py", [*same, f"hydra.run.dir={full}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    stop = ["+callbacks.stop._target_=batch_dump.InterruptAtStep", "+callbacks.stop.step=5"]
    result = run_entry("train.py", [*same, *stop, f"hydra.run.dir={cut}"], cwd=tmp_path)
    interrupted = cut / "checkpoints" / "interrupted.ckpt"
    assert interrupted.is_file(), result.stderr[-3000:]
    steps_per_epoch = len(torch.load(full / "batches" / "rank0.pt", weights_only=False)) // 2
    assert 0 < 5 - steps_per_epoch < steps_per_epoch  # mid epoch 1 indeed
    result = run_entry("train.py", [*same, f"ckpt_path={interrupted}", f"hydra.run.dir={cut}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        def dumped(path):
            return {(e, i): (x, y) for e, i, x, y in torch.load(path, weights_only=False)}

        want, got = dumped(full / "batches" / f"rank{rank}.pt"), {}
        for name in (f"rank{rank}-interrupted.pt", f"rank{rank}.pt"):  # the resumed run's last
            got.update(dumped(cut / "batches" / name))
        assert got.keys() == want.keys(), rank
        for key, (x, y) in want.items():
            assert torch.equal(got[key][1], y) and torch.equal(got[key][0], x), (rank, key)
    a, b = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (full, cut))
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    # each rank's accumulators of the interrupted epoch came back: its train/acc counts both ranks'
    # batches before and after the resume, as the uninterrupted run's does
    assert _train_epoch_values(cut) == _train_epoch_values(full)


def _train_epoch_values(run_dir: Path) -> dict:
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {r["epoch"]: (r["train/acc"], r["train/loss_epoch"]) for r in rows if r["train/acc"]}


@pytest.mark.slow
def test_a_nan_seen_by_one_rank_stops_every_rank_at_that_step(tmp_path):
    """Only rank 1's batch at step 2 is NaN: the ranks decide together (FiniteLoss gathers each
    rank's first bad step), so rank 0 stops at the same step with the same line instead of
    waiting in the next all-reduce for a rank that has gone."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "trainer=ddp_cpu", "test=false",
         "+trainer.limit_train_batches=5", "+callbacks.poison._target_=poison.NaNOnRank",
         f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=_probe_env(), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    # the step counts the optimiser step taken with that batch (as on one process)
    line = "error: training loss is nan at step 3 (epoch 0) on rank 1; last good checkpoint: none yet"
    assert result.stderr.count(line) == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    summary = read_summary(run_dir)
    assert (summary["status"], summary["global_step"]) == ("diverged", 3)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing saved from the NaN state


def _probe_env() -> dict:
    """The environment for a run whose config names a callback of tests/poison.py."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_each_rank_draws_its_own_stream_and_the_checkpoint_keeps_each(tmp_path):
    """Rank r is seeded with seed + r after the model is built (so dropout masks differ across
    ranks), and the checkpoint keeps both ranks' generators (RNGState gathers them)."""
    folder = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(ROOT / "src" / "train.py"), *TINY, "trainer=ddp_cpu", "test=false",
         "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
         "+callbacks.draw._target_=poison.DrawPerRank", f"hydra.run.dir={folder}"],
        cwd=tmp_path, env=_probe_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    draws = [(folder / f"rank{r}_epoch0.txt").read_text() for r in (0, 1)]
    assert draws[0] != draws[1]
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    states = saved["callbacks"]["RNGState"]["ranks"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


def _only_sweep(cwd: Path) -> Path:
    sweeps = list((cwd / "outputs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 1, f"workers started sweeps of their own: {sweeps}"
    return sweeps[0]


@pytest.mark.slow
def test_multirun_of_ddp_jobs_gives_each_job_its_own_complete_folder(tmp_path):
    """The Hydra x Lightning pitfall: rank 1 is started with rank 0's command line, i.e. the whole
    sweep; it must instead run its own job's config in its own job's folder, and the second job
    must start fresh workers (not wait for the first job's). W&B (offline) logs one run per job,
    from rank 0 only."""
    result = run_entry("train.py", ["-m", *TINY, "trainer=ddp_cpu", "model.depth=1,2", "test=false",
                                    "logger=many"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _only_sweep(tmp_path)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    params = []
    for job, depth in (("0", 1), ("1", 2)):
        folder = sweep / job
        summary = read_summary(folder)
        assert summary["status"] == "completed" and summary["batch"]["world_size"] == 2
        assert OmegaConf.load(folder / ".hydra" / "config.yaml").model.depth == depth
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert (folder / "train_ddp_process_1.log").is_file()  # rank 1 ran here
        assert len(list((folder / "wandb").glob("offline-run-*"))) == 1  # one W&B run, not two
        params.append(summary["parameters"])
    assert params[0] < params[1]  # each job trained its own model


@pytest.mark.slow
def test_submitit_local_launcher_job_lands_where_the_report_looks(tmp_path):
    """One job, two processes started by submitit (as SLURM would: tasks_per_node =
    trainer.devices) and wired by its environment; the summary is in the job folder."""
    result = run_entry("train.py", ["-m", "hydra/launcher=local", *TINY, "trainer=ddp_cpu", "seed=3"],
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = _only_sweep(tmp_path)
    summary = read_summary(sweep / "0")
    assert (summary["status"], summary["seed"], summary["batch"]["world_size"]) == ("completed", 3, 2)
    assert summary["test"]["test/acc"] is not None
    runs = load_sweep(sweep)
    assert [(r.name, r.status, r.params["seed"]) for r in runs] == [("0", "completed", "3")]
    logs = sorted(p.name for p in sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2  # one per task


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_torchrun_runs_ranks_in_one_named_folder(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "src" / "train.py"), *TINY,
           "trainer=ddp_cpu", "test=false"]
    missing = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0 and "set hydra.run.dir=" in missing.stderr
    run_dir = tmp_path / "run"
    ok = subprocess.run([*cmd, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["batch"]["world_size"] == 2
    assert yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    # the folder now holds a run: rank 0 refuses, and rank 1 hears it rather than wait in DDP's setup
    again = subprocess.run([*cmd, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    refusal = f"error: run folder {run_dir} already holds a run (completed)"
    assert again.returncode != 0 and again.stderr.count(refusal) == 2, again.stderr[-3000:]
    assert read_summary(run_dir)["status"] == "completed"
