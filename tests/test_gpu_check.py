"""`make gpu-check`: without a GPU it says so in one line; `dry=true` runs every step on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_entry


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_2(tmp_path):
    result = run_entry("gpu_check.py", [f"out={tmp_path / 'check.json'}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA device" in lines[0] and "dry=true" in lines[0]
    assert not (tmp_path / "check.json").exists()


@pytest.mark.slow
def test_dry_run_runs_every_step_at_toy_sizes_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    result = run_entry("gpu_check.py", ["dry=true", f"out={out}"], cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert set(steps) == {"bench_eager", "bench_compiled", "presets", "cifar_crop_flip", "cifar_cudagraphs",
                          "cifar_recipe", "ddp", "bench_fit", "bench_path"}
    assert all(s["status"] == "ok" for s in steps.values()), {n: s["note"] for n, s in steps.items()}
    assert steps["presets"]["figures"]["completed"] == steps["presets"]["figures"]["of"] > 10
    assert steps["bench_eager"]["figures"]["vitlab_img_s"] > 0 and steps["bench_fit"]["figures"]["ratio"] > 0
    ratios = {f"{path}_ratio" for path in ("loader", "workers", "device", "streaming")}
    assert ratios <= set(steps["bench_path"]["figures"])
    assert 0 <= steps["cifar_recipe"]["figures"]["test_acc"] <= 1
    assert "presets" in result.stdout and "figures" in result.stdout  # the table


def test_the_baselines_are_told_by_the_class_each_preset_builds():
    """A new baseline preset (cnn_small extends cnn) must not be tried with positional variants."""
    import gpu_check

    baselines = {m for m in gpu_check.presets("model") if not gpu_check.is_vit(m)}
    assert baselines == {"mlp", "cnn", "cnn_small", "rnn"}
