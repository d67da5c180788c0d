"""The training step as a GPU runs it, exercised on the CPU: mixed precision, a fused AdamW and
gradient clipping together in every trainer preset, and a step that never waits for the device
(NaN guard, metrics, progress bar). Nothing here times anything."""

from __future__ import annotations

import csv
import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_config, run_entry
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.precision import MixedPrecision

from vitlab.callbacks.guards import DivergenceError, FiniteLoss
from vitlab.callbacks.throughput import Throughput
from vitlab.training.train import build

CLIP = 0.05  # far below the raw gradient norm of a fresh model: clipping must act every step
SMALL = ["data.train_fraction=0.2", "trainer.max_epochs=1", "test=false",
         "~callbacks.attention", "~callbacks.confusion_matrix", "~callbacks.pos_similarity"]


class ClippedNorms(L.Callback):
    """The global gradient norm the optimiser steps with (after clipping), every step."""

    def __init__(self):
        self.norms, self.fused = [], None

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        self.fused = opt.defaults.get("fused")

        def after_step(optimizer, args, kwargs):  # grads stay until the next step zeroes them
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(g.float()) for g in grads]))))

        opt.register_step_post_hook(after_step)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
def test_mixed_precision_fused_adamw_and_clipping_train_together(compose_cfg, tmp_path, precision):
    cfg = compose_cfg([*SMALL, "trainer=cpu", "+module.optimizer.fused=true",
                       f"trainer.gradient_clip_val={CLIP}", "trainer.log_every_n_steps=1",
                       "trainer.enable_progress_bar=false"])
    datamodule, module, trainer = build(cfg)
    if precision == "16-mixed":  # Lightning has no fp16 on CPU: its GPU plugin, by hand
        scaler = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=1024.0))
        trainer = instantiate(cfg.trainer, precision=None, plugins=[scaler],
                              callbacks=trainer.callbacks, logger=trainer.loggers)
    else:
        trainer = instantiate(cfg.trainer, precision=precision, callbacks=trainer.callbacks,
                              logger=trainer.loggers)
    probe = ClippedNorms()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)
    assert probe.fused is True and len(probe.norms) == trainer.global_step > 5
    # clipped, never dropped; under fp16 the fused step sees unscaled, clipped gradients
    assert max(probe.norms) <= CLIP * (1 + 1e-3), probe.norms
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    raw = [float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")]
    # the norm before clipping, logged: the true one (fp16: unscaled first, not 1024 times it)
    assert len(raw) >= 5 and CLIP < min(raw) and max(raw) < 100, raw


def test_the_reported_crash_now_trains_through_the_cli(tmp_path):
    """The GPU preset's combination, reproduced on the CPU as the issue did."""
    result = run_entry("train.py", ["trainer.precision=bf16-mixed", "+module.optimizer.fused=true",
                                    "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
def test_fused_adamw_and_clipping_under_ddp(tmp_path):
    result = run_entry("train.py", ["trainer=ddp_cpu", "trainer.precision=bf16-mixed",
                                    "+module.optimizer.fused=true", f"trainer.gradient_clip_val={CLIP}",
                                    *SMALL, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("preset", ["gpu", "ddp", "cpu", "ddp_cpu", "default"])
def test_every_trainer_preset_clips_at_the_configured_norm(preset):
    cfg = compose_config([f"trainer={preset}"])
    assert cfg.trainer.gradient_clip_val == 1.0  # the paper's global-norm clip, in every preset
    assert cfg.trainer.get("gradient_clip_algorithm", "norm") == "norm"


def test_nan_guard_keeps_the_first_bad_step_on_the_device_between_checks():
    class GpuGuard(FiniteLoss):
        def _due(self, trainer):
            return False  # as on a GPU between two checks: nothing is read back

    guard = GpuGuard()
    trainer = SimpleNamespace(global_step=0, current_epoch=3, checkpoint_callbacks=[], world_size=1,
                              strategy=SimpleNamespace(root_device=torch.device("cpu")))
    for step, loss in enumerate([1.0, float("nan"), 2.0, float("inf")], start=1):
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, step)
    with pytest.raises(DivergenceError, match=r"training loss is nan at step 2 \(epoch 3\)"):
        guard.on_validation_start(trainer, None)  # checked before any checkpoint is written


def test_progress_bar_redraws_at_the_log_interval_and_can_be_switched_off(compose_cfg):
    _, _, trainer = build(compose_cfg(["trainer.log_every_n_steps=7"]))
    bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == 1 and bars[0].refresh_rate == 7
    _, _, quiet = build(compose_cfg(["trainer.enable_progress_bar=false"]))
    assert not any(isinstance(c, TQDMProgressBar) for c in quiet.callbacks)


def test_compile_trains_batches_of_one_shape(compose_cfg):
    """compile=true drops the last partial training batch (no recompilation; CUDA graphs can
    replay), unless data.drop_last says otherwise."""
    datamodule, _, _ = build(compose_cfg(["compile=true"]))
    assert datamodule.drop_last is True
    datamodule.setup("fit")
    sizes = {len(y) for _, y in datamodule.train_dataloader()}
    assert sizes == {32}
    kept, _, _ = build(compose_cfg(["compile=true", "data.drop_last=false"]))
    assert kept.drop_last is False


@pytest.mark.parametrize("overrides", [[], ["experiment=mae_pretrain", "data=fake"]])
def test_compile_compiles_what_a_step_runs(compose_cfg, overrides):
    """compile=true: the module compiles, in place, the network its step calls: the classifier
    its ViT, MAE its autoencoder (whose encoder is called by parts, not as a whole)."""
    compiled = lambda m: getattr(m, "_compiled_call_impl", None) is not None  # noqa: E731
    _, module, _ = build(compose_cfg([*overrides, "compile=true"]))
    assert compiled(module.model) and module.hparams.compile
    _, eager, _ = build(compose_cfg(overrides))
    assert not compiled(eager.model) and not eager.hparams.compile


def test_fp8_is_refused_in_one_line_without_a_float8_gpu(compose_cfg, tmp_path):
    result = run_entry("train.py", ["fp8=true", "debug=fast", f"hydra.run.dir={tmp_path / 'run'}"],
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: fp8=true needs a GPU with float8")


def test_throughput_counts_the_time_between_steps_as_training_time(compose_cfg, tmp_path):
    """images/s in the summary is training images over training wall time, data waits and
    the loop's own time between steps included (validation excluded)."""
    pause = 0.05

    class AfterEveryStep(L.Callback):  # runs after the throughput callback's end of step
        def on_train_batch_end(self, *args):
            time.sleep(pause)

    datamodule, module, trainer = build(compose_cfg([*SMALL, "trainer.log_every_n_steps=1"]))
    trainer.callbacks.append(AfterEveryStep())
    trainer.fit(module, datamodule=datamodule)
    meter = next(c for c in trainer.callbacks if isinstance(c, Throughput))
    counted = trainer.global_step - meter.skip_steps
    assert meter.seconds >= counted * pause  # every gap counted
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    assert any(float(r["perf/data_frac"]) > 0 for r in rows if r.get("perf/data_frac"))


class StepLosses(L.Callback):
    def __init__(self):
        self.losses, self.sizes = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        self.sizes.append(len(batch[1]))


def test_per_step_values_are_logged_at_log_steps_and_the_epoch_loss_is_their_weighted_mean(
        compose_cfg, tmp_path):
    """The step logs loss and gradient norm only at the steps the logger writes (every
    log_every_n_steps); the epoch's loss is the batch-weighted mean of every step's, the last
    partial batch included."""
    datamodule, module, trainer = build(compose_cfg(
        [*SMALL, "data.train_fraction=0.3", "trainer.log_every_n_steps=4", "data.drop_last=false"]))
    probe = StepLosses()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    for key in ("train/loss_step", "train/grad_norm"):
        steps = [int(r["step"]) for r in rows if r.get(key)]
        assert steps == list(range(3, trainer.global_step, 4)), (key, steps)
    logged = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")}
    assert all(logged[s] == pytest.approx(probe.losses[s], rel=1e-6) for s in logged)
    assert len(set(probe.sizes)) == 2  # a partial last batch, weighted by its size
    mean = sum(loss * n for loss, n in zip(probe.losses, probe.sizes, strict=True)) / sum(probe.sizes)
    epoch = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert epoch == [pytest.approx(mean, rel=1e-5)]
