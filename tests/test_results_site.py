"""The documentation's results pages: drawn from the study folders kept in docs/results/data/,
never typed; every figure captioned with the command and machine that made it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from conftest import ROOT
from matplotlib.figure import Figure

from vitlab.runs.report import write_report
from vitlab.runs.results_site import build, keep

DATA = ROOT / "docs" / "results" / "data"
META = {"title": "Pure vs hybrid", "command": "python src/train.py experiment=hybrid_vs_pure seed=0,1",
        "machine": "2-core CPU", "date": "2026-12-01",
        "questions": [{"ask": "Does the hybrid lead at 10 %?", "arm": {"model": "vit_hybrid"},
                       "at": {"data.train_fraction": 0.1}}]}


def make_sweep(root: Path) -> Path:
    """2 models x 2 fractions x 2 seeds with the figure data the callbacks write, a checkpoint
    that must not be kept, and a job that never wrote a summary."""
    sweep, num = root / "sweep", 0
    for model in ("vit_micro", "vit_hybrid"):
        for frac in ("0.1", "1.0"):
            for seed in (0, 1):
                job = sweep / str(num)
                (job / ".hydra").mkdir(parents=True)
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
                    [f"model={model}", f"data.train_fraction={frac}", f"seed={seed}"]))
                (job / "checkpoints").mkdir()
                (job / "checkpoints" / "best.ckpt").write_bytes(b"weights")
                lead = 0.05 + 0.002 * seed if (model, frac) == ("vit_hybrid", "0.1") else 0.0
                top1 = 0.5 + 0.1 * seed + float(frac) / 4 + lead
                summary = {"status": "completed", "test": {"test/acc": top1},
                           "parameters": 1000, "images_per_sec": 10.0, "wall_time_s": 1.0, "seed": seed,
                           "convergence": {"converged": True}, "budget": {"equal_steps": True},
                           "attention_distance": [[1.0 + seed, 2.0], [3.0, 4.0 + seed]]}
                if model == "vit_micro":
                    summary["pos_similarity"] = {"grid": [2, 2], "values": [[1.0, 0.5, 0.0, -0.5]] * 4}
                (job / "summary.json").write_text(json.dumps(summary))
                num += 1
    (sweep / "multirun.yaml").write_text("not kept")
    return sweep


def test_a_kept_study_is_trimmed_and_drawn_with_its_provenance(tmp_path):
    root = tmp_path / "results"
    study = keep(make_sweep(tmp_path), root / "data" / "hybrid", META)
    kept = sorted(p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file())
    assert kept == sorted(["meta.yaml", *(f"{n}/{f}" for n in range(8)
                                          for f in (".hydra/overrides.yaml", "summary.json"))])
    assert yaml.safe_load((study / "meta.yaml").read_text()) == META
    build(root)
    report = (study / "report.md").read_text()
    assert report.startswith("# Pure vs hybrid\n")
    for png in ("top1.png", "accuracy_vs_fraction.png", "attention_distance.png", "pos_similarity.png"):
        assert (study / png).stat().st_size > 5000 and f"]({png})" in report
    caption = "*Made by `python src/train.py experiment=hybrid_vs_pure seed=0,1` on 2-core CPU, 2026-12-01.*"
    assert caption not in report  # the command and machine once, at the top, not under every figure
    assert report.count("python src/train.py experiment=hybrid_vs_pure seed=0,1") == 1
    assert report.index("Machine: 2-core CPU") < report.index("## Answer") < report.index("## Ranking")
    assert "| 0.1 | vit_micro | 2/2 | 0.5750 ± 0.0707 |" in report
    # the question meta.yaml names: first on the page, and one row of the index's table
    assert "- **Does the hybrid lead at 10 %?** vit_hybrid − vit_micro at 10 % of the data" in report
    index = (root / "index.md").read_text()
    assert "| question | answer | 95 % interval | study |" in index
    assert ("| Does the hybrid lead at 10 %? | vit_hybrid − vit_micro at 10 % of the data: +5.1 pts | "
            "[+3.8, +6.4], 2 seeds | [hybrid](data/hybrid/report.md) |") in index
    assert "- [Pure vs hybrid](data/hybrid/report.md) (2026-12-01)" in index


def test_figures_are_averaged_over_seeds_and_drawn_only_where_the_data_is(tmp_path):
    sweep = make_sweep(tmp_path)
    for summary in sweep.rglob("summary.json"):  # an older run: no figure data
        data = json.loads(summary.read_text())
        data.pop("attention_distance"), data.pop("pos_similarity", None)
        summary.write_text(json.dumps(data))
    report = write_report(sweep).read_text()
    assert "attention_distance.png" not in report and "pos_similarity.png" not in report
    assert "*Made by" not in report  # no meta.yaml: an ordinary sweep, no caption


def test_every_kept_study_is_drawn_from_its_own_data(tmp_path, monkeypatch):
    """The committed report.md of each kept study is what its data gives today, its meta.yaml
    says how the data was made, and every figure it shows is committed and has data on it
    (a throughput study is drawn by throughput, not as an empty accuracy chart)."""
    drawn = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (
        drawn.append((Path(path).name, fig)), savefig(fig, path, **kw))[1])
    studies = sorted(p for p in DATA.iterdir() if p.is_dir()) if DATA.is_dir() else []
    for study in studies:
        meta = yaml.safe_load((study / "meta.yaml").read_text())
        assert {"title", "command", "machine", "date"} <= set(meta), study.name
        copy = shutil.copytree(study, tmp_path / study.name)
        drawn.clear()
        fresh = write_report(copy).read_text()
        for name, fig in drawn:
            assert fig.axes and all(ax.has_data() for ax in fig.axes), f"{study.name}/{name} is empty"
        assert fresh == (study / "report.md").read_text(), f"{study.name}: run `make results`"
        for png in re.findall(r"\]\((\w+\.png)\)", fresh):
            assert (study / png).is_file(), f"{study.name}/{png}: run `make results` and commit it"
    index = (ROOT / "docs" / "results" / "index.md").read_text()
    assert all(f"(data/{s.name}/report.md)" in index for s in studies), "run `make results`"


def test_the_readme_links_only_to_files_that_exist_and_names_how_its_figure_was_made():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert links and not missing, missing
    for figure in re.findall(r"!\[[^]]*\]\((docs/results/data/[^)]+\.png)\)", readme):
        meta = yaml.safe_load((ROOT / figure).parent.joinpath("meta.yaml").read_text())
        assert f"`{meta['command']}`" in readme, f"the README's caption of {figure}: {meta['command']}"
