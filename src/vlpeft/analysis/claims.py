"""The study's four claims (Tian et al., 2403.08433), tested per task and method on the data alone.

1. "Performance rises with data size": stratified Spearman trend of score on data size, inside each
   budget (and lr-selected seed runs), permutation p-value, slope per tenfold more data.
   holds: p < α and ρ > 0 · does not hold: p < α and ρ < 0, or the data-size effect is shown
   equivalent to zero (claim 3's test) · inconclusive: otherwise.
2. "Performance rises with trainable-parameter size": the same on trainable parameters inside each
   data size (methods with a size knob and ≥ 2 budgets).
3. "Data size does not matter": equivalence test of Δ = score at the largest − at the smallest data
   size within ±δ, δ = `delta` × the task's reference score (the best cell mean of the task; default
   δ = 5 %): two one-sided bootstrap tests. holds: equivalent · does not hold: Δ significantly
   outside ±δ · inconclusive.
4. "The effect of parameter size is not monotonic": an interior budget beats both the smallest and
   the largest budget, each one-sided bootstrap test at α/2. holds: peaked · does not hold: the
   best budget is an end and beats the other end (p < α) · inconclusive · untestable (< 3 budgets).

Every p-value of one report is adjusted for the false discovery rate (Benjamini–Hochberg, over all
its tests: both directions of claims 3 and 4 count as tests) and verdicts use the adjusted values;
the raw ones are kept beside them. When claims 1 and 3 both hold, performance rises with data by
less than δ: a small effect (`small_effect`).

5. Training length. A claim whose test rests on a cell with a run that had not converged
   (`vlpeft.convergence`: still improving when it stopped, flat at its start, too short to judge)
   is `confounded`: it would measure the training budget, not the data or the method. Except where
   more training could only strengthen the verdict (`length_robust`): every such run was still
   improving, so its score would rise, and every such cell sits where a higher score pushes the
   test further the way it went (the largest data size under "rises with data", the peak budget
   under a peak, ...). So is a verdict that changes when the study's length check re-runs some of
   its cells k times longer.

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


def _measure(rs: list[dict[str, Any]], margin: float, delta: float, seed: int) -> dict[str, Any]:
    """The statistics of the four claims on one task x method label's runs, with their raw p-values
    (`p`: the test of the claim; `p_against`: the test of its opposite, where it has one). No verdict."""
    x_data = [r["n_train"] for r in rs]
    y = [r["test"] for r in rs]
    budgets = [r["budget"] for r in rs]
    eq = stats.equivalence(x_data, y, budgets, margin, seed=seed)
    t_data = stats.trend(x_data, y, budgets, seed=seed)
    row = {"task": rs[0]["task"], "label": rs[0]["label"], "method": rs[0]["method"],
           "base_label": rs[0].get("base_label", rs[0]["label"]), "length": rs[0].get("length"), "runs": len(rs),
           "data_sizes": len(set(x_data)), "budgets": len(set(budgets)), "delta": margin, "delta_fraction": delta}
    row["data_trend"] = {"rho": t_data.rho, "p": t_data.p_value, "slope": t_data.slope, "n": t_data.n,
                         "testable": t_data.n > 0}
    row["data_flat"] = {"effect": eq.delta, "ci90": eq.ci90, "margin": margin, "p": eq.p_equivalent,
                        "p_against": eq.p_different, "testable": not np.isnan(eq.delta)}
    params = [r["params"] for r in rs]
    if len(set(params)) >= 2 and min(params) > 0:
        sizes = [r["size"] for r in rs]
        t_par = stats.trend(params, y, sizes, seed=seed + 1000)
        peak = stats.interior_peak(params, y, sizes, seed=seed + 2000)
        row["param_trend"] = {"rho": t_par.rho, "p": t_par.p_value, "slope": t_par.slope, "n": t_par.n,
                              "testable": t_par.n > 0}
        row["param_nonmonotonic"] = {"best_params": peak.best_x, "interior": peak.interior,
                                     "gain_low": peak.gain_over_low, "gain_high": peak.gain_over_high,
                                     "p_low": peak.p_low, "p_high": peak.p_high, "levels": peak.levels,
                                     "p": peak.p_peaked, "p_against": peak.p_monotone,
                                     "testable": peak.verdict != "untestable"}
        if not row["param_nonmonotonic"]["testable"]:
            row["param_nonmonotonic"]["why"] = f"{peak.levels} budgets; needs ≥ 3"
    else:
        why = "one budget" if len(set(params)) < 2 else "no trainable parameters"
        row["param_trend"] = {"testable": False, "why": why}
        row["param_nonmonotonic"] = {"testable": False, "why": why}
    return row


def family(rows: list[dict[str, Any]]) -> list[tuple[dict, str]]:
    """(claim dict, p key) of every test the report makes: the family whose false discovery rate is
    controlled."""
    return [(row[c], key) for row in rows for c in CLAIMS if row[c]["testable"]
            for key in ("p", "p_against") if row[c].get(key) is not None]


def _adjust(rows: list[dict[str, Any]]) -> None:
    """Benjamini–Hochberg over every test of `rows`: each `p` and `p_against` gets its adjusted value."""
    tests = family(rows)
    for (d, key), q in zip(tests, stats.bh_adjust([d[key] for d, key in tests])):
        d[key + "_adjusted"] = q


def _decide(row: dict[str, Any], alpha: float) -> None:
    """Verdicts from the adjusted p-values (see the module docstring)."""
    def sig(d, key="p"):
        return d.get(key + "_adjusted", 1.0) < alpha

    flat = row["data_flat"]
    flat["verdict"] = ("untestable" if not flat["testable"] else "holds" if sig(flat)
                       else "does not hold" if sig(flat, "p_against") else "inconclusive")
    for claim in ("data_trend", "param_trend"):
        d = row[claim]
        if not d["testable"]:
            d["verdict"] = "untestable"
        elif sig(d) and d["rho"] > 0:
            d["verdict"] = "holds"
        elif (sig(d) and d["rho"] < 0) or (claim == "data_trend" and flat["verdict"] == "holds"):
            d["verdict"] = "does not hold"
        else:
            d["verdict"] = "inconclusive"
    peak = row["param_nonmonotonic"]
    peak["verdict"] = ("untestable" if not peak["testable"] else "holds" if sig(peak)
                       else "does not hold" if sig(peak, "p_against") else "inconclusive")
    # Both "rises with data" and "data does not matter" hold: a real rise, smaller than delta.
    small = row["data_trend"]["verdict"] == "holds" and flat["verdict"] == "holds"
    row["data_trend"]["small_effect"] = flat["small_effect"] = small


def _claim_cells(rs: list[dict[str, Any]], claim: str) -> dict[tuple, list[dict]]:
    """(budget, data size) -> runs, for the cells a claim's test rests on: the smallest and the largest
    data size for "data does not matter", every cell for the others."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    ends = {min(r["n_train"] for r in rs), max(r["n_train"] for r in rs)}
    for r in rs:
        if claim != "data_flat" or r["n_train"] in ends:
            cells[(r["budget"], r["n_train"])].append(r)
    return cells


