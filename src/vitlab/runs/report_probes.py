"""The bias probes of a study's runs, drawn from their summary.json `probes` alone (report.py
calls this): accuracy against shift (zero-padded and circular), against the fraction occluded,
against the shuffle grid and against the image size, one curve per variant (in a data-size study one panel per
training-set fraction); shift consistency against training-set size; each variant's layer x layer
CKA heatmap at its largest fraction (and cross-run CKA where present). Values are averaged over seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from matplotlib.figure import Figure

# summary key: (heading, x-axis label, figure file)
CURVES = {
    "shift": ("Accuracy vs shift (zero-padded)", "Shift (pixels, mean of 4 directions)", "probe_shift.png"),
    "shift_circular": ("Accuracy vs shift (circular)", "Circular shift (pixels, mean of 4 directions)",
                       "probe_shift_circular.png"),
    "occlusion": ("Accuracy vs occlusion", "Fraction of cells zeroed", "probe_occlusion.png"),
    "shuffle": ("Accuracy vs patch shuffle", "Shuffle grid (g x g cells permuted; 1 = unshuffled)",
                "probe_shuffle.png"),
    "resolution": ("Accuracy vs resolution", "Image side (pixels; the training size included)",
                   "probe_resolution.png"),
}


def _label(params: dict, keys: list[str]) -> str:
    """A variant by the values it sets (a key only some runs set, e.g. model/pos_embed, is left
    out where unset)."""
    return ", ".join(str(params[k]) for k in keys if k in params) or "all"


def _mean_curves(probe_sets: list[dict], name: str) -> dict[float, float] | None:
    """{setting: mean accuracy over seeds} of one probe, over the runs that measured it."""
    values = defaultdict(list)
    for probes in probe_sets:
        for setting, acc in (probes.get(name) or {}).items():
            values[float(setting)].append(acc)
    return {s: statistics.fmean(v) for s, v in sorted(values.items())} or None


def series(runs: list, keys: list[str], frac_key: str | None) -> dict[float | None, dict[str, list[dict]]]:
    """{fraction (None outside a data-size study): {variant label: its completed runs' `probes`}}."""
    out = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.status == "completed" and r.figure_data.get("probes"):
            fraction = float(r.params[frac_key]) if frac_key and frac_key in r.params else None
            label = _label(r.params, [k for k in keys if k != frac_key])
            out[fraction][label].append(r.figure_data["probes"])
    return {f: dict(sorted(v.items())) for f, v in sorted(out.items(), key=lambda kv: kv[0] or 0.0)}


def _row(label: str, fraction: float | None, frac_key: str | None) -> str:
    return f"{label} @ {frac_key.rsplit('.', 1)[-1]}={fraction:g}" if fraction is not None else label


def curve_table(curves: dict[str, dict[float, float]]) -> str:
    settings = sorted({s for c in curves.values() for s in c})
    lines = ["| variant | " + " | ".join(f"{s:g}" for s in settings) + " |",
             "|" + "---|" * (len(settings) + 1)]
    for label, curve in curves.items():
        cells = (f"{curve[s]:.3f}" if s in curve else "—" for s in settings)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(panels: dict, xlabel: str, log_x: bool = False,
                ylabel: str = "Test top-1 accuracy (probe subset)", titles: dict | None = None) -> Figure:
    """One axes per panel ({title: {label: {x: y}}}), one line per variant; the same y range."""
    fig = Figure(figsize=(4.2 * len(panels) + 1.2, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    labels = sorted({label for curves in panels.values() for label in curves})
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}  # a variant alike in every panel
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        for label, curve in curves.items():
            ax.plot(list(curve), list(curve.values()), marker="o", label=label, color=colour[label])
        if log_x:
            ax.set_xscale("log", base=2)
        xs = sorted({x for c in curves.values() for x in c})
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_title((titles or {}).get(title, title or ""), fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    return fig


def consistency_by_fraction(runs: list, keys: list[str], frac_key: str) -> dict[str, dict[float, float]]:
    """{variant: {fraction: mean shift consistency}}: does more data make a model more invariant?"""
    values = defaultdict(lambda: defaultdict(list))
    for r in runs:
        value = (r.figure_data.get("probes") or {}).get("shift_consistency")
        if r.status == "completed" and value is not None and frac_key in r.params:
            label = _label(r.params, [k for k in keys if k != frac_key])
            values[label][float(r.params[frac_key])].append(value)
    return {label: {f: statistics.fmean(v) for f, v in sorted(by.items())}
            for label, by in sorted(values.items())}


def plot_cka(matrices: dict[str, dict], rows_key: str = "layers", cols_key: str = "layers") -> Figure:
    """One CKA heatmap per variant (the first seed's layers; matrices averaged over seeds)."""
    fig = Figure(figsize=(3.3 * len(matrices) + 0.8, 3.6), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    image = None
    for ax, (label, cka) in zip(axes, matrices.items(), strict=True):
        image = ax.imshow(cka["matrix"], vmin=0, vmax=1, cmap="magma", origin="lower")
        ax.set_title(label, fontsize=8)
        between = cols_key == "other_layers"  # rows: this run's layers; columns: cka_against's
        ax.set_xlabel(f"{'other run' if between else 'layer'} (input side first)", fontsize=7)
        ax.set_ylabel(f"{'this run' if between else 'layer'} (input side first)", fontsize=7)
        ax.set_xticks(range(len(cka[cols_key])), [_short(n) for n in cka[cols_key]], rotation=90, fontsize=6)
        ax.set_yticks(range(len(cka[rows_key])), [_short(n) for n in cka[rows_key]], fontsize=6)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="Linear CKA")
    return fig


def _short(layer: str) -> str:
    return layer.removeprefix("embed.backbone.").replace("blocks.", "b").replace("layers.", "l")


def mean_cka(probe_sets: list[dict], key: str) -> dict | None:
    """The CKA entry `key` averaged over the seeds whose layers match the first's."""
    found = [p[key] for p in probe_sets if p.get(key)]
    if not found:
        return None
    same = [c for c in found if c["layers"] == found[0]["layers"]
            and c.get("other_layers") == found[0].get("other_layers")]
    matrix = [[statistics.fmean(vals) for vals in zip(*rows, strict=True)]
              for rows in zip(*(c["matrix"] for c in same), strict=True)]
    return {**found[0], "matrix": matrix}


def probe_parts(runs: list, keys: list[str], frac_key: str | None) -> list:
    """The report's probe sections: markdown lines, and (Figure, file name, alt text) to draw;
    empty when no run recorded probes."""
    by_fraction = series(runs, keys, frac_key)
    if not by_fraction:
        return []
    titles = {f: f"{frac_key}={f:g}" for f in by_fraction if f is not None}
    parts: list = []
    for name, (heading, xlabel, file) in CURVES.items():
        panels = {f: {label: c for label, sets in variants.items() if (c := _mean_curves(sets, name))}
                  for f, variants in by_fraction.items()}
        panels = {f: curves for f, curves in panels.items() if curves}
        if panels:
            rows = {_row(label, f, frac_key): c
                    for f, curves in panels.items() for label, c in curves.items()}
            fig = plot_curves(panels, xlabel, log_x=name == "shuffle", titles=titles)
            parts += [f"## {heading} (bias probe, mean over seeds)", "", curve_table(rows), "",
                      (fig, file, heading.lower())]
    if frac_key:
        consistency = consistency_by_fraction(runs, keys, frac_key)
        if consistency:
            parts += ["## Shift consistency vs training-set size (Zhang 2019: two random shifts, same "
                      "top-1)", "", curve_table(consistency), "",
                      (plot_curves({None: consistency}, frac_key, log_x=True, ylabel="Shift consistency"),
                       "probe_consistency.png", "shift consistency vs fraction")]
    skipped = sorted({f"{_row(label, f, frac_key)}: {probe} ({why})" for f, variants in by_fraction.items()
                      for label, sets in variants.items() for p in sets
                      for probe, why in (p.get("skipped") or {}).items()})
    if skipped:
        parts += ["Probes skipped: " + "; ".join(skipped) + ".", ""]
    largest = {}  # each variant at its largest fraction
    for f, variants in by_fraction.items():
        for label, sets in variants.items():
            largest[label] = (f, sets)
    for key, heading, file in (("cka", "Layer similarity (linear CKA, layer x layer)", "probe_cka.png"),
                               ("cka_between", "Layer similarity between runs (linear CKA)",
                                "probe_cka_between.png")):
        matrices = {_row(label, f, frac_key): m for label, (f, sets) in sorted(largest.items())
                    if (m := mean_cka(sets, key))}
        if matrices:
            cols = "other_layers" if key == "cka_between" else "layers"
            where = ", each variant at its largest fraction" if frac_key else ""
            parts += [f"## {heading}{where}", "", (plot_cka(matrices, cols_key=cols), file, heading.lower())]
    return parts
