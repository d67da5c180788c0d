"""The study report: table, ranking, failed runs and plots from run folders or W&B runs."""

import json
from types import SimpleNamespace

import pytest
import yaml

from vitlab.runs.report import aggregate, load_sweep, main, runs_from_wandb, study_keys, write_report


def make_job(sweep, num, overrides, summary=None):
    """A job folder as Hydra and vitlab write it (summary None: failed before training)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    return job


def done(top1, params=542_090, speed=1000.0):
    return {"status": "completed", "test": {"test/acc": top1, "test/acc_top5": 0.99},
            "parameters": params, "images_per_sec": speed, "wall_time_s": 10.0}


@pytest.fixture
def fraction_sweep(tmp_path):
    """model × fraction × 2 seeds; one diverged run and one that never wrote a summary."""
    sweep, num = tmp_path / "sweep", 0
    acc = {("vit_micro", "0.1"): 0.5, ("vit_micro", "1.0"): 0.8,
           ("vit_hybrid", "0.1"): 0.7, ("vit_hybrid", "1.0"): 0.9}
    for (model, frac), a in acc.items():
        for seed in (0, 1):
            overrides = ["experiment=hybrid_vs_pure", "trainer.max_epochs=5", f"model={model}",
                         f"data.train_fraction={frac}", f"seed={seed}"]
            make_job(sweep, num, overrides, done(a + 0.02 * seed, params=1e6 if "hybrid" in model else 5e5))
            num += 1
    make_job(sweep, num, ["experiment=hybrid_vs_pure", "trainer.max_epochs=5", "model=vit_micro",
                          "data.train_fraction=0.1", "seed=2"],
             {"status": "diverged", "error": "training loss is nan at step 3"})
    make_job(sweep, num + 1, ["experiment=hybrid_vs_pure", "trainer.max_epochs=5", "model=vit_hybrid",
                              "data.train_fraction=1.0", "seed=2"])
    return sweep


def test_runs_group_by_varying_overrides_and_average_over_seeds(fraction_sweep):
    runs = load_sweep(fraction_sweep)
    assert len(runs) == 10
    keys, common = study_keys(runs)
    assert keys == ["data.train_fraction", "model"]
    assert common == {"experiment": "hybrid_vs_pure", "trainer.max_epochs": "5"}
    rows = aggregate(runs, keys)
    assert [r["config"] for r in rows][0] == {"data.train_fraction": "1.0", "model": "vit_hybrid"}
    best = rows[0]
    assert best["completed"] == 2 and best["runs"] == 3  # the summary-less job counts, unaveraged
    assert best["top1"] == pytest.approx((0.91, 0.0141421), rel=1e-4)
    assert [r["top1"][0] for r in rows] == sorted((r["top1"][0] for r in rows), reverse=True)


def test_report_lists_failed_runs_and_draws_fraction_plots(fraction_sweep, capsys):
    main([str(fraction_sweep)])
    report = (fraction_sweep / "report.md").read_text()
    assert "report:" in capsys.readouterr().out
    assert "10 runs, 8 completed" in report
    assert "| 1 | 1.0 | vit_hybrid | 2/3 | 0.9100 ± 0.0141 |" in report
    assert "| model=vit_hybrid | 0.710 ± 0.014 | 0.910 ± 0.014 |" in report  # vs fraction
    assert "diverged | training loss is nan at step 3 |" in report
    assert "failed | no summary.json: failed before training |" in report
    for png in ("top1.png", "accuracy_vs_fraction.png"):
        assert (fraction_sweep / png).stat().st_size > 1000


def test_a_study_without_fractions_has_no_fraction_plot(tmp_path):
    for i, (variant, acc) in enumerate([("none", 0.6), ("learned_1d", 0.7), ("none", 0.62)]):
        make_job(tmp_path, i, [f"model/pos_embed={variant}", f"seed={i}"], done(acc))
    path = write_report(tmp_path)
    text = path.read_text()
    assert "| 1 | learned_1d | 1/1 | 0.7000 ± 0.0000 |" in text
    assert "| 2 | none | 2/2 | 0.6100 ± 0.0141 |" in text
    assert "Runs that did not complete\n\nNone." in text
    assert not (tmp_path / "accuracy_vs_fraction.png").exists()


def test_the_same_table_from_wandb_runs():
    """W&B runs (as wandb.Api().runs returns them) carry the overrides in their config."""
    def run(name, state, overrides, summary):
        return SimpleNamespace(name=name, state=state, summary=summary,
                               config={"overrides": overrides, "parameters": 542_090})

    api_runs = [run("a", "finished", ["model=vit_micro", "seed=0"], {"test/acc": 0.8, "status": "completed"}),
                run("b", "finished", ["model=vit_micro", "seed=1"], {"test/acc": 0.9}),
                run("c", "crashed", ["model=vit_hybrid", "seed=0"], {})]
    runs = runs_from_wandb(api_runs)
    assert [r.status for r in runs] == ["completed", "completed", "failed"]
    keys, _ = study_keys(runs)
    rows = aggregate(runs, keys)
    assert rows[0]["config"] == {"model": "vit_micro"} and rows[0]["top1"][0] == pytest.approx(0.85)
    assert rows[0]["parameters"][0] == 542_090
    assert rows[1]["completed"] == 0 and rows[1]["top1"] is None


def test_report_from_a_mocked_wandb_api(tmp_path, monkeypatch):
    calls = {}

    class Api:
        def runs(self, path, filters=None):
            calls.update(path=path, filters=filters)
            return [SimpleNamespace(name="a", state="finished", config={"overrides": ["seed=0"]},
                                    summary={"test/acc": 0.5})]

    monkeypatch.setattr("wandb.Api", Api)
    main([str(tmp_path / "out"), "--wandb", "me/vitlab", "--group", "g1"])
    assert calls == {"path": "me/vitlab", "filters": {"group": "g1"}}
    assert "0.5000 ± 0.0000" in (tmp_path / "out" / "report.md").read_text()


def test_a_tuned_study_shows_the_chosen_values_and_ranks_only_its_final_runs(tmp_path):
    """hydra/sweeper=tuned's folder: tune/<variant>/<trial>/ (no test), final/<job>/, tuned.yaml.
    A variant whose trials all failed has no chosen values and no final runs."""
    lr, wd = "0.0012520653814999472", "0.1346941509642705"
    trial = {"status": "completed", "val": {"best": 0.97}, "parameters": 1, "wall_time_s": 1.0}
    make_job(tmp_path / "tune" / "relative", 0, ["model/pos_embed=relative", f"module.optimizer.lr={lr}",
                                                 f"module.weight_decay={wd}", "test=False"], trial)
    make_job(tmp_path / "tune" / "none", 0, ["model/pos_embed=none", "module.optimizer.lr=0.5"],
             {"status": "diverged", "error": "training loss is nan at step 1"})
    for seed in (0, 1):
        make_job(tmp_path / "final", seed, ["model/pos_embed=relative", f"module.optimizer.lr={lr}",
                                            f"module.weight_decay={wd}", f"seed={seed}"],
                 done(0.9 + seed / 100))
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump({
        "seeds": ["0", "1"], "tuning_overrides": ["objective=val/best", "test=false"],
        "search_space": {"module.optimizer.lr": "tag(log, interval(1e-4, 1e-2))",
                         "module.weight_decay": "tag(log, interval(0.005, 0.5))"},
        "points": [{"overrides": ["model/pos_embed=relative"], "folder": "tune/relative", "best_value": 0.97,
                    "best_params": {"module.optimizer.lr": float(lr), "module.weight_decay": float(wd)},
                    "final_jobs": ["final/0", "final/1"], "error": None},
                   {"overrides": ["model/pos_embed=none"], "folder": "tune/none", "best_value": None,
                    "best_params": None, "final_jobs": [], "error": "No trials are completed yet."}]}))
    text = write_report(tmp_path).read_text()
    assert "4 runs (2 tuning trials, 2 final runs), 3 completed" in text
    assert "## Tuned settings (Optuna on the validation split: val/best)" in text
    assert "| relative | 1/1 | 0.9700 | 0.00125 | 0.135 |" in text
    assert "| none | 0/1 | — (no trial completed) | — | — |" in text
    assert "seeds 0, 1" in text
    assert "| 1 | relative | 0.00125 | 0.135 | 2/2 | 0.9050 ± 0.0071 |" in text  # trials not ranked
    assert "| tune/none/0 |" in text and "diverged" in text  # failed trials are still listed


def test_mean_attention_distance_per_layer_is_drawn_per_series_at_the_largest_fraction(tmp_path):
    """experiment=inductive_bias: each run's summary carries its distance per layer; the report
    averages them over seeds, per bias, at the largest fraction (the smaller one is not drawn)."""
    sweep, num = tmp_path / "sweep", 0
    distance = {("pure", "1.0"): [16.0, 16.0], ("gpsa", "1.0"): [9.0, 15.0],
                ("pure", "0.1"): [99.0, 99.0], ("gpsa", "0.1"): [99.0, 99.0]}
    for (bias, frac), d in distance.items():
        for seed in (0, 1):
            summary = {**done(0.9), "attention_distance": [v + seed for v in d]}
            make_job(sweep, num, [f"bias={bias}", f"data.train_fraction={frac}", f"seed={seed}"], summary)
            num += 1
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    assert "## Mean attention distance per layer (pixels, mean over heads and seeds at " \
           "data.train_fraction=1.0)" in report
    assert "| gpsa | 9.50 | 15.50 |" in report and "| pure | 16.50 | 16.50 |" in report
    assert "99.50" not in report
    assert (sweep / "attention_distance.png").is_file()


def test_runs_without_attention_distance_draw_no_distance_section(fraction_sweep):
    write_report(fraction_sweep)
    assert "attention distance" not in (fraction_sweep / "report.md").read_text().lower()
    assert not (fraction_sweep / "attention_distance.png").exists()


def test_a_variants_own_tuned_knob_is_listed_and_marked_not_tuned_where_it_has_none(tmp_path):
    """hydra.sweeper.variant_params: relative tuned its init_std, sincos_2d has no table."""
    space = {"module.optimizer.lr": "tag(log, interval(1e-4, 1e-2))"}
    init = {"model.pos_embed.init_std": "tag(log, interval(0.01, 2.0))"}
    points = []
    for v, best in [("relative", {"module.optimizer.lr": 0.002, "model.pos_embed.init_std": 0.9}),
                    ("sincos_2d", {"module.optimizer.lr": 0.001})]:
        overrides = [f"model/pos_embed={v}", *(f"{k}={x}" for k, x in best.items())]
        make_job(tmp_path / "tune" / v, 0, [*overrides, "test=False"],
                 {"status": "completed", "val": {"best": 0.9}})
        make_job(tmp_path / "final", len(points), [*overrides, "seed=0"], done(0.8))
        points.append({"overrides": [f"model/pos_embed={v}"], "folder": f"tune/{v}", "best_value": 0.9,
                       "search_space": {**space, **(init if v == "relative" else {})}, "best_params": best,
                       "final_jobs": [f"final/{len(points)}"], "error": None})
    (tmp_path / "tuned.yaml").write_text(yaml.safe_dump(
        {"seeds": ["0"], "tuning_overrides": [], "search_space": space, "points": points}))
    text = write_report(tmp_path).read_text()
    assert "| model/pos_embed | trials | best val | module.optimizer.lr | model.pos_embed.init_std |" in text
    assert "| relative | 1/1 | 0.9000 | 0.002 | 0.9 |" in text
    assert "| sincos_2d | 1/1 | 0.9000 | 0.001 | not tuned |" in text
    assert "where a configuration has it: `model.pos_embed.init_std: tag(log, interval(0.01, 2.0))`" in text


def test_a_study_without_accuracies_is_ranked_and_drawn_by_its_throughput(tmp_path):
    for i, (source, speed) in enumerate([("imagefolder", 100.0), ("cache", 900.0), ("shards", 300.0)]):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"source={source}"]))
        (job / "summary.json").write_text(json.dumps({"status": "completed", "images_per_sec": speed}))
    report = write_report(tmp_path).read_text()
    assert "## Ranking (throughput, images/s" in report
    rows = [line for line in report.splitlines() if line.startswith(("| 1 ", "| 2 ", "| 3 "))]
    ranked = [row.split(" | ")[1] for row in rows]
    assert ranked == ["cache", "shards", "imagefolder"]
    assert (tmp_path / "images_per_sec.png").is_file()
    assert not (tmp_path / "top1.png").exists()
    assert "top1.png" not in report


def probes_of(slope, seed=0, pos="learned_1d"):
    """A summary's `probes` as train.py writes it: accuracy falling with each perturbation at `slope`."""
    def curve(settings):
        return {str(s): round(0.9 - slope * i + 0.01 * seed, 4) for i, s in enumerate(settings)}
    flat = pos == "none"  # no positions: blind to a shuffle at its own patch size
    return {"shift": curve([0, 2, 4]), "shift_circular": curve([0, 2, 4]), "occlusion": curve([0.0, 0.5]),
            "shuffle": {"1": 0.9, "2": 0.9 if flat else 0.5}, "shift_consistency": 0.5 + slope,
            "cka": {"layers": ["embed", "blocks.0"],
                    "matrix": [[1.0, 0.4 + 0.1 * seed], [0.4 + 0.1 * seed, 1.0]]},
            "skipped": {"cka_between": "no second run"} if slope > 0.2 else {}}