def _strengthened_only(claim: str, d: dict[str, Any], rs: list[dict[str, Any]], cells: list[list[dict]]) -> bool:
    """True when more training could only strengthen the verdict `d` of `claim`: every cell in `cells`
    (the ones with a run that had not converged) was still improving (so training longer raises its
    score; a run flat at its start or too short to judge has no known direction), and each sits where a
    higher score can only push the test further the way it already went: at the largest data size
    under a rise with data, at the smallest under a fall; at the largest budget under a rise with
    parameters; at the peak budget under a peak (or the best end under a monotone effect)."""
    if any(r.get("converged") is False and r.get("state") != "still_improving" for c in cells for r in c):
        return False
    v = d["verdict"]
    data = claim in ("data_trend", "data_flat")
    where = {(r["n_train"] if data else r["params"]) for c in cells for r in c}
    axis = [r["n_train"] if data else r["params"] for r in rs]
    top, bottom = max(axis), min(axis)
    if claim in ("data_trend", "param_trend"):
        if v == "holds":
            return where <= {top}
        falling = d.get("p_adjusted", 1.0) < stats.ALPHA and d.get("rho", 0.0) < 0
        return v == "does not hold" and falling and where <= {bottom}
    if claim == "data_flat":
        return v == "does not hold" and where <= ({top} if d["effect"] > 0 else {bottom})
    return v in ("holds", "does not hold") and where <= {d["best_params"]}  # param_nonmonotonic


def _convergence(row: dict[str, Any], rs: list[dict[str, Any]]) -> None:
    """Each claim's cells, the cells with a run that had not converged, and `confounded` unless more
    training of those cells could only strengthen the verdict (`length_robust`)."""
    for claim in CLAIMS:
        d = row[claim]
        cells = _claim_cells(rs, claim)
        unfinished = [c for c in cells.values() if any(r.get("converged") is False for r in c)]
        d["cells"] = len(cells)
        d["cells_not_converged"] = len(unfinished)
        d["convergence_known"] = all(r.get("converged") is not None for c in cells.values() for r in c)
        d["measured"] = d["verdict"]
        d["length_robust"] = bool(unfinished) and d["verdict"] != "untestable" and \
            _strengthened_only(claim, d, rs, unfinished)
        if unfinished and d["verdict"] != "untestable" and not d["length_robust"]:
            d["verdict"], d["confounded_by"] = "confounded", ["convergence"]


