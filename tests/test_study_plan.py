"""Equal steps at every data size (study.equal_steps): the budget, and a real 2-fraction sweep."""

import json

import pytest
from conftest import compose_config, run_entry

from vitlab.training.distributed import batch_plan
from vitlab.training.study_plan import full_data_steps, step_budget
from vitlab.training.train import build


def test_full_data_steps_count_partial_batches_unless_dropped():
    assert full_data_steps(1000, 64, 3) == 16 * 3
    assert full_data_steps(1000, 64, 3, drop_last=True) == 15 * 3
    assert full_data_steps(10, 64, 2, drop_last=True) == 2  # never zero steps


@pytest.mark.parametrize("fraction", ["0.1", "1.0"])
def test_every_fraction_gets_the_full_data_steps_and_a_sparse_validation(fraction, tmp_path):
    cfg = compose_config(["study.equal_steps=true", "trainer.max_epochs=4", "study.val_checks=8",
                          f"data.train_fraction={fraction}"], output_dir=tmp_path)
    datamodule, module, trainer = build(cfg)
    full = datamodule.full_train_images
    steps = full_data_steps(full, cfg.data.batch_size, 4)
    assert trainer.max_steps == steps and trainer.max_epochs == -1
    assert trainer.val_check_interval == steps // 8 and trainer.check_val_every_n_epoch is None
    # the warm-up is full-data epochs' steps, whatever the fraction
    assert module.hparams.warmup_steps == round(
        cfg.module.warmup_epochs * steps / 4)


def test_equal_epochs_stay_an_explicit_choice_and_steps_can_be_set():
    cfg = compose_config(["experiment=hybrid_vs_pure", "study.equal_steps=false"])
    assert step_budget(cfg, None, batch_plan(cfg)) is None  # the trainer keeps max_epochs
    assert compose_config(["experiment=hybrid_vs_pure"]).study.equal_steps is True


@pytest.mark.slow
def test_two_fractions_of_a_data_size_study_end_at_the_same_step(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", [
        "experiment=hybrid_vs_pure", "model=vit_micro", "model.depth=1", "data/augment=none",
        "data.train_fraction=0.2,1.0", "seed=0", "trainer.max_epochs=2", "probes.enabled=false",
        "trainer.enable_progress_bar=false", "logger=csv", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    small, full = (json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1"))
    assert small["train_images"] < full["train_images"] / 4
    assert small["global_step"] == full["global_step"] == small["budget"]["max_steps"] > 0
    assert small["budget"]["equal_steps"] and small["budget"]["full_data_epochs"] == 2
    assert small["epochs"] > full["epochs"]  # the small split is seen more often
    assert small["convergence"]["validations"] >= 2
