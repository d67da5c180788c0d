"""The documentation's results pages, drawn from study folders kept in the repository.

`python -m vitlab.runs.results_site docs/results` (what `make results` runs) reports every folder of
`docs/results/data/<study>/` with `vitlab.runs.report` (report.md and its figures, written in that
folder) and writes `docs/results/index.md`: one table of every study's questions (its meta.yaml
`questions:`, vitlab/answers.py), each with its answer, interval and study, then the list of studies.
Nothing is typed by hand: a kept study is its sweep trimmed to what the report reads
(`*/.hydra/overrides.yaml`, `*/summary.json`, `tuned.yaml`) and a `meta.yaml` saying how it was
made (`title`, `command`, `machine`, `date`, optional `note`). Keep a sweep with
`python -m vitlab.runs.results_site docs/results --keep <sweep folder> --study <name> --title ...
--command ... --machine ...`.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import date
from pathlib import Path

import yaml

from .answers import INTERVAL, answer_question
from .report import META, TUNING, load_meta, load_sweep, write_report

KEPT = (".hydra/overrides.yaml", "summary.json")  # per job: all the report reads


def studies(root: Path) -> list[Path]:
    """The study folders under root/data, in name order."""
    data = root / "data"
    return sorted(p for p in data.iterdir() if p.is_dir()) if data.is_dir() else []


def keep(sweep: Path, dest: Path, meta: dict) -> Path:
    """Copy a sweep folder into dest, trimmed to what the report reads, with its meta.yaml."""
    for name in KEPT:
        for src in sweep.rglob(name):
            if name == KEPT[1] and not (src.parent / KEPT[0]).is_file():
                continue  # a summary outside a job folder
            target = dest / src.relative_to(sweep)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    if (sweep / TUNING).is_file():
        shutil.copyfile(sweep / TUNING, dest / TUNING)
    meta = {k: v for k, v in {**meta, "date": meta.get("date") or date.today().isoformat()}.items() if v}
    (dest / META).write_text(yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100))
    return dest


def question_rows(root: Path, folders: list[Path]) -> list[str]:
    """The index's table: one row per question a kept study names, answered from its runs."""
    rows = []
    for folder in folders:
        meta = load_meta(folder)
        if not meta.get("questions"):
            continue
        runs, rel = load_sweep(folder), folder.relative_to(root).as_posix()
        for question in meta["questions"]:
            a = answer_question(runs, question, meta.get("reference"))
            cell = f"{a.label}: {a.verdict}".replace("|", "/")
            rows.append(f"| {a.ask} | {cell} | {a.interval} | [{folder.name}]({rel}/report.md) |")
    return rows


def index_page(root: Path, folders: list[Path]) -> str:
    parts = ["# Results", "",
             "Every study below was run with the command it names, on the machine it names; its "
             "runs' summaries are kept in `docs/results/data/<study>/`, and the tables and figures "
             "are drawn from them by `make results` (`python -m vitlab.runs.results_site docs/results`). "
             "Nothing here is typed by hand. To add a study, see "
             "[Studies and reports](../guides/studies.md#keeping-a-study-in-the-documentation).", ""]
    if not folders:
        return "\n".join(parts + ["No study is kept yet.", ""])
    rows = question_rows(root, folders)
    if rows:
        parts += ["## The questions and their answers", "",
                  f"Each answer is a paired difference by seed, in points, with its {INTERVAL}. An arm "
                  "still improving at the end of training is not answered. Each study's page says "
                  "how it was run and on what machine.", "",
                  "| question | answer | 95 % interval | study |", "|---|---|---|---|", *rows, ""]
    parts += ["## Every kept study", ""]
    for folder in folders:
        meta = load_meta(folder)
        rel = folder.relative_to(root).as_posix()
        when = f" ({meta['date']})" if meta.get("date") else ""
        parts.append(f"- [{meta.get('title') or folder.name}]({rel}/report.md){when}")
    return "\n".join(parts + [""])


def build(root: str | Path) -> list[Path]:
    """Report every kept study and write the index; returns the reports' paths."""
    root = Path(root)
    folders = studies(root)
    reports = [write_report(folder) for folder in folders]
    (root / "index.md").write_text(index_page(root, folders))
    return reports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlab.runs.results_site",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("root", help="the results folder of the docs, e.g. docs/results")
    parser.add_argument("--keep", metavar="SWEEP", type=Path, help="first copy this sweep, trimmed")
    parser.add_argument("--study", help="with --keep: the study's folder name under <root>/data/")
    for key in ("title", "command", "machine", "note"):
        parser.add_argument(f"--{key}", help=f"with --keep: meta.yaml's {key}")
    args = parser.parse_args(argv)
    if args.keep:
        if not args.study or not args.command or not args.machine:
            parser.error("--keep needs --study, --command and --machine (how the data was made)")
        meta = {"title": args.title or args.study, "command": args.command, "machine": args.machine,
                "note": args.note}
        keep(args.keep, Path(args.root) / "data" / args.study, meta)
    for path in build(args.root):
        print(f"report: {path}")
    print(f"index: {Path(args.root) / 'index.md'}")


if __name__ == "__main__":
    main()
