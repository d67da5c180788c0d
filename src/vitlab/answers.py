"""The Answer section of a study report: each arm against the study's reference arm, paired by seed.

For arm A and reference R run with the same seeds, d_i = top1(A, seed i) - top1(R, seed i); the
answer is mean(d) with a 95 % Student-t interval, mean(d) +- t_{0.975, n-1} sd(d) / sqrt(n), in
points of test accuracy. An interval that contains 0 reads "no detectable difference"; one seed
gives no interval; an arm whose runs were still improving at the end of training (summary.json
`convergence.converged` false) is marked and not answered.
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


def answer_section(runs: list, keys: list[str], frac_key: str | None, given: dict | None = None) -> list[str]:
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
    return ["## Answer", "",
            f"Each arm minus the reference arm in test top-1, paired by seed (points): mean and "
            f"{INTERVAL}; an interval containing 0 is no detectable difference. {note}", "",
            *lines, ""]
