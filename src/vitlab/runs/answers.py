"""The Answer section of a study report: each arm against the study's reference arm, paired by seed.

For arm A and reference R run with the same seeds, d_i = top1(A, seed i) - top1(R, seed i); the
answer is mean(d) with a 95 % Student-t interval, mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n), in
points of test accuracy. An interval that contains 0 reads "no detectable difference"; one seed
gives no interval; an arm whose runs were still improving at the end of training (summary.json
`convergence.converged` false) is marked and not answered.

A kept study names the questions it exists for in its meta.yaml (`questions:`), each one paired
comparison, answered first on its page and gathered into the results index:

    - ask: Does the small CNN lead the pure ViT at small data?
      arm: {bias: cnn_small}              # against the study's reference arm (or `reference:`)
      at: {data.train_fraction: 0.1}      # the other keys held fixed
    - ask: Is the hybrid's advantage largest at small data?
      arm: {model: vit_hybrid}
      at: {data.train_fraction: 0.1}
      minus_at: {data.train_fraction: 1.0}  # a difference of differences, paired by seed
    - ask: Which positional variant degrades least at 48 px?
      best: model/pos_embed               # the arm of highest mean against the runner-up
      measure: probes.resolution.48 - probes.resolution.32   # numbers in summary.json (default: top-1)
    - ask: Does shuffling the patches cost the RNN accuracy?
      arm: {bias: rnn}
      reference: none                     # the arm's own measure, no second arm
      measure: probes.shuffle.4 - probes.shuffle.1
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

# The study's reference arm: the pure ViT from scratch (a `model` key: its pure ViT preset).
# A kept study's meta.yaml may name its own (`reference: {key: value}`).
REFERENCES = {"bias": "pure", "model/pos_embed": "learned_1d", "module.distill.type": "none",
              "transfer.init": "scratch", "ssl.init": "scratch"}
INTERVAL = "95 % Student-t interval over seeds (t quantile from scipy.stats)"
FRACTION_KEYS = ("data.train_fraction", "data.samples_per_class")  # a data-size axis (report.py's)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: 4.303 for df = 2, 2.776 for df = 4."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@dataclass(frozen=True)
class Paired:
    mean: float               # mean paired difference, points
    low: float | None         # 95 % interval, points; None with one seed
    high: float | None
    seeds: int

    @property
    def detected(self) -> bool:
        return self.low is not None and not self.low <= 0 <= self.high


def paired_interval(diffs: list[float]) -> Paired:
    """Mean of the per-seed differences with its 95 % t-interval (none for a single seed)."""
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return Paired(mean, None, None, n)
    half = t_quantile(n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n)


def reference_arm(values: dict[str, set], given: dict | None = None) -> dict[str, str]:
    """key -> reference value, for the varying keys that have one in this study."""
    refs = {**REFERENCES, **(given or {})}
    arm = {k: str(refs[k]) for k in values if k in refs and str(refs[k]) in values[k]}
    if "model" in values and "model" not in arm:  # a model axis: its pure ViT (no CNN stem)
        pure = sorted(v for v in values["model"] if v and v.startswith("vit") and "hybrid" not in v)
        if pure:
            arm["model"] = pure[0]
    return arm


def _where(config: dict, frac_key: str | None) -> str:
    parts = []
    for k, v in config.items():
        if k == "data.train_fraction":
            parts.append(f"{float(v) * 100:g} % of the data")
        elif k == frac_key:
            parts.append(f"{v} per class")
        else:
            parts.append(f"{k.rsplit('.', 1)[-1]}={v}")
    return (" at " + ", ".join(parts)) if parts else ""


def _arm_label(keys: list[str], values: tuple) -> str:
    """The value alone on one axis (hybrid); on several, each with its key (init=scratch, model=...)."""
    if len(keys) == 1:
        return str(values[0])
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(keys, values, strict=True))


def _pts(x: float) -> str:
    return f"{x:+.1f}".replace("-", "−")


def _line(label: str, p: Paired) -> str:
    if p.low is None:
        return f"- {label}: {_pts(p.mean)} pts, 1 seed: no interval possible"
    text = f"- {label}: {_pts(p.mean)} pts [{_pts(p.low)}, {_pts(p.high)}], {p.seeds} seeds"
    return text + ("" if p.detected else ": no detectable difference")


def answer_lines(runs: list, keys: list[str], frac_key: str | None, given: dict | None = None) -> list[str]:
    """One line per arm (and fraction, and any other axis) against the reference arm."""
    done = [r for r in runs if r.status == "completed" and r.metrics.get("top1") is not None]
    values = {k: {r.params.get(k) for r in done} for k in keys}
    arm = reference_arm(values, given)
    if not arm:
        return [f"No reference arm in this study (none of {', '.join(sorted(REFERENCES))} or a "
                "pure ViT `model` varies): nothing to pair against."]
    arm_keys = list(arm)
    group_keys = [k for k in keys if k not in arm]
    cells = defaultdict(dict)  # (group values, arm values) -> seed -> run
    for r in done:
        seed = r.params.get("seed", r.metrics.get("seed"))
        cells[tuple(r.params.get(k) for k in group_keys), tuple(r.params.get(k) for k in arm_keys)][seed] = r
    ref = tuple(arm[k] for k in arm_keys)
    ref_label = _arm_label(arm_keys, ref)
    lines = []
    for (group, arm_values), by_seed in sorted(cells.items(), key=lambda c: str(c[0])):
        if arm_values == ref or (group, ref) not in cells:
            continue
        reference = cells[group, ref]
        seeds = sorted(set(by_seed) & set(reference), key=str)
        if not seeds:
            continue
        label = f"{_arm_label(arm_keys, arm_values)} − {ref_label}" \
                f"{_where(dict(zip(group_keys, group, strict=True)), frac_key)}"
        improving = sorted({name for name, side in ((_arm_label(arm_keys, arm_values), by_seed),
                                                    (ref_label, reference))
                            for s in seeds if side[s].metrics.get("converged") is False})
        if improving:
            lines.append(f"- {label}: not stated, {' and '.join(improving)} still improving at the "
                         "end of training")
            continue
        diffs = [100 * (by_seed[s].metrics["top1"] - reference[s].metrics["top1"]) for s in seeds]
        lines.append(_line(label, paired_interval(diffs)))
    return lines or ["No arm shares a seed with the reference arm: nothing to pair."]


def measured(run, measure: str = "top1") -> float | None:
    """Test top-1, or the number at a dotted path of the run's summary figure data
    (`probes.shuffle.4`: accuracy with the image cut into a 4 x 4 grid of blocks, shuffled), or
    one such number minus another (`probes.resolution.48 - probes.resolution.32`: the loss off the
    training resolution)."""
    if " - " in measure:
        a, b = (measured(run, part.strip()) for part in measure.split(" - ", 1))
        return None if a is None or b is None else a - b
    if measure == "top1":
        return run.metrics.get("top1")
    node = run.figure_data
    for part in measure.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) else None


def _same(value, wanted) -> bool:
    if value is None:
        return False
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == str(wanted)


def _by_seed(runs: list, where: dict, measure: str) -> dict:
    """seed -> run, for the completed runs matching every key of `where` that measured `measure`."""
    return {r.params.get("seed", r.metrics.get("seed")): r for r in runs
            if r.status == "completed" and measured(r, measure) is not None
            and all(_same(r.params.get(k), v) for k, v in where.items())}


@dataclass(frozen=True)
class Answered:
    """One question of a study, answered from its runs (or not, and why)."""
    ask: str
    label: str                  # the comparison: "cnn_small − pure at 10 % of the data"
    paired: Paired | None       # None: not stated
    why: str = ""               # why not stated
    caveat: str = ""            # what the runs could not check (older runs: no convergence flag)

    @property
    def verdict(self) -> str:
        if self.paired is None:
            return f"not stated: {self.why}"
        if self.paired.low is None:
            return f"{_pts(self.paired.mean)} pts, 1 seed: no interval possible"
        text = f"{_pts(self.paired.mean)} pts" + ("" if self.paired.detected else
                                                  ", no detectable difference")
        return text + (f" ({self.caveat})" if self.caveat else "")

    @property
    def interval(self) -> str:
        p = self.paired
        if p is None or p.low is None:
            return "—"
        return f"[{_pts(p.low)}, {_pts(p.high)}], {p.seeds} seeds"


def answer_question(runs: list, question: dict, given: dict | None = None) -> Answered:
    """The paired comparison a meta.yaml question names (module docstring)."""
    ask, measure = str(question["ask"]), str(question.get("measure", "top1"))
    at = dict(question.get("at") or {})
    if "best" in question:  # the arm of highest mean against the runner-up, at `at`
        key = str(question["best"])
        values = {r.params.get(key) for r in runs if r.params.get(key) is not None}
        # in name order, so that equal means rank by name (a set's order changes with the hash seed)
        means = {v: statistics.fmean(measured(r, measure) for r in side.values())
                 for v in sorted(values, key=str) if (side := _by_seed(runs, {**at, key: v}, measure))}
        if len(means) < 2:
            return Answered(ask, key, None, f"fewer than two arms of {key} measured {measure}")
        first, second = sorted(means, key=means.get, reverse=True)[:2]
        arm, reference = {key: first}, {key: second}
    elif question.get("reference") == "none":  # one arm's own measure, over its seeds
        arm, reference = dict(question["arm"]), None
    else:
        arm = dict(question["arm"])
        reference = dict(question.get("reference") or {})
        if not reference:
            values = {k: {r.params.get(k) for r in runs} for k in arm}
            reference = reference_arm(values, given)
        if set(reference) != set(arm):
            return Answered(ask, str(arm), None, "no reference arm for " + ", ".join(arm))
    compared = [arm] if reference is None else [arm, reference]
    label = " − ".join(_arm_label(list(side), tuple(side.values())) for side in compared)
    label += _where(at, None)
    if measure != "top1":
        label += f" ({measure})"
    sides = [_by_seed(runs, {**side, **at}, measure) for side in compared]
    minus = question.get("minus_at")
    if minus:
        label += f", minus the same{_where(dict(minus), None)}"
        sides += [_by_seed(runs, {**side, **minus}, measure) for side in compared]
    seeds = sorted(set.intersection(*(set(side) for side in sides)), key=str)
    if not seeds:
        return Answered(ask, label, None, "no seed ran every arm it compares")
    improving = sorted({r.name for side in sides for s in seeds
                        if (r := side[s]).metrics.get("converged") is False})
    if improving:
        return Answered(ask, label, None, f"still improving at the end of training ({len(improving)} "
                        f"of {len(sides) * len(seeds)} runs: {', '.join(improving[:4])})")
    used = [side[s] for side in sides for s in seeds]
    caveats = []
    if any(r.metrics.get("converged") is None for r in used):
        caveats.append("convergence not recorded")
    if any(k in FRACTION_KEYS for k in {**at, **(minus or {})}) and \
            not all(r.metrics.get("equal_steps") for r in used):
        caveats.append("equal epochs, not equal steps")
    diffs = []
    for s in seeds:
        v = [measured(side[s], measure) for side in sides]
        if reference is None:  # the arm alone: its measure, at `at` minus at `minus_at`
            diffs.append(100 * (v[0] - (v[1] if minus else 0.0)))
        else:
            diffs.append(100 * ((v[0] - v[1]) - (v[2] - v[3] if minus else 0.0)))
    return Answered(ask, label, paired_interval(diffs), caveat="; ".join(caveats))


def question_lines(answers: list[Answered]) -> list[str]:
    return [f"- **{a.ask}** {a.label}: {a.verdict}" + (f" {a.interval}" if a.interval != "—" else "")
            for a in answers]


def answer_section(runs: list, keys: list[str], frac_key: str | None, given: dict | None = None,
                   questions: list | None = None) -> list[str]:
    """The report's `## Answer` block: how the lines are made, then the lines."""
    if not any(r.metrics.get("top1") is not None for r in runs if r.status == "completed"):
        return []  # no accuracy (a throughput benchmark): no question of this kind
    lines = answer_lines(runs, keys, frac_key, given)
    flags = [r.metrics.get("converged") for r in runs if r.status == "completed"]
    note = ("Convergence was not recorded by these runs (older than the flag): no arm could be "
            "checked for still improving." if all(f is None for f in flags) else
            "Arms still improving (validation gain over the last quarter of training at or above "
            "the threshold, or above the validation set's 95 % binomial noise where that is larger; "
            "summary.json `convergence`) are marked and not answered.")
    equal = [r.metrics.get("equal_steps") for r in runs if r.status == "completed"]
    if frac_key and all(equal):
        note += " Every data size trained the same optimiser steps (study.equal_steps)."
    elif frac_key and not any(equal):
        note += (" These runs trained equal epochs at every data size (fewer optimiser steps on less "
                 "data): a small-data difference may be one of steps, not of data.")
    asked = question_lines([answer_question(runs, q, given) for q in questions or []])
    return ["## Answer", "",
            f"Each arm minus the reference arm in test top-1, paired by seed (points): mean and "
            f"{INTERVAL}; an interval containing 0 is no detectable difference. {note}", "",
            *(["The questions this study exists for:", "", *asked, "", "Every arm:", ""] if asked else []),
            *lines, ""]