def test_probe_curves_and_cka_heatmaps_are_drawn_from_the_summaries_per_variant(tmp_path):
    from vitlab.runs.report import FIGURE_DATA
    from vitlab.runs.report_probes import probe_parts

    assert "probes" in FIGURE_DATA
    sweep, num = tmp_path / "sweep", 0
    for bias, slope in (("cnn", 0.1), ("pure", 0.3)):
        for frac in ("0.1", "1.0"):
            for seed in (0, 1):
                make_job(sweep, num, [f"bias={bias}", f"data.train_fraction={frac}", f"seed={seed}"],
                         {**done(0.9), "probes": probes_of(slope + (0.05 if frac == "0.1" else 0), seed)})
                num += 1
    write_report(sweep)
    report = (sweep / "report.md").read_text()
    # one row per variant and fraction, mean over the two seeds; a panel per fraction
    assert "## Accuracy vs shift (zero-padded) (bias probe, mean over seeds)" in report
    assert "| cnn @ train_fraction=1 | 0.905 | 0.805 | 0.705 |" in report
    assert "| pure @ train_fraction=1 | 0.905 | 0.605 | 0.305 |" in report
    assert "| pure @ train_fraction=0.1 | 0.905 | 0.555 | 0.205 |" in report
    # shift consistency against the fraction, 0.1 then 1.0
    assert "| cnn | 0.650 | 0.600 |" in report and "| pure | 0.850 | 0.800 |" in report
    assert "Probes skipped: pure @ train_fraction=0.1: cka_between (no second run); " in report
    for png in ("probe_shift.png", "probe_shift_circular.png", "probe_occlusion.png", "probe_shuffle.png",
                "probe_consistency.png", "probe_cka.png"):
        assert (sweep / png).stat().st_size > 5000 and f"]({png})" in report
    figures = {name: fig for fig, name, _ in (p for p in probe_parts(load_sweep(sweep), ["bias",
               "data.train_fraction"], "data.train_fraction") if not isinstance(p, str))}
    small, full = figures["probe_shift.png"].axes
    assert small.get_title() == "data.train_fraction=0.1" and full.get_title() == "data.train_fraction=1"
    assert [line.get_label() for line in full.lines] == ["cnn", "pure"]
    assert list(full.lines[1].get_ydata()) == pytest.approx([0.905, 0.605, 0.305])
    cka = figures["probe_cka.png"].axes
    assert cka[0].get_title() == "cnn @ train_fraction=1"
    assert cka[0].images[0].get_array()[0][1] == pytest.approx(0.45)  # the seeds' mean


def test_positional_ablation_shows_shuffle_sensitivity_per_variant(tmp_path):
    for num, pos in enumerate(("none", "learned_1d")):
        make_job(tmp_path, num, [f"model/pos_embed={pos}"], {**done(0.9), "probes": probes_of(0.1, pos=pos)})
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Accuracy vs patch shuffle" in report
    assert "| none | 0.900 | 0.900 |" in report and "| learned_1d | 0.900 | 0.500 |" in report
