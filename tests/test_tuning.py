"""The tuned study (experiment=posemb_tuned, hydra/sweeper=tuned): every variant tuned on the
validation split by its own seeded Optuna study, its best setting trained on seeds and tested,
all in one sweep folder that the report reads; and the `objective` a run returns to a sweeper."""

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import CONF, ROOT, run_entry
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf

from hydra_plugins.vitlab_sweepers.tuned_sweeper import TunedSweeper, present_params, split_arguments
from vitlab.errors import ConfigError
from vitlab.runs.report import main as report_main

VARIANTS = ["learned_1d", "relative_bias"]
TINY = ["model.depth=1", "data.train_fraction=0.1", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false"]
TUNED = ["module.optimizer.lr", "module.weight_decay"]
INIT = "model.pos_embed.init_std"  # both VARIANTS have a table: each tunes its own init scale too


def hydra_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def overrides_of(job: Path) -> dict[str, str]:
    lines = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


def summary_of(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def trials_of(sweep: Path, variant: str) -> list[Path]:
    """A variant's tuning trials, in the order Optuna ran them."""
    return sorted((p for p in (sweep / "tune" / variant).iterdir() if p.is_dir()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def tuned_sweep(tmp_path_factory):
    """2 variants x 2 trials (1 epoch on a tenth of the digits), then each best setting on 2 seeds:
    one CLI run, 8 jobs."""
    cwd = tmp_path_factory.mktemp("tuned")
    sweep = cwd / "sweep"
    result = run_entry("train.py", [
        "experiment=posemb_tuned", f"model/pos_embed={','.join(VARIANTS)}", "seed=0,1",
        "hydra.sweeper.optuna.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}"], cwd=cwd)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep


def test_the_sweeper_plugin_is_discovered():
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Sweeper)}
    assert f"{TunedSweeper.__module__}.TunedSweeper" in found  # Hydra's scan loads its own copy


def test_posemb_tuned_tunes_lr_and_weight_decay_of_every_variant_on_val():
    sweeper = hydra_config(["experiment=posemb_tuned"]).hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.vitlab_sweepers.tuned_sweeper.TunedSweeper"
    assert dict(sweeper.params) == {
        "model/pos_embed": "none,learned_1d,learned_2d,relative,relative_bias,sincos_2d,rope_2d",
        "seed": "0,1,2"}
    assert list(sweeper.tuning_overrides) == ["objective=val/best", "test=false"]
    assert sweeper.optuna.direction == "maximize" and sweeper.optuna.sampler.seed is not None
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.optuna.params.items()])
    assert sorted(space) == TUNED and not fixed
    assert isinstance(space["module.optimizer.lr"], optuna.distributions.LogUniformDistribution)
    own, _ = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.variant_params.items()])
    assert list(own) == [INIT] and own[INIT].low <= 0.02 and own[INIT].high >= 1.0


@pytest.mark.parametrize("variant, tuned", [("relative", True), ("learned_1d", True), ("none", False),
                                            ("sincos_2d", False), ("rope_2d", False)])
def test_a_variants_own_init_scale_is_tuned_only_where_it_has_one(variant, tuned):
    cfg = hydra_config(["experiment=posemb_tuned", f"model/pos_embed={variant}"])
    own = present_params(cfg, dict(cfg.hydra.sweeper.variant_params))
    assert (INIT in own) == tuned


def test_the_grid_the_seeds_and_the_search_space_come_apart():
    plan = split_arguments(["model/pos_embed=a,b", "seed=0,1,2", "experiment=posemb_tuned",
                            "seed=3,4", "module.optimizer.lr=tag(log, interval(1e-4, 1e-2))"])
    assert plan["grid"] == [["model/pos_embed=a"], ["model/pos_embed=b"]]
    assert plan["seeds"] == ["3", "4"]  # the command line (last) wins
    assert plan["fixed"] == ["experiment=posemb_tuned"]
    assert plan["search"] == ["module.optimizer.lr=tag(log, interval(1e-4, 1e-2))"]


def sampled(seed: int, n: int = 3) -> list[dict]:
    """The first n trial parameters a study draws with the experiment's sampler at `seed`."""
    optuna_cfg = hydra_config(["experiment=posemb_tuned"]).hydra.sweeper.optuna
    optuna_cfg.sampler.seed = seed
    space, _ = create_params_from_overrides([f"{k}={v}" for k, v in optuna_cfg.params.items()])
    study = optuna.create_study(sampler=instantiate(optuna_cfg.sampler), direction="maximize")
    trials = [study.ask(space) for _ in range(n)]
    return [t.params for t in trials]


def test_the_sampler_is_seeded():
    assert sampled(0) == sampled(0)
    assert sampled(0) != sampled(1)


