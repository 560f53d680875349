"""The study's four claims (Tian et al., 2403.08433), tested per task and method on the data alone.

1. "Performance rises with data size": stratified Spearman trend of score on data size, inside each
   budget (and lr-selected seed runs), permutation p-value, slope per tenfold more data.
   holds: p < α and ρ > 0 · does not hold: p < α and ρ < 0, or the data-size effect is shown
   equivalent to zero (claim 3's test) · inconclusive: otherwise.
2. "Performance rises with trainable-parameter size": the same on trainable parameters inside each
   data size (methods with a size knob and ≥ 2 budgets).
3. "Data size does not matter": equivalence test of Δ = score at the largest − at the smallest data
   size within ±δ, δ = `delta` × the task's reference score (the best cell mean of the task; default
   δ = 5 %). holds: equivalent · does not hold: Δ significantly outside ±δ · inconclusive.
4. "The effect of parameter size is not monotonic": an interior budget beats both the smallest and
   the largest budget, each one-sided bootstrap test at α/2. holds: peaked · does not hold: the
   best budget is an end and beats the other end (p < α) · inconclusive · untestable (< 3 budgets).

Nothing here knows what the paper found: verdicts come from the runs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from vlpeft.analysis import stats

CLAIMS = {
    "data_trend": "performance rises with data size",
    "param_trend": "performance rises with trainable parameters",
    "data_flat": "data size does not matter",
    "param_nonmonotonic": "parameter size has a non-monotonic effect",
}
DEFAULT_DELTA = 0.05


def _verdict_trend(t: stats.Trend, eq: stats.Equivalence | None, alpha: float) -> str:
    if t.n == 0:
        return "untestable"
    if t.p_value < alpha and t.rho > 0:
        return "holds"
    if (t.p_value < alpha and t.rho < 0) or (eq is not None and eq.verdict == "equivalent"):
        return "does not hold"
    return "inconclusive"


def _cell_means(runs: list[dict[str, Any]]) -> dict[tuple, float]:
    """(task, label, budget, size) -> mean test score over seeds."""
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in runs:
        cells[(r["task"], r["label"], r["budget"], r["size"])].append(r["test"])
    return {k: float(np.mean(v)) for k, v in cells.items()}


def reference_scores(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The task's score scale: its best cell mean (what delta is a fraction of)."""
    reference: dict[str, float] = {}
    for (task, *_), mean in _cell_means(runs).items():
        reference[task] = max(reference.get(task, 0.0), abs(mean))
    return reference


def baseline_check(runs: list[dict[str, Any]], delta: float = DEFAULT_DELTA) -> list[dict[str, Any]]:
    """Trained cells that did not beat doing nothing, per task and method label.

    A cell (budget, data size) is flagged when its mean test score is below b + δ, where b is the
    better of the frozen model's score at that data size (zero-shot) and the majority answer (VQA
    tasks), and δ is claim 3's margin. The claims about a method whose cells are flagged describe
    runs that learned nothing measurable (too few steps, too low a learning rate), not the method,
    unless the task leaves no room: `headroom` (the task's best cell mean minus the highest baseline)
    is then not much larger than δ, as on a task the frozen model already does well.
    """
    means = _cell_means(runs)
    reference = reference_scores(runs)
    majority = {r["task"]: r["majority"] for r in runs if r.get("majority") is not None}
    frozen = {(t, size): m for (t, label, _, size), m in means.items() if label == "frozen"}
    rows: dict[tuple, dict[str, Any]] = {}
    for (task, label, budget, size), mean in sorted(means.items(), key=str):
        if label == "frozen":
            continue
        bases = [b for b in (frozen.get((task, size)), majority.get(task)) if b is not None]
        if not bases:
            continue
        base, margin = max(bases), delta * (reference[task] or 1.0)
        row = rows.setdefault((task, label), {"task": task, "label": label, "cells": 0, "flagged": [],
                                              "margin": margin, "headroom": reference[task] - base})
        row["cells"] += 1
        row["headroom"] = min(row["headroom"], reference[task] - base)
        if mean < base + margin:
            row["flagged"].append({"budget": budget, "size": size, "mean": mean, "baseline": base, "margin": margin})
    return [rows[k] for k in sorted(rows)]


def judge_claims(runs: list[dict[str, Any]], delta: float = DEFAULT_DELTA, alpha: float = stats.ALPHA,
                seed: int = 0) -> list[dict[str, Any]]:
    """One row per task x method label: the four claims with verdicts and numbers."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["method"] != "frozen":  # nothing is trained: no claim is about it
            by[(r["task"], r["label"])].append(r)
    reference = reference_scores(runs)
    out = []
    for k, ((task, label), rs) in enumerate(sorted(by.items())):
        x_data = [r["n_train"] for r in rs]
        y = [r["test"] for r in rs]
        margin = delta * (reference[task] or 1.0)
        eq = stats.equivalence(x_data, y, [r["budget"] for r in rs], margin, alpha, seed=seed + k)
        t_data = stats.trend(x_data, y, [r["budget"] for r in rs], seed=seed + k)
        row = {"task": task, "label": label, "method": rs[0]["method"], "base_label": rs[0].get("base_label", label),
               "length": rs[0].get("length"), "runs": len(rs),
               "data_sizes": len(set(x_data)), "budgets": len({r["budget"] for r in rs}),
               "delta": margin, "delta_fraction": delta}
        row["data_trend"] = {"verdict": _verdict_trend(t_data, eq, alpha), "rho": t_data.rho,
                             "p": t_data.p_value, "slope": t_data.slope, "n": t_data.n}
        row["data_flat"] = {
            "verdict": {"equivalent": "holds", "different": "does not hold"}.get(eq.verdict, "inconclusive")
            if not np.isnan(eq.delta)
            else "untestable",
            "effect": eq.delta,
            "ci90": eq.ci90,
            "margin": margin,
        }
        params = [r["params"] for r in rs]
        if len(set(params)) >= 2 and min(params) > 0:
            sizes = [r["size"] for r in rs]
            t_par = stats.trend(params, y, sizes, seed=seed + 1000 + k)
            peak = stats.interior_peak(params, y, sizes, alpha, seed=seed + 2000 + k)
            row["param_trend"] = {"verdict": _verdict_trend(t_par, None, alpha), "rho": t_par.rho,
                                  "p": t_par.p_value, "slope": t_par.slope, "n": t_par.n}
            row["param_nonmonotonic"] = {
                "verdict": {"peaked": "holds", "monotone": "does not hold", "untestable": "untestable"}.get(
                    peak.verdict, "inconclusive"
                ),
                "best_params": peak.best_x,
                "interior": peak.interior,
                "gain_low": peak.gain_over_low,
                "gain_high": peak.gain_over_high,
                "p_low": peak.p_low,
                "p_high": peak.p_high,
                "levels": peak.levels,
            }
        else:
            why = "one budget" if len(set(params)) < 2 else "no trainable parameters"
            row["param_trend"] = {"verdict": "untestable", "why": why}
            row["param_nonmonotonic"] = {"verdict": "untestable", "why": why}
        out.append(row)
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per task and claim: how many methods got each verdict."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        for claim in CLAIMS:
            v = row[claim]["verdict"]
            out.setdefault(row["task"], {}).setdefault(claim, {}).setdefault(v, 0)
            out[row["task"]][claim][v] += 1
    return out
