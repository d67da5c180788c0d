"""A sweep's runs as a table and plots: `python -m vitlab.runs.report <sweep folder>`.

Reads every job folder's summary.json and .hydra/overrides.yaml (no logger service needed) and
writes report.md, top1.png (a study without accuracies, e.g. a loader benchmark: ranked by
and drawn as images_per_sec.png) and, for data-size studies, accuracy_vs_fraction.png into the sweep
folder; where runs recorded their mean attention distance per layer (summary.json
`attention_distance`), a table and attention_distance.png (one line per configuration; in a
data-size study, at the largest fraction), and for learned positional tables pos_similarity.png.
A meta.yaml in the folder (title, command, machine, date) titles the report and says once, at
the top, how it was made. The page opens with an Answer section (answers.py): every arm against
the study's reference arm, paired by seed, with a 95 % t-interval.
Where runs recorded bias probes (summary.json `probes`),
report_probes.py adds accuracy vs shift / occlusion / shuffle grid per variant, shift consistency
vs training-set size and CKA heatmaps. Runs that differ only in `seed` form one configuration (mean ± std
over seeds); jobs that did not complete are listed, not averaged. `--wandb entity/project` draws
the same report from runs logged to W&B (vitlab's logger stores each run's overrides in its
config). A tuned
study (hydra/sweeper=tuned: tuned.yaml in the folder) gets a table of the values chosen per
configuration, and only its final runs (not the tuning trials) are ranked.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure

from .answers import FRACTION_KEYS, answer_section
from .report_probes import probe_parts

META = "meta.yaml"     # optional: title, command, machine, date of a kept study (docs/results/data/)
TUNING = "tuned.yaml"  # hydra/sweeper=tuned's record: per configuration, its trials and chosen values
METRICS = ("top1", "top5", "parameters", "images_per_sec", "wall_time_s",
           "agreement",     # a distilled student's test predictions equal to its teacher's
           "teacher_acc")   # that teacher's own test accuracy
FIGURE_DATA = ("pos_similarity", "probes")  # in summary.json (from a callback, the probes), drawn as figures
# What a study is ranked by and draws: the first of these its completed runs measured (a loader
# benchmark has throughput, no accuracy). key: (heading, axis label, figure file, [0, 1] scale)
MEASURES = {
    "top1": ("test accuracy", "Test top-1 accuracy", "top1.png", True),
    "images_per_sec": ("throughput, images/s", "Images per second", "images_per_sec.png", False),
}


@dataclass
class Run:
    name: str                           # job folder, or W&B run name
    params: dict[str, str]              # override key -> value, seed included
    status: str                         # completed | failed | diverged | interrupted | running
    metrics: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    figure_data: dict = field(default_factory=dict)  # FIGURE_DATA values found in the summary


def parse_overrides(lines: list[str]) -> dict[str, str]:
    params = {}
    for line in lines:
        key, _, value = str(line).lstrip("+~").partition("=")
        params[key] = value
    return params


def _from_summary(summary: dict) -> dict[str, float | None]:
    test = summary.get("test") or {}
    return {"top1": test.get("test/acc"), "top5": test.get("test/acc_top5"),
            **{k: summary.get(k) for k in METRICS[2:5]}, "agreement": test.get("test/agreement"),
            "teacher_acc": test.get("test/teacher_acc"),
            "attention_distance": _per_layer(summary.get("attention_distance")),
            "seed": summary.get("seed"),  # the Answer pairs runs by it
            "converged": (summary.get("convergence") or {}).get("converged"),
            "equal_steps": (summary.get("budget") or {}).get("equal_steps")}


def _per_layer(distance: list | None) -> list[float] | None:
    """Mean attention distance per layer; a (layer x head) table is averaged over its heads."""
    if not distance:
        return None
    return [statistics.fmean(d) if isinstance(d, list) else d for d in distance]


def load_sweep(folder: str | Path) -> list[Run]:
    """One Run per job folder (a folder with .hydra/overrides.yaml) under `folder`. A job that
    failed before writing summary.json is recorded as failed."""
    runs = []
    for overrides in sorted(Path(folder).rglob(".hydra/overrides.yaml")):
        job = overrides.parent.parent
        name = str(job.relative_to(folder)) if job != Path(folder) else job.name
        params = parse_overrides(yaml.safe_load(overrides.read_text()) or [])
        path = job / "summary.json"
        if not path.is_file():
            runs.append(Run(name, params, "failed", error="no summary.json: failed before training"))
            continue
        summary = json.loads(path.read_text())
        runs.append(Run(name, params, summary.get("status", "unknown"), _from_summary(summary),
                        summary.get("error"), {k: summary[k] for k in FIGURE_DATA if k in summary}))
    return runs


def runs_from_wandb(wandb_runs) -> list[Run]:
    """Runs from wandb.Api().runs(...) objects (name, state, config, summary)."""
    states = {"finished": "completed", "crashed": "failed", "failed": "failed", "killed": "interrupted"}
    out = []
    for r in wandb_runs:
        config, summary = dict(r.config), dict(r.summary)
        status = summary.get("status") or states.get(r.state, r.state)
        metrics = {"top1": summary.get("test/acc"), "top5": summary.get("test/acc_top5"),
                   "parameters": summary.get("parameters", config.get("parameters")),
                   "images_per_sec": summary.get("images_per_sec"),
                   "wall_time_s": summary.get("wall_time_s")}
        out.append(Run(r.name, parse_overrides(config.get("overrides") or []), status, metrics))
    return out


def load_wandb(path: str, group: str | None = None, api=None) -> list[Run]:
    """Runs of the W&B project `entity/project` (optionally one group: a sweep)."""
    if api is None:
        import wandb

        api = wandb.Api()
    return runs_from_wandb(api.runs(path, filters={"group": group} if group else None))


def study_keys(runs: list[Run]) -> tuple[list[str], dict[str, str]]:
    """The override keys that vary across runs (seed excluded), and the common overrides."""
    keys = sorted({k for r in runs for k in r.params})
    values = {k: {r.params.get(k) for r in runs} for k in keys}
    varying = [k for k in keys if k != "seed" and len(values[k]) > 1]
    common = {k: next(iter(v)) for k, v in values.items() if k != "seed" and len(v) == 1}
    return varying, common


def _sort_key(value: str | None):
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _stats(values: list) -> tuple[float, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_lists(lists: list) -> list[float] | None:
    """Element-wise mean of equal-length lists (per-layer values over seeds); None if none."""
    lists = [v for v in lists if v]
    if not lists or len({len(v) for v in lists}) > 1:
        return None
    return [statistics.fmean(column) for column in zip(*lists, strict=True)]


def study_measure(runs: list[Run]) -> str | None:
    """The measure a study ranks and draws by: top-1 where any run has it, else throughput."""
    done = [r for r in runs if r.status == "completed"]
    return next((m for m in MEASURES if any(r.metrics.get(m) is not None for r in done)), None)


def aggregate(runs: list[Run], keys: list[str], measure: str | None = "top1") -> list[dict]:
    """One row per configuration: its key values, completed/total runs and (mean, std) of each
    metric over the completed runs; ranked by `measure`, highest first (those without it last)."""
    groups = defaultdict(list)
    for r in runs:
        groups[tuple(r.params.get(k) for k in keys)].append(r)
    rows = []
    for config, members in groups.items():
        done = [r for r in members if r.status == "completed"]
        row = {"config": dict(zip(keys, config, strict=True)), "completed": len(done),
               "runs": len(members)}
        row.update({m: _stats([r.metrics.get(m) for r in done]) for m in METRICS})
        row["attention_distance"] = _mean_lists([r.metrics.get("attention_distance") for r in done])
        similarity = [r.figure_data["pos_similarity"] for r in done if "pos_similarity" in r.figure_data]
        row["pos_similarity"] = similarity and {"grid": similarity[0]["grid"],
                                                "values": _mean_table([s["values"] for s in similarity])}
        rows.append(row)
    if measure:
        rows.sort(key=lambda row: -row[measure][0] if row[measure] else float("inf"))
    return rows


def _mean_table(tables: list) -> list[list[float]] | None:
    """Element-wise mean of equally shaped nested lists (one per seed); None without any."""
    tables = [t for t in tables if t]
    if not tables:
        return None
    return [[statistics.fmean(vals) for vals in zip(*rows, strict=True)]
            for rows in zip(*tables, strict=True)]


def _short(value) -> str:
    """An override value for a table: tuned floats (0.0012520653814999472) to 3 digits; a key
    a run did not set (a knob its configuration lacks) as a dash."""
    if value is None:
        return "—"
    text = str(value)
    try:
        return f"{float(text):.3g}" if len(text) > 8 else text
    except ValueError:
        return text


def _fmt(stat, digits=4, scale=1.0, unit=""):
    if stat is None:
        return "—"
    mean, std = stat[0] * scale, stat[1] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def markdown_table(rows: list[dict], keys: list[str]) -> str:
    head = ["rank", *keys, "runs", "top-1", "top-5", "parameters", "images/s", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in enumerate(rows, 1):
        params = f"{row['parameters'][0] / 1e6:.3f} M" if row["parameters"] else "—"
        speed = f"{row['images_per_sec'][0]:,.0f}" if row["images_per_sec"] else "—"
        wall = f"{row['wall_time_s'][0]:.0f}" if row["wall_time_s"] else "—"
        cells = [str(i), *(_short(row["config"][k]) for k in keys), f"{row['completed']}/{row['runs']}",
                 _fmt(row["top1"]), _fmt(row["top5"]), params, speed, wall]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fraction_table(rows: list[dict], frac_key: str, series_keys: list[str], metric: str = "top1") -> str:
    """Top-1 (or `metric`) mean ± std: one line per series (e.g. model), one column per data fraction."""
    fracs = sorted({row["config"][frac_key] for row in rows}, key=_sort_key)
    series = defaultdict(dict)
    for row in rows:
        label = ", ".join(f"{k}={row['config'][k]}" for k in series_keys) or "all"
        series[label][row["config"][frac_key]] = _fmt(row[metric], 3)
    lines = ["| series | " + " | ".join(f"{frac_key}={f}" for f in fracs) + " |",
             "|" + "---|" * (len(fracs) + 1)]
    for label in sorted(series):
        lines.append(f"| {label} | " + " | ".join(series[label].get(f, "—") for f in fracs) + " |")
    return "\n".join(lines)


def load_tuning(folder: Path) -> dict | None:
    """tuned.yaml of a tuned study, or None for any other sweep."""
    path = folder / TUNING
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def searched(tuning: dict) -> list[str]:
    """Every tuned parameter: the common search space, then those only some points tuned (a
    variant's own knob, hydra.sweeper.variant_params)."""
    keys = list(tuning.get("search_space") or {})
    for p in tuning["points"]:
        keys += [k for k in p.get("search_space") or {} if k not in keys]
    return keys


def tuned_keys(tuning: dict) -> list[str]:
    """The grid's keys, then the tuned parameters."""
    points = tuning["points"]
    grid = [o.split("=", 1)[0] for o in points[0]["overrides"]] if points else []
    return [*grid, *searched(tuning)]


def tuning_table(tuning: dict, trials: list[Run]) -> str:
    """Per tuned configuration: its trials (completed/total), the best objective value and the
    chosen values (Optuna's best trial); "not tuned" where its config has no such knob."""
    points = tuning["points"]
    keys = [o.split("=", 1)[0] for o in points[0]["overrides"]] if points else []
    params = searched(tuning)
    head = [*keys, "trials", "best val", *params]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        mine = [r for r in trials if r.name.startswith(p["folder"] + "/")]
        done = sum(r.status == "completed" for r in mine)
        best = p.get("best_params") or {}
        value = f"{p['best_value']:.4f}" if p.get("best_value") is not None else "— (no trial completed)"
        space = p.get("search_space") or tuning.get("search_space") or {}
        cells = [*(o.split("=", 1)[1] for o in p["overrides"]), f"{done}/{len(mine)}", value,
                 *(_short(best[k]) if k in best else "—" if k in space else "not tuned" for k in params)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tuning_section(tuning: dict, trials: list[Run]) -> list[str]:
    objective = next((o.split("=", 1)[1] for o in tuning.get("tuning_overrides", [])
                      if o.startswith("objective=")), "the objective")
    common = tuning.get("search_space") or {}
    space = ", ".join(f"`{k}: {v}`" for k, v in common.items())
    own = {k: v for p in tuning["points"] for k, v in (p.get("search_space") or {}).items()
           if k not in common}
    if own:
        space += "; where a configuration has it: " + ", ".join(f"`{k}: {v}`" for k, v in own.items())
    seeds = ", ".join(str(s) for s in tuning.get("seeds") or [] if s is not None) or "the config's"
    return [f"## Tuned settings (Optuna on the validation split: {objective})", "",
            tuning_table(tuning, trials), "",
            f"Search space: {space or '—'}. Each configuration's best setting then trained on "
            f"seeds {seeds} (the ranking below, on the test split).", ""]


def plot_top1(rows: list[dict], keys: list[str], measure: str = "top1") -> Figure | None:
    """Each configuration's measure as a bar, best at the top; None when no row has it."""
    rows = [row for row in rows if row[measure]][::-1]
    if not rows:
        return None
    _, label, _, unit_scale = MEASURES[measure]
    fig = Figure(figsize=(6.5, 1.2 + 0.35 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    labels = [", ".join(_short(row["config"][k]) for k in keys) or "all" for row in rows]
    ax.barh(labels, [r[measure][0] for r in rows], xerr=[r[measure][1] for r in rows], capsize=3,
            color="tab:blue", alpha=0.8)
    ax.set_xlabel(f"{label} (mean ± std over seeds)")
    ax.tick_params(axis="y", labelsize=8)
    if unit_scale:
        lo = min((r[measure][0] - r[measure][1] for r in rows), default=0)
        ax.set_xlim(max(0.0, lo - 0.05), 1.0)
    return fig


def series_label(config: dict, series_keys: list[str]) -> str:
    """A legend entry: the values alone for one series key (vit_hybrid); with several, each
    with its key's last part (teacher=cnn, type=hard), so the reader knows which axis is which."""
    if len(series_keys) == 1:
        return str(config[series_keys[0]])
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={config[k]}" for k in series_keys) or "all"


def plot_fraction(rows: list[dict], frac_key: str, series_keys: list[str], metric: str = "top1",
                  ylabel: str = "Test top-1 accuracy") -> Figure:
    """`metric` vs training-set size with error bars, one line per series (pure vs hybrid)."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot()
    series = defaultdict(list)
    for row in rows:
        if row[metric]:
            series[series_label(row["config"], series_keys)].append(
                (float(row["config"][frac_key]), *row[metric]))
    for label, points in sorted(series.items()):
        x, mean, std = zip(*sorted(points), strict=True)
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    xs = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel(frac_key)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7 if len(series) > 4 else None)
    ax.grid(alpha=0.3)
    return fig


def distance_rows(rows: list[dict], frac_key: str | None) -> list[dict]:
    """The rows whose mean attention distance is drawn: all, or in a data-size study those at
    the largest fraction (one per series)."""
    rows = [row for row in rows if row.get("attention_distance")]
    if frac_key and rows:
        largest = max((row["config"][frac_key] for row in rows), key=_sort_key)
        rows = [row for row in rows if row["config"][frac_key] == largest]
    return rows


def _label(row: dict, keys: list[str]) -> str:
    return ", ".join(_short(row["config"][k]) for k in keys) or "all"


def distance_table(rows: list[dict], keys: list[str]) -> str:
    depth = max(len(row["attention_distance"]) for row in rows)
    lines = ["| configuration | " + " | ".join(f"layer {i + 1}" for i in range(depth)) + " |",
             "|" + "---|" * (depth + 1)]
    for row in sorted(rows, key=lambda r: _label(r, keys)):
        d = row["attention_distance"]
        cells = [f"{v:.2f}" for v in d] + ["—"] * (depth - len(d))
        lines.append(f"| {_label(row, keys)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_distance(rows: list[dict], keys: list[str]) -> Figure:
    """Mean attention distance (pixels, mean over heads and seeds) against depth, one line per
    configuration: does a local bias make the early layers attend locally?"""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.add_subplot()
    for row in sorted(rows, key=lambda r: _label(r, keys)):
        d = row["attention_distance"]
        ax.plot(range(1, len(d) + 1), d, marker="o", label=_label(row, keys))
    ax.set_xlabel("Network depth (layer)")
    ax.set_ylabel("Mean attention distance (pixels)")
    ax.set_xticks(range(1, max(len(r["attention_distance"]) for r in rows) + 1))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def plot_pos_similarity(rows: list[dict], keys: list[str]) -> Figure | None:
    """The learned positional tables' cosine similarity (ViT paper, Fig. 7 centre), one mosaic
    per configuration that has one, averaged over seeds."""
    from ..analysis.pos_similarity import draw_similarity

    rows = [row for row in rows if row.get("pos_similarity")]
    if not rows:
        return None
    fig = Figure(figsize=(3.2 * len(rows) + 0.8, 3.4), layout="constrained")
    axes = fig.subplots(1, len(rows), squeeze=False)[0]
    for ax, row in zip(axes, rows, strict=True):
        image = draw_similarity(ax, row["pos_similarity"]["values"], tuple(row["pos_similarity"]["grid"]))
        ax.set_title(_label(row, keys), fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="Cosine similarity")
    return fig


def load_meta(folder: Path) -> dict:
    """meta.yaml of a kept study (title, command, machine, date), or {}."""
    path = folder / META
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def one_line(command: str) -> str:
    """meta.yaml's command on one line: each line of a multi-command block its own, after `; `."""
    lines = (" ".join(line.split()) for line in str(command).strip().splitlines())
    return "; ".join(line for line in lines if line)


def provenance(meta: dict) -> str:
    """The caption under each figure: the command that made the data, on what machine."""
    if not meta.get("command"):
        return ""
    where = ", ".join(str(meta[k]) for k in ("machine", "date") if meta.get(k))
    return f"*Made by `{one_line(meta['command'])}`" + (f" on {where}" if where else "") + ".*"


def _figure(parts: list[str], fig: Figure | None, folder: Path, name: str, alt: str, caption: str) -> None:
    if fig is None:  # nothing to draw: no figure, rather than an empty one
        return
    fig.savefig(folder / name, dpi=120, metadata={"Software": None})  # same data, same bytes
    parts += [f"![{alt}]({name})", ""] + ([caption, ""] if caption else [])


def write_report(folder: str | Path, runs: list[Run] | None = None, title: str | None = None) -> Path:
    """report.md and PNG plots in `folder`; returns the report's path."""
    folder = Path(folder)
    meta = load_meta(folder)
    title = title or meta.get("title")
    caption = ""  # the command and machine are stated once, at the top of the page
    runs = load_sweep(folder) if runs is None else runs
    if not runs:
        raise SystemExit(f"error: no runs under {folder} (expected <job>/.hydra/overrides.yaml)")
    tuning = load_tuning(folder)
    folders = tuple(p["folder"] + "/" for p in tuning["points"]) if tuning else ()
    trials = [r for r in runs if folders and r.name.startswith(folders)]
    ranked = [r for r in runs if r not in trials]  # a tuned study ranks its final runs only
    keys, common = study_keys(ranked)
    if tuning:  # each configuration with its chosen values, even where one run alone
        keys = [*tuned_keys(tuning), *(k for k in keys if k not in tuned_keys(tuning))]
        common = {k: v for k, v in common.items() if k not in keys}
    measure = study_measure(ranked)
    rows = aggregate(ranked, keys, measure)
    done = sum(r.status == "completed" for r in runs)
    count = f"{len(runs)} runs" + (f" ({len(trials)} tuning trials, {len(ranked)} final runs)"
                                   if tuning else "")
    parts = [f"# {title or 'Study report: ' + folder.name}", ""]
    if meta.get("command"):
        parts += [f"Command: `{one_line(meta['command'])}`  ", "Machine: "
                  + ", ".join(str(meta[k]) for k in ("machine", "date") if meta.get(k)), ""]
        if meta.get("note"):
            parts += [str(meta["note"]).strip(), ""]
    answer_keys = [k for k in keys if not tuning or k not in searched(tuning)]  # tuned lr: per arm
    parts += answer_section(ranked, answer_keys, next((k for k in FRACTION_KEYS if k in keys), None),
                            meta.get("reference"), meta.get("questions"))
    parts += [f"{count}, {done} completed. Common overrides: "
              + (", ".join(f"`{k}={v}`" for k, v in common.items()) or "none") + ".", ""]
    if tuning:
        parts += tuning_section(tuning, trials)
    heading = MEASURES[measure][0] if measure else "no run measured accuracy or throughput"
    parts += [f"## Ranking ({heading}, mean ± std over seeds)", "", markdown_table(rows, keys), ""]
    if measure:
        _, _, name, _ = MEASURES[measure]
        alt = {"top1": "top-1"}.get(measure, measure)
        _figure(parts, plot_top1(rows, keys, measure), folder, name, alt, caption)
    frac_key = next((k for k in FRACTION_KEYS if k in keys), None)
    if frac_key and any(row["top1"] for row in rows):
        series_keys = [k for k in keys if k != frac_key]
        parts += ["## Accuracy vs training-set size (top-1, mean ± std)", "",
                  fraction_table(rows, frac_key, series_keys), ""]
        _figure(parts, plot_fraction(rows, frac_key, series_keys), folder, "accuracy_vs_fraction.png",
                "accuracy vs fraction", caption)
        if any(row["agreement"] for row in rows):  # a distillation study (DeiT's Table 4)
            parts += ["## Student-teacher agreement vs training-set size (test, mean ± std)", "",
                      fraction_table(rows, frac_key, series_keys, "agreement"), ""]
            _figure(parts, plot_fraction(rows, frac_key, series_keys, "agreement",
                                         "Test agreement with the teacher"),
                    folder, "agreement_vs_fraction.png", "agreement vs fraction", caption)
            teacher_keys = [k for k in series_keys if "teacher" in k]  # one line per teacher
            parts += ["## The teachers' own test accuracy", "",
                      fraction_table(rows, frac_key, teacher_keys, "teacher_acc"), ""]
    drawn = distance_rows(rows, frac_key)
    if drawn:
        series = [k for k in keys if k != frac_key]
        where = f" at {frac_key}={drawn[0]['config'][frac_key]}" if frac_key else ""
        parts += [f"## Mean attention distance per layer (pixels, mean over heads and seeds{where})", "",
                  distance_table(drawn, series), ""]
        _figure(parts, plot_distance(drawn, series), folder, "attention_distance.png", "attention distance",
                caption)
    similarity = plot_pos_similarity(rows, keys)
    if similarity:
        parts += ["## Positional-embedding similarity (learned tables, mean over seeds)", ""]
        _figure(parts, similarity, folder, "pos_similarity.png", "positional-embedding similarity", caption)
    for part in probe_parts(ranked, keys, frac_key):  # the bias probes (report_probes.py)
        if isinstance(part, str):
            parts.append(part)
        else:
            fig, name, alt = part
            _figure(parts, fig, folder, name, alt, caption)
    failed = [r for r in runs if r.status != "completed"]
    parts += ["## Runs that did not complete", ""]
    if failed:
        parts += ["| run | overrides | status | error |", "|---|---|---|---|"]
        for r in failed:
            error = (r.error or "").replace("\n", " ").replace("|", "/")[:200]
            overrides = ", ".join(f"{k}={v}" for k, v in r.params.items())
            parts.append(f"| {r.name} | {overrides} | {r.status} | {error} |")
    else:
        parts.append("None.")
    path = folder / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitlab.runs.report", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="sweep folder (report written there); with --wandb, the output folder")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead")
    parser.add_argument("--group", help="with --wandb: only this group (one sweep)")
    args = parser.parse_args(argv)
    runs = None
    if args.wandb:
        Path(args.folder).mkdir(parents=True, exist_ok=True)
        runs = load_wandb(args.wandb, args.group)
    path = write_report(args.folder, runs)
    print(path.read_text())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