@pytest.mark.slow  # the tuned_sweep fixture runs a whole tuned study
def test_the_tuned_study_runs_end_to_end_into_one_sweep_folder(tuned_sweep):
    manifest = yaml.safe_load((tuned_sweep / "tuned.yaml").read_text())
    assert [p["overrides"] for p in manifest["points"]] == [[f"model/pos_embed={v}"] for v in VARIANTS]
    for v in VARIANTS:
        assert len(trials_of(tuned_sweep, v)) == 2
        assert (tuned_sweep / "tune" / v / "optimization_results.yaml").is_file()
    finals = sorted(p for p in (tuned_sweep / "final").iterdir() if p.is_dir())
    assert len(finals) == len(VARIANTS) * 2
    for job in finals:
        summary = summary_of(job)
        assert summary["status"] == "completed" and summary["test"]["test/acc"] >= 0
    jobs = {p.parent for p in tuned_sweep.rglob("summary.json")}
    assert len(jobs) == 8  # each job its own folder


@pytest.mark.slow  # the tuned_sweep fixture runs a whole tuned study
def test_tuning_optimises_validation_accuracy_and_never_tests(tuned_sweep):
    for v in VARIANTS:
        values = []
        for trial in trials_of(tuned_sweep, v):
            overrides, summary = overrides_of(trial), summary_of(trial)
            assert overrides["objective"] == "val/best" and overrides["test"].lower() == "false"
            assert "test" not in summary  # the test split was never evaluated
            values.append(summary["val"]["best"])
        best = OmegaConf.load(tuned_sweep / "tune" / v / "optimization_results.yaml")
        assert best.best_value == pytest.approx(max(values))


def test_every_variants_study_starts_from_the_same_seeded_sampler(tuned_sweep):
    drawn = [[tuple(overrides_of(t)[k] for k in [*TUNED, INIT]) for t in trials_of(tuned_sweep, v)]
             for v in VARIANTS]
    assert drawn[0] == drawn[1]  # the same seed draws the same trial parameters
    assert len(set(drawn[0])) == 2


def test_each_final_run_uses_its_variants_best_trial(tuned_sweep):
    manifest = yaml.safe_load((tuned_sweep / "tuned.yaml").read_text())
    for point in manifest["points"]:
        variant = point["overrides"][0].split("=")[1]
        trials = trials_of(tuned_sweep, variant)
        scores = [summary_of(t)["val"]["best"] for t in trials]
        best_trial = trials[scores.index(max(scores))]  # the first of the best, as Optuna picks
        chosen = {k: overrides_of(best_trial)[k] for k in [*TUNED, INIT]}
        assert set(point["best_params"]) == {*TUNED, INIT} and INIT in point["search_space"]
        finals = [tuned_sweep / job for job in point["final_jobs"]]
        assert sorted(overrides_of(f)["seed"] for f in finals) == ["0", "1"]
        for final in finals:
            overrides = overrides_of(final)
            assert overrides["model/pos_embed"] == variant
            assert {k: overrides[k] for k in [*TUNED, INIT]} == chosen
            assert "objective" not in overrides and "test" not in overrides  # tested, as usual


def test_the_report_shows_the_chosen_values_and_ranks_the_final_runs(tuned_sweep):
    report_main([str(tuned_sweep)])
    report = (tuned_sweep / "report.md").read_text()
    assert "8 runs (4 tuning trials, 4 final runs), 8 completed" in report
    manifest = yaml.safe_load((tuned_sweep / "tuned.yaml").read_text())
    for point in manifest["points"]:
        variant = point["overrides"][0].split("=")[1]
        lr, wd, init = (point["best_params"][k] for k in [*TUNED, INIT])
        assert f"| {variant} | 2/2 | {point['best_value']:.4f} | {lr:.3g} | {wd:.3g} | {init:.3g} |" in report
        assert f"| {variant} | {lr:.3g} | {wd:.3g} | {init:.3g} | 2/2 |" in report  # ranking: 2 seeds each
    assert f"where a configuration has it: `{INIT}: tag(log, interval(0.01, 2.0))`" in report


def test_without_optuna_the_study_stops_with_one_line(tmp_path, monkeypatch):
    hidden = tmp_path / "hide" / "optuna"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named optuna')\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden.parent))
    result = run_entry("train.py", ["experiment=posemb_tuned", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("pip install 'vitlab[optuna]'")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sweep" / "tune").exists()


def entry_module():
    """src/train.py as a module (its objective helpers)."""
    spec = importlib.util.spec_from_file_location("train_entry", ROOT / "src" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("overrides, error", [
    ([], None),                                            # default: test/acc, tested
    (["objective=val/best", "test=false"], None),          # what tuning runs
    (["test=false"], None),                                # untested: returns None, as before
    (["objective=acc"], "objective=acc: use test/acc"),
    (["objective=train/loss"], "objective=train/loss: use test/acc"),
])
def test_objective_names_a_summary_value(compose_cfg, overrides, error):
    check = entry_module().check_objective
    cfg = compose_cfg(overrides)
    if error is None:
        assert check(cfg) == cfg.objective
    else:
        with pytest.raises(ConfigError, match=error):
            check(cfg)


def test_objective_value_reads_the_summary():
    value = entry_module().objective_value
    summary = {"val": {"best": 0.9, "val/acc": 0.8}, "test": {"test/acc": 0.7}}
    assert [value(summary, k) for k in ("val/best", "val/acc", "test/acc")] == [0.9, 0.8, 0.7]
    assert value({"val": {"best": None}}, "test/acc") is None  # test=false or debug=fast: no test
