"""Sweeps that fill the hardware: hydra/launcher=pack (K jobs per GPU on one machine), slurm_pack
(bundles of jobs per SLURM node) and ray (fractional GPUs). GPU placement is tested with a faked
device count and a faked executor; real sweeps run on the CPU (submitit's local executor, a local
Ray instance). A sweep folder is read by vitlab.runs.report as for any other launcher."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import CONF, run_entry
from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment

from vitlab.errors import ConfigError
from vitlab.launch import slots
from vitlab.launch.bundles import bundle_size, gpus_for, make_bundles, single_process_env
from vitlab.launch.hydra_jobs import failed_return
from vitlab.launch.packing import run_packed
from vitlab.launch.slots import Demand, SlotPool, check_single_device, job_demand, visible_gpus
from vitlab.runs.report import load_sweep
from vitlab.runs.report import main as report_main
from vitlab.runs.summary import read_summary, write_summary

TINY = ["model.depth=1", "data.train_fraction=0.1", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false"]
GPU, DDP2 = Demand(devices=1, gpu=True), Demand(devices=2, gpu=True)


# --- slots: which GPU a job gets ---------------------------------------------------------------

def test_slots_spread_jobs_over_gpus_then_stack_k_per_gpu():
    pool = SlotPool([0, 1], jobs_per_gpu=2)
    assert [pool.take(GPU) for _ in range(5)] == [(0,), (1,), (0,), (1,), None]  # 2 x 2 slots, then full
    pool.release((1,))
    assert pool.take(GPU) == (1,)


def test_ddp_job_takes_one_slot_on_each_of_two_distinct_gpus_or_waits():
    pool = SlotPool([0, 1], jobs_per_gpu=2)
    assert pool.take(GPU) == (0,) and pool.take(GPU) == (1,) and pool.take(GPU) == (0,)  # GPU 0 full
    assert pool.take(DDP2) is None  # one free slot, on GPU 1 only: waits
    pool.release((0,))
    assert pool.take(DDP2) == (0, 1)
    assert pool.free == {0: 0, 1: 0}


def test_cpu_only_jobs_run_cpu_jobs_at_once():
    pool = SlotPool([], jobs_per_gpu=3)  # no GPU: cpu_jobs defaults to jobs_per_gpu
    cpu = Demand(devices=2, gpu=False)  # a ddp_cpu job is one job, whatever its processes
    assert [pool.take(cpu) for _ in range(4)] == [(), (), (), None]
    assert SlotPool([0], jobs_per_gpu=1, cpu_jobs=5).cpu_free == 5


def test_visible_gpus_from_a_faked_device_count_and_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus(None, environ={}) == [0, 1]
    assert visible_gpus(None, environ={"CUDA_VISIBLE_DEVICES": "2,3"}) == [2, 3]  # ids jobs will be given
    assert visible_gpus(1, environ={"CUDA_VISIBLE_DEVICES": "2,3"}) == [2]
    assert visible_gpus([3], environ={}) == [3]
    assert visible_gpus(None, environ={"CUDA_VISIBLE_DEVICES": ""}) == []


@pytest.mark.parametrize("overrides, demand", [
    (["trainer=cpu"], Demand(1, False)),
    (["trainer=gpu"], Demand(1, True)),
    (["trainer=ddp", "trainer.devices=2"], Demand(2, True)),
    (["trainer=ddp", "trainer.devices=[0,1,2]"], Demand(3, True)),
    (["trainer=ddp_cpu"], Demand(2, False)),
    (["trainer=ddp", "trainer.num_nodes=2"], Demand(2, True, nodes=2)),
    (["trainer.accelerator=auto"], Demand(1, True)),  # auto on a machine with GPUs: a GPU job
])
def test_each_jobs_demand_comes_from_its_composed_trainer(compose_cfg, overrides, demand):
    assert job_demand(compose_cfg(overrides), gpus_available=2) == demand


# --- the packing loop, with fake jobs ----------------------------------------------------------

class FakeJob:
    """A submitted job that ends after `polls` calls of done()."""

    def __init__(self, polls: int):
        self.polls, self.cancelled = polls, False

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


def test_eight_jobs_on_two_gpus_k2_never_exceed_two_per_gpu_and_all_complete(monkeypatch):
    """8 jobs (one of them DDP over 2 GPUs) on a faked 2-GPU machine with jobs_per_gpu=2."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    demands = [GPU, GPU, GPU, DDP2, GPU, GPU, GPU, GPU]
    durations = [3, 1, 4, 2, 1, 5, 2, 3]
    on_gpu, peak, placed = Counter(), Counter(), {}

    def submit(i, gpus):
        placed[i] = gpus
        on_gpu.update(gpus)
        peak.update({g: max(0, on_gpu[g] - peak[g]) for g in gpus})
        return FakeJob(durations[i])

    def finish(i, job):
        on_gpu.subtract(placed[i])
        return f"result {i}"

    results = run_packed(demands, SlotPool(visible_gpus(), 2), submit, finish, sleep=lambda s: None)
    assert results == [f"result {i}" for i in range(8)]  # all complete, in job order
    assert max(peak.values()) == 2 and set(peak) == {0, 1}  # both GPUs used, never more than 2 jobs each
    assert placed[3] == (0, 1)  # the DDP job: one slot on each of two distinct GPUs
    assert all(len(g) == 1 for i, g in placed.items() if i != 3)