def _substitute(rs: list[dict[str, Any]], checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rs` with each run replaced by its length-check run (same budget, data size and seed), if any."""
    longer = {(c["budget"], c["size"], c["seed"]): c for c in checks}
    return [longer.get((r["budget"], r["size"], r["seed"]), r) for r in rs]


def judge_claims(runs: list[dict[str, Any]], delta: float = DEFAULT_DELTA, alpha: float = stats.ALPHA,
                 seed: int = 0, checks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per task x method label: the four claims with verdicts and numbers.

    Verdicts come from Benjamini–Hochberg adjusted p-values over every test of the rows judged
    together (one report). A claim whose test rests on a cell with a run that had not converged is
    `confounded` (its verdict as measured kept under `measured`). With `checks` (the study's length
    check: a few cells re-run k times longer, `length_check`), each task x label with checked cells
    is judged again with the longer runs in place of the originals (the other tests of the family
    unchanged); a verdict that changes is `confounded` too, and the row's `length_check` says how."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["method"] != "frozen":  # nothing is trained: no claim is about it
            by[(r["task"], r["label"])].append(r)
    reference = reference_scores(runs)
    groups = sorted(by.items())
    out = [_measure(rs, delta * (reference[task] or 1.0), delta, seed + k) for k, ((task, _), rs) in enumerate(groups)]
    _adjust(out)
    for row in out:
        _decide(row, alpha)
    checked: dict[tuple, list[dict]] = defaultdict(list)
    for c in checks or []:
        checked[(c["task"], c["label"])].append(c)
    for k, ((task, label), rs) in enumerate(groups):
        row = out[k]
        if checked.get((task, label)):
            longer = _substitute(rs, checked[(task, label)])
            again = _measure(longer, row["delta"], delta, seed + k)
            # the family with this row's tests replaced (copies: the report's own values stay as they are)
            _adjust([again if i == k else {c: dict(r[c]) for c in CLAIMS} for i, r in enumerate(out)])
            _decide(again, alpha)
            row["length_check"] = {"cells": len({(c["budget"], c["size"]) for c in checked[(task, label)]}),
                                   "runs": len(checked[(task, label)]),
                                   "verdicts": {c: again[c]["verdict"] for c in CLAIMS},
                                   "changed": [c for c in CLAIMS if again[c]["verdict"] != row[c]["verdict"]]}
        _convergence(row, rs)
        for claim in (row.get("length_check") or {}).get("changed", []):
            d = row[claim]
            d["verdict"] = "confounded"
            d["confounded_by"] = [*d.get("confounded_by", []), "length check"]
    return out


VERDICTS = ("holds", "does not hold", "inconclusive", "untestable", "confounded")
TABLE_COLUMNS = ("task", "label", "method", "length", "claim", "verdict", "measured", "confounded_by", "small_effect",
                 "rho", "slope", "effect", "ci_low", "ci_high", "p", "p_adjusted", "p_against", "p_against_adjusted",
                 "delta", "cells", "cells_not_converged", "length_robust", "length_check")


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat record per task x method label x length x claim (claims.csv, claims.parquet): the
    report's verdict matrix and findings are these verdicts. `measured` is the verdict the test gave
    before any confounding; `p` raw, `p_adjusted` Benjamini–Hochberg; `effect` is Δ (largest − smallest
    data size) for "data does not matter" and the peak's smaller gain over the two ends for "parameters
    non-monotonic"; `length_robust`: cells had not converged, but more training could only strengthen
    the verdict; `length_check` the verdict under the length check, where the study ran one."""
    nan = float("nan")
    out = []
    for row in rows:
        for claim in CLAIMS:
            d = row[claim]
            effect, ci = nan, (nan, nan)
            if claim == "data_flat" and d.get("testable"):
                effect, ci = d["effect"], d["ci90"]
            elif claim == "param_nonmonotonic" and d.get("testable"):
                effect = min(d["gain_low"], d["gain_high"]) if d["interior"] else nan
            out.append({
                "task": row["task"], "label": row["label"], "method": row["method"], "length": row.get("length") or "",
                "claim": claim, "verdict": d["verdict"], "measured": d.get("measured", d["verdict"]),
                "confounded_by": "; ".join(d.get("confounded_by", [])), "small_effect": bool(d.get("small_effect")),
                "rho": d.get("rho", nan), "slope": d.get("slope", nan), "effect": effect,
                "ci_low": ci[0], "ci_high": ci[1], "p": d.get("p", nan), "p_adjusted": d.get("p_adjusted", nan),
                "p_against": d.get("p_against", nan), "p_against_adjusted": d.get("p_against_adjusted", nan),
                "delta": row["delta"], "cells": d.get("cells", 0),
                "cells_not_converged": d.get("cells_not_converged", 0), "length_robust": bool(d.get("length_robust")),
                "length_check": (row.get("length_check") or {}).get("verdicts", {}).get(claim, ""),
            })
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
