"""Studies: experiment configs, a real multirun (distinct folders, a failed job that does not
stop the others, the report), and W&B offline logging grouped by sweep."""

import inspect
import json
from pathlib import Path

import pytest
from conftest import CONF, compose_config, run_entry
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from vitlab.models import VisionTransformer
from vitlab.runs.build_model import OWN_KEYS, build_model
from vitlab.runs.report import main as report_main
from vitlab.training.config_checks import validate
from vitlab.training.loggers import WandbLogger

TINY = ["model.depth=1", "data.train_fraction=0.1", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false"]


def hydra_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment, params", [
    ("hybrid_vs_pure", {"model": "vit_micro,vit_hybrid", "data.train_fraction": "0.1,0.25,0.5,1.0",
                        "seed": "0,1,2"}),
    ("posemb_ablation", {"model/pos_embed": "none,learned_1d,learned_2d,relative,relative_bias,"
                                            "sincos_2d,rope_2d", "seed": "0,1,2"}),
    ("inductive_bias", {"bias": "mlp,rnn,pure,mimetic,spt,lsa,spt_lsa,cct,gpsa,hybrid,cnn_small,cnn",
                        "data.train_fraction": "0.05,0.1,0.25,0.5,1.0", "seed": "0,1,2"}),
])
def test_experiments_are_multiruns_over_their_sweeps(experiment, params):
    cfg = hydra_config([f"experiment={experiment}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == params
    assert cfg.tags[0] == experiment


def test_sweep_folders_are_unique_per_sweep_and_job():
    sweep = OmegaConf.to_container(hydra_config([]).hydra.sweep, resolve=False)
    assert sweep == {"dir": "outputs/${task_name}/multiruns/${now:%Y-%m-%d_%H-%M-%S_%f}",  # µs
                     "subdir": "${hydra.job.num}"}


@pytest.mark.parametrize("model", ["vit_micro", "vit_hybrid"])
@pytest.mark.parametrize("fraction", ["0.1", "1.0"])
def test_every_hybrid_vs_pure_job_composes_and_builds(model, fraction, tmp_path):
    cfg = hydra_config(["experiment=hybrid_vs_pure", f"model={model}", f"data.train_fraction={fraction}"])
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} in the tags resolves as in a real job
    try:
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir = str(tmp_path)
        validate(cfg)
        assert list(cfg.tags) == ["hybrid_vs_pure", model, f"fraction={fraction}"]
    finally:
        HydraConfig.instance().cfg = None
    net = build_model(cfg.model)
    assert sum(p.numel() for p in net.parameters()) < 2e6  # comparable small sizes


@pytest.mark.parametrize("overrides, epochs", [
    (["model=vit_hybrid"], 25),                                 # the hybrid's own schedule
    (["model=vit_hybrid", "trainer.max_epochs=7"], 7),          # the command line wins
    (["model=vit_hybrid", "trainer=cpu"], 25),                  # whatever the trainer
    (["model=vit_micro"], 35),                                  # the default run
    (["experiment=hybrid_vs_pure", "model=vit_hybrid"], 35),    # the study trains both alike
    (["experiment=hybrid_vs_pure", "model=vit_micro"], 35),
    (["experiment=hybrid_vs_pure", "model=vit_hybrid", "trainer.max_epochs=30"], 30),
])
def test_a_model_preset_brings_its_epochs_and_explicit_values_win(overrides, epochs):
    cfg = compose_config(overrides)
    assert cfg.trainer.max_epochs == epochs
    # every key under model: is a VisionTransformer argument (the epochs live at the root), but
    # vitlab's own keys that say which weights to start from
    assert set(cfg.model) - {"_target_", *OWN_KEYS} <= set(inspect.signature(VisionTransformer).parameters)


@pytest.mark.slow  # end-to-end runs: kept out of the 10-minute fast suite
def test_multirun_keeps_going_past_a_failed_job_and_the_report_lists_it(tmp_path):
    """Job 0 fails mid-training (an EarlyStopping on a metric that does not exist raises a plain
    RuntimeError); job 1 still runs. Each job logs to its own offline W&B run in the sweep group."""
    sweep = tmp_path / "sweep"
    result = run_entry("train.py", [
        "-m", *TINY, "logger=many", "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.stop.monitor=no/such_metric,val/acc", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode != 0  # Hydra re-raises the failure after the whole sweep ran
    failed, done = (json.loads((sweep / j / "summary.json").read_text()) for j in ("0", "1"))
    assert failed["status"] == "failed" and "no/such_metric" in failed["error"]
    assert done["status"] == "completed" and done["test"]["test/acc"] >= 0

    runs = [next((sweep / j / "wandb").glob("offline-run-*")) for j in ("0", "1")]
    assert runs[0].name != runs[1].name  # one W&B run per job, not one shared
    for run in runs:
        raw = next(run.glob("*.wandb")).read_bytes()
        for text in ("train_sweep", "vit_micro", "model=vit_micro", "train_fraction=0.1", "parameters"):
            assert text.encode() in raw, text  # group, job_type, tags, logged config

    report_main([str(sweep)])
    report = (sweep / "report.md").read_text()
    assert "2 runs, 1 completed" in report
    failed_row = next(line for line in report.splitlines() if line.startswith("| 0 |"))
    assert "callbacks.stop.monitor=no/such_metric" in failed_row and "| failed |" in failed_row
    assert (sweep / "top1.png").is_file()


def test_run_folder_gets_attention_and_confusion_figures(tmp_path):
    run_dir = tmp_path / "run"
    result = run_entry("train.py", [*TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for png in ("attention_rollout.png", "attention_distance.png", "confusion_matrix.png"):
        assert (run_dir / png).stat().st_size > 5000, png
    counts = [[int(v) for v in line.split(",")] for line in
              (run_dir / "confusion_matrix.csv").read_text().splitlines()]
    assert len(counts) == 10 and sum(map(sum, counts)) == 360  # the digits test split
    distance = json.loads((run_dir / "summary.json").read_text())["attention_distance"]
    assert len(distance) == 1 and 0 < distance[0] < 32 * 2**0.5  # one block, pixels in the image


def test_wandb_falls_back_to_offline_when_it_cannot_go_online(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), project="vitlab-test")
    assert logger.experiment.offline
    logger.log_metrics({"val/acc": 0.5}, step=0)
    logger.finish({"status": "completed"})
    assert logger._experiment is None
    assert list(Path(tmp_path, "wandb").glob("offline-run-*"))