def test_a_launcher_error_cancels_the_jobs_already_running():
    started = []

    def submit(i, gpus):
        if i == 2:
            raise RuntimeError("submission failed")
        started.append(FakeJob(100))
        return started[-1]

    with pytest.raises(RuntimeError):
        run_packed([GPU] * 3, SlotPool([0, 1], 2), submit, lambda i, job: None, sleep=lambda s: None)
    assert [job.cancelled for job in started] == [True, True]


# --- the pack launcher itself, on a faked 2-GPU machine -----------------------------------------

class FakeExecutor:
    """Stands in for submitit.LocalExecutor: records each submission's parameters."""

    submitted: list = []

    def __init__(self, folder, max_num_timeout=3):
        self.parameters = {}

    def update_parameters(self, **params):
        self.parameters = params

    def submit(self, fn, overrides, dir_key, idx, job_id, state):
        job = FakeJob(polls=2)
        job.job_id = str(idx)
        job.task = lambda k: job
        job.result = lambda: JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=idx)
        threads = os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS")  # the job inherits
        FakeExecutor.submitted.append((idx, {**self.parameters, "threads": threads}))
        return job


def launch_pack(tmp_path, monkeypatch, launcher_overrides, jobs):
    """PackLauncher.launch as Hydra calls it (real configs, each job composed), with the executor faked."""
    import submitit

    FakeExecutor.submitted = []
    monkeypatch.setattr(submitit, "LocalExecutor", FakeExecutor)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(slots, "cpu_cores", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        config = hydra.compose_config("train", ["hydra/launcher=pack", f"hydra.sweep.dir={tmp_path}",
                                                "hydra.launcher.poll_s=0", *launcher_overrides],
                                      run_mode=RunMode.MULTIRUN)
        context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(config))
        launcher = Plugins.instance().instantiate_launcher(hydra_context=context, task_function=None,
                                                           config=config)
        return launcher.launch(jobs, initial_job_idx=0)


def test_pack_launcher_gives_each_job_its_gpus_processes_and_threads(tmp_path, monkeypatch):
    jobs = [[f"seed={s}", "trainer=gpu"] for s in range(6)] + [["seed=9", "trainer=ddp", "trainer.devices=2"]]
    results = launch_pack(tmp_path, monkeypatch, ["hydra.launcher.jobs_per_gpu=2"], jobs)
    assert [r.return_value for r in results] == list(range(7))
    params = dict(FakeExecutor.submitted)
    assert [params[i]["visible_gpus"] for i in range(4)] == [[0], [1], [0], [1]]  # spread, then stacked
    assert params[6]["visible_gpus"] == [0, 1]  # DDP: two distinct GPUs, one process on each
    assert params[6]["tasks_per_node"] == 2
    assert all(p["gpus_per_node"] == len(p["visible_gpus"]) for p in params.values())
    assert params[0]["threads"] == ("4", "4")  # OMP/MKL threads: 16 cores / (2 GPUs x 2) jobs
    assert "OMP_NUM_THREADS" not in os.environ  # only the jobs' environment had it


def test_pack_launcher_runs_cpu_jobs_without_gpus(tmp_path, monkeypatch):
    launch_pack(tmp_path, monkeypatch, ["hydra.launcher.cpu_jobs=4"], [[f"seed={s}", "trainer=cpu"]
                                                                       for s in range(2)])
    for _, p in FakeExecutor.submitted:
        assert (p["visible_gpus"], p["gpus_per_node"], p["tasks_per_node"]) == ([], 0, 1)  # CUDA hidden
        assert p["threads"] == ("4", "4")  # 16 cores / 4 jobs


