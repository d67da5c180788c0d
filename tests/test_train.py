"""Training end to end: the CLI, run folders, evaluation of checkpoints, seeds, schedules."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import run_entry
from hydra.utils import instantiate

from vitlab.training.train import train

QUICK = ["trainer.max_epochs=2", "data.train_fraction=0.3", "trainer.enable_progress_bar=false"]


def test_cli_trains_writes_a_run_folder_and_eval_reproduces_its_test_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", [*QUICK, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"run folder: {run_dir}" in result.stdout
    printed = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert summary["parameters"] == 542_090 and summary["images_per_sec"] > 0
    assert summary["wall_time_s"] > 0 and 0 <= summary["val"]["best"] <= 1
    assert round(summary["test"]["test/acc"], 4) == printed
    for path in (".hydra/config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "csv/metrics.csv"):
        assert (run_dir / path).is_file(), path

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    evaluated = run_entry("eval.py", [f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"test accuracy: {printed:.4f}" in evaluated.stdout
    eval_summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    for key, value in summary["test"].items():
        assert eval_summary["test"][key] == pytest.approx(value, abs=1e-6)

    # the same checkpoint at another image size: the 4x4 position table becomes 6x6
    larger = run_entry("eval.py", [f"ckpt_path={ckpt}", "+data.img_size=48",
                                   f"hydra.run.dir={tmp_path / 'eval48'}"], cwd=tmp_path)
    assert larger.returncode == 0, larger.stderr[-2000:]
    assert json.loads((tmp_path / "eval48" / "summary.json").read_text())["test"]["test/acc"] > 0.1


def test_the_same_seed_repeats_exactly_on_cpu_and_another_seed_differs(compose_cfg, tmp_path):
    def run(seed, name):
        cfg = compose_cfg([*QUICK, "trainer.max_epochs=1", f"seed={seed}", "probes.enabled=false"])
        cfg.paths.output_dir = str(tmp_path / name)
        summary = train(cfg)
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        return summary, state["state_dict"]

    a, wa = run(3, "a")
    b, wb = run(3, "b")
    c, wc = run(4, "c")
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.head.weight"], wc["model.head.weight"])


def test_bad_config_stops_before_training_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", ["model.patch_size=5", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: model.patch_size=5 does not divide data.img_size=32; use one of [2, 4, 8, 16]")
    assert not (run_dir / "checkpoints").exists()


def test_unknown_preset_lists_the_available_ones_in_one_line(tmp_path):
    result = run_entry("train.py", ["model=vit_nonexistent"], cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: model=vit_nonexistent is not one of the model presets: ")
    assert "vit_micro" in line and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_warmup_then_cosine_schedule(compose_cfg):
    cfg = compose_cfg(["module.warmup_epochs=2", "module.min_lr_ratio=0.01",
                       "module.optimizer.lr=1e-3"])
    module = instantiate(cfg.module, model=torch.nn.Linear(4, 10))
    object.__setattr__(module, "_trainer", SimpleNamespace(
        estimated_stepping_batches=100, num_training_batches=10, accumulate_grad_batches=1))
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 1e-4 and lrs[0] < lrs[10] < lrs[19]           # linear warm-up, 20 steps
    assert lrs[20] == pytest.approx(1e-3, rel=1e-3)               # peak
    assert all(x >= y for x, y in zip(lrs[20:], lrs[21:], strict=False))        # then decays
    assert lrs[-1] == pytest.approx(1e-5, rel=0.1)                # to lr * min_lr_ratio


@pytest.mark.parametrize("max_steps, max_epochs, total, warmup", [
    (300, -1, 300, 10),   # steps only (experiment=finetune): 2 epochs of 10 batches / 2 accumulated
    (12, 50, 12, 10),     # a step limit before the epochs run out: warm-up still counts epochs
])
def test_schedule_follows_the_steps_the_trainer_takes(max_steps, max_epochs, total, warmup):
    """Warm-up in epochs is counted in this loader's optimiser steps per epoch, whatever ends
    training (trainer.max_steps or trainer.max_epochs), never as a share of one assumed epoch."""
    from vitlab.objectives.optim import schedule_steps

    trainer = SimpleNamespace(estimated_stepping_batches=total, num_training_batches=10,
                              accumulate_grad_batches=2, max_epochs=max_epochs, max_steps=max_steps)
    assert schedule_steps(trainer, warmup_epochs=2) == (total, warmup)
    assert schedule_steps(trainer, warmup_epochs=2, warmup_steps=7) == (total, 7)


def test_the_batch_plan_is_computed_once_per_run_and_passed_on(compose_cfg, tmp_path, monkeypatch):
    """validate computes it (its rule refuses a batch that does not split); build and
    summary.json take that plan, not a second and third reading of the config."""
    import vitlab.training.config_checks
    import vitlab.training.train
    from vitlab.training.distributed import batch_plan

    calls = []
    counted = lambda cfg: calls.append(1) or batch_plan(cfg)  # noqa: E731
    monkeypatch.setattr(vitlab.training.config_checks, "batch_plan", counted)
    monkeypatch.setattr(vitlab.training.train, "batch_plan", counted)
    cfg = compose_cfg([*QUICK, "trainer.max_epochs=1", "probes.enabled=false", "data.batch_size=32",
                       "data.max_device_batch=16"])
    summary = train(cfg)
    assert len(calls) == 1
    assert summary["batch"] == {"global_batch": 32, "world_size": 1, "accumulate": 2, "device_batch": 16}