# --- bad input: one line each ------------------------------------------------------------------

@pytest.mark.parametrize("make, message", [
    (lambda: SlotPool([0], jobs_per_gpu=0), "hydra.launcher.jobs_per_gpu=0 must be a whole number >= 1"),
    (lambda: SlotPool([0], jobs_per_gpu="2"), "hydra.launcher.jobs_per_gpu='2' must be a whole number"),
    (lambda: SlotPool([0], 1, cpu_jobs=0), "hydra.launcher.cpu_jobs=0 must be a whole number >= 1"),
    (lambda: SlotPool([0, 1], 2).check(Demand(4, True), "job #3"),
     "job #3 needs 4 GPU(s) but only 2 are available to the launcher"),
    (lambda: SlotPool([], 2).check(DDP2, "job #0"), "job #0 needs 2 GPU(s) but none is available"),
    (lambda: SlotPool([0, 1], 2).check(Demand(2, True, nodes=2), "job #1"),
     "job #1 asks for trainer.num_nodes=2: a packing launcher runs on one machine"),
    (lambda: visible_gpus(None, environ={"CUDA_VISIBLE_DEVICES": "GPU-5d1e"}),
     "CUDA_VISIBLE_DEVICES='GPU-5d1e': the packing launcher needs GPU indices"),
    (lambda: visible_gpus(["a"], environ={}), "hydra.launcher.gpus=['a']: expected GPU indices"),
    (lambda: visible_gpus(3, environ={"CUDA_VISIBLE_DEVICES": "0"}),
     "hydra.launcher.gpus=3: 1 GPU(s) are visible"),
    (lambda: check_single_device(DDP2, "job #2", "on Ray each job is one process", "use hydra/launcher=pack"),
     "job #2 asks for 2 device(s) x 1 node(s): on Ray each job is one process; use hydra/launcher=pack"),
])
def test_bad_launcher_input_is_one_line(make, message):
    with pytest.raises(ConfigError) as error:
        make()
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


@pytest.mark.parametrize("overrides, message", [
    (["hydra/launcher=pack", "hydra.launcher.jobs_per_gpu=0"],
     "error: hydra.launcher.jobs_per_gpu=0 must be a whole number >= 1"),
    (["hydra/launcher=pack", "trainer=ddp", "trainer.devices=2", "hydra.launcher.gpus=[]"],
     "error: job #0 needs 2 GPU(s) but none is available to the launcher"),
    (["hydra/launcher=slurm_pack", "trainer=ddp_cpu"],
     "error: job #0 asks for 2 device(s) x 1 node(s): hydra/launcher=slurm_pack packs single-device jobs; "
     "run multi-device jobs with hydra/launcher=slurm"),
])
def test_bad_launcher_input_stops_the_sweep_with_one_line(tmp_path, overrides, message):
    result = run_entry("train.py", ["-m", *overrides, "seed=0", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "sweep").glob("0"))  # nothing started


# --- a crashed job ----------------------------------------------------------------------------

def test_a_crashed_jobs_running_summary_becomes_failed(tmp_path):
    write_summary(tmp_path, {"status": "running", "seed": 3})
    ret = failed_return(["seed=3"], RuntimeError("Job 123 has not produced any output (state: FINISHED)"),
                        tmp_path)
    assert ret.status == JobStatus.FAILED and ret.overrides == ["seed=3"]
    with pytest.raises(RuntimeError):
        ret.return_value  # noqa: B018 - Hydra reads it after the sweep, and reports the failure
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and "RuntimeError: Job 123 has not produced" in summary["error"]


# --- SLURM bundles ------------------------------------------------------------------------------

def test_bundles_of_k_jobs_per_gpu_times_gpus_per_node():
    assert bundle_size(jobs_per_gpu=4, gpus_per_node=4) == 16 and bundle_size(4, 0) == 4
    groups = make_bundles(list(range(21)), 16)  # posemb_ablation's 21 jobs on 4-GPU nodes
    assert [len(g) for g in groups] == [16, 5] and groups[1] == [16, 17, 18, 19, 20]
    assert gpus_for(16, 4, 4) == 4 and gpus_for(5, 4, 4) == 2 and gpus_for(4, 4, 0) == 0


def test_each_task_of_a_bundle_is_a_single_process_run_on_its_own_gpu(monkeypatch):
    """Task 5 of a 2-GPU x K=4 bundle (srun: 8 tasks, every task sees both GPUs)."""
    srun = {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "8",
            "SLURM_NTASKS_PER_NODE": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5",
            "SLURM_LOCALID": "5", "SLURM_NODEID": "0",
            "SLURM_NNODES": "1", "SLURM_NODELIST": "gpu-node-3", "CUDA_VISIBLE_DEVICES": "0,1"}
    env = single_process_env(srun, local_rank=5, jobs_per_gpu=4, cpus_per_task=2)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"  # 5 // 4
    assert single_process_env(srun, local_rank=3, jobs_per_gpu=4)["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["OMP_NUM_THREADS"] == "2" and "SLURM_JOB_ID" not in env  # the job id stays (requeue)
    for key, value in {**srun, **env}.items():
        monkeypatch.setenv(key, value)
    lightning = SLURMEnvironment()
    assert SLURMEnvironment.detect() and lightning.world_size() == 1
    assert (lightning.global_rank(), lightning.local_rank(), lightning.node_rank()) == (0, 0, 0)
    lightning.validate_settings(num_devices=1, num_nodes=1)  # trainer.devices=1 agrees with SLURM's view


def test_slurm_pack_asks_slurm_for_one_node_with_a_task_per_job(tmp_path, monkeypatch):
    """The sbatch script of a bundle of 8 jobs (K=4 on 2 GPUs); no SLURM needed to write it (submitit
    only looks for an `srun` on the PATH)."""
    from hydra_plugins.vitlab_launchers.slurm_pack_launcher import SlurmPackLauncher

    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")

    launcher = SlurmPackLauncher(jobs_per_gpu=4, submitit_folder=str(tmp_path / "%j"), cpus_per_task=2,
                                 mem_gb=64, timeout_min=60, partition="gpu", signal_delay_s=120,
                                 max_num_timeout=0, additional_parameters={"signal": "USR1@120"}, setup=[])
    sbatch = launcher._executor(tasks=8, gpus_per_node=2)._executor._make_submission_file_text("cmd", "x")
    for line in ("--nodes=1", "--ntasks-per-node=8", "--gpus-per-node=2", "--cpus-per-task=2",
                 "--partition=gpu", "--signal=USR1@120"):
        assert f"#SBATCH {line}" in sbatch, line
    last = launcher._executor(tasks=5, gpus_per_node=2)._executor._make_submission_file_text("cmd", "x")
    assert "#SBATCH --ntasks-per-node=5" in last and "#SBATCH --gpus-per-node=2" in last


# --- discovery and configs ---------------------------------------------------------------------

def test_launchers_are_discovered_and_their_configs_compose():
    names = {cls.__name__ for cls in Plugins.instance().discover(Launcher)}
    assert {"PackLauncher", "SlurmPackLauncher", "RayPackLauncher"} <= names
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        for launcher, key in (("pack", "cpu_jobs"), ("slurm_pack", "cpus_per_task"), ("ray", "cpus_per_job")):
            overrides = [f"hydra/launcher={launcher}", "hydra.launcher.jobs_per_gpu=3",
                         f"hydra.launcher.{key}=2"]
            cfg = hydra.compose_config("train", overrides, run_mode=RunMode.MULTIRUN)
            assert (cfg.hydra.launcher.jobs_per_gpu, cfg.hydra.launcher[key]) == (3, 2)
            assert cfg.hydra.launcher._target_.startswith("hydra_plugins.vitlab_launchers.")


# --- real sweeps on the CPU -------------------------------------------------------------------

def _summaries(sweep: Path, jobs: int) -> list[dict]:
    return [json.loads((sweep / str(j) / "summary.json").read_text()) for j in range(jobs)]


@pytest.mark.slow
def test_pack_runs_two_jobs_at_once_on_the_cpu(tmp_path):
    """4 seeds, K=2 on a machine without GPUs: two at a time, each in its own folder. The jobs
    train for several seconds (all 1,293 images, 3 epochs), so that two started together overlap
    however unevenly their imports go."""
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", ["-m", "hydra/launcher=pack", "hydra.launcher.jobs_per_gpu=2",
                                    "seed=0,1,2,3", "trainer=cpu", "trainer.max_epochs=3", "model.depth=1",
                                    "trainer.enable_progress_bar=false", "hydra.launcher.poll_s=0.2",
                                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _summaries(sweep, 4)
    assert [(r["status"], r["seed"]) for r in runs] == [("completed", s) for s in range(4)]
    spans = [(r["started_at"], r["finished_at"]) for r in runs]
    at_once = [sum(s <= t < f for s, f in spans) for t, _ in spans]  # jobs running when each one started
    print("spans (s after the first start):", [(round(s - spans[0][0], 1), round(f - spans[0][0], 1))
                                               for s, f in spans])
    assert max(at_once) == 2  # two overlapped, never three
    assert len(list(sweep.glob(".submitit/*/*_0_log.out"))) == 4  # one submitit job per sweep job
    assert [r.status for r in load_sweep(sweep)] == ["completed"] * 4


@pytest.mark.slow
def test_pack_records_a_failed_and_a_crashed_job_and_runs_the_others(tmp_path):
    """Jobs: (depth 1, no-op callback) completes; (depth 1, a callback that segfaults the process)
    crashes; the two depth=0 jobs stop at the config check. The sweep ends non-zero after all ran."""
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", ["-m", "hydra/launcher=pack", "hydra.launcher.jobs_per_gpu=2",
                                    "data.train_fraction=0.1", "trainer.max_epochs=1", "trainer=cpu",
                                    "trainer.enable_progress_bar=false", "model.depth=1,0",
                                    "+callbacks.crash._target_=lightning.pytorch.callbacks.Callback,"
                                    "faulthandler._sigsegv", "hydra.launcher.poll_s=0.2",
                                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode != 0  # Hydra re-raises the first failure once every job has ended
    assert read_summary(sweep / "0")["status"] == "completed"
    assert not (sweep / "1" / "summary.json").exists()  # died while building the trainer
    assert "the job's process ended without a result" in result.stderr + result.stdout
    runs = {r.name: r for r in load_sweep(sweep)}
    assert {name: r.status for name, r in runs.items()} == {"0": "completed", "1": "failed", "2": "failed",
                                                            "3": "failed"}
    report_main([str(sweep)])
    report = (sweep / "report.md").read_text()
    assert "4 runs, 1 completed" in report
    not_completed = report.split("## Runs that did not complete")[1].splitlines()
    crashed = next(line for line in not_completed if line.startswith("| 1 |"))
    assert "model.depth=1, callbacks.crash._target_=faulthandler._sigsegv | failed |" in crashed


@pytest.mark.slow  # end-to-end runs: kept out of the 10-minute fast suite
def test_slurm_pack_bundle_of_four_runs_as_four_tasks_with_their_own_folders(tmp_path):
    """One bundle (jobs_per_gpu=4 on a CPU node) through submitit's local executor: one submitit
    job of 4 tasks, each task a single-process run of its own job."""
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", ["-m", "hydra/launcher=slurm_pack", "hydra.launcher.cluster=local",
                                    "hydra.launcher.jobs_per_gpu=4", "hydra.launcher.gpus_per_node=0",
                                    "hydra.launcher.cpus_per_task=1", "seed=0,1,2,3", "trainer=cpu", *TINY,
                                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _summaries(sweep, 4)
    assert [(r["status"], r["seed"], r["batch"]["world_size"]) for r in runs] == [("completed", s, 1)
                                                                                 for s in range(4)]
    (job,) = [p for p in (sweep / ".submitit").iterdir() if any(p.iterdir())]
    assert len(list(job.glob("*_log.out"))) == 4  # 4 tasks of one job
    assert sorted(r.params["seed"] for r in load_sweep(sweep)) == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_ray_sweep_on_a_local_ray_instance(tmp_path):
    """Two jobs on a Ray instance started for the sweep (CPU), each in its own folder; a DDP job
    is refused in one line."""
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2",
                                    "seed=0,1", "trainer=cpu", *TINY, f"hydra.sweep.dir={sweep}"],
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["status"], r["seed"]) for r in _summaries(sweep, 2)] == [("completed", 0), ("completed", 1)]
    report_main([str(sweep)])
    assert "2 runs, 2 completed" in (sweep / "report.md").read_text()
    ddp = run_entry("train.py", ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2",
                                 "trainer=ddp_cpu", f"hydra.sweep.dir={tmp_path / 'ddp'}"], cwd=tmp_path)
    assert ddp.returncode == 2 and ddp.stderr.strip().splitlines()[-1].startswith(
        "error: job #0 asks for 2 device(s) x 1 node(s): on Ray each job is one process"), ddp.stderr[-2000:]
