"""A task's sensitivity to data size and to trainable parameters, predicted from its consistency with
pre-training before any grid is run.

Tian et al. (arXiv 2403.08433) end on the use of their finding: whether a downstream task is
consistent with pre-training should guide the PEFT strategy. Here that is made a prediction:

- `sensitivity(verdicts, cells)`: per task of a study, the mean over trained methods of the data-size
  and the parameter-size slope (score change per tenfold, `stats.trend`), as a share of the task's
  best cell mean: 0.1 = ten times the data (or parameters) adds a tenth of the best score.
- `study_points(folder)`: per task of a finished study, its consistency measures (`lm_loss` and
  `feature_distance`, measured on the checkpoint alone and stored by the study; `zero_shot` from its
  runs), its two sensitivities, and its cells (for a recommendation), from its converged runs only
  (`dropped`: the runs left out because they were still improving when they stopped).
- `fit(points, predictor)`: per sensitivity s, the least-squares line s = a + b x on one consistency
  figure x (`PREDICTOR` = `lm_loss`: the checkpoint's mean loss on the task's training targets, which
  needs no run; a new task gets it in seconds). `predict` gives the value at a new task's x with the
  90 % prediction interval of `stats.predict_line`; with two tasks or fewer there is no interval (the
  line fits them exactly), and with one the prediction is that task's value.
- `expectation(data)`: which claim of the paper the task is expected to follow. Data size "does not
  matter" in the study's claims when the effect stays inside +-delta of the best score (`claims`), so
  a predicted data sensitivity above delta per tenfold is "likely inconsistent" (more data and a larger
  budget should pay), at or below it "likely consistent" (a small budget and little data should
  suffice); "uncertain" when the interval reaches both sides.
- `leave_one_out(points, predictor)`: each task predicted from the others, against what its grid
  measured.

Reads study folders through the store only (no torch): measuring a new task is `study.preflight`'s.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft.analysis import claims as claims_mod
from vlpeft.analysis import consistency as cons
from vlpeft.analysis.results import aggregate, converged_only, load_runs, read_store
from vlpeft.analysis.stats import fit_line, predict_line
from vlpeft.errors import UserError

PREDICTOR = "lm_loss"
PREDICTORS = {
    "lm_loss": "the checkpoint's mean loss on the task's training targets (low: the decoder already writes them)",
    "feature_distance": "distance of the task's image features from the pre-training images' (0: the same images)",
}
TARGETS = ("data_sensitivity", "param_sensitivity")


def sensitivity(rows: list[dict], cells: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per task: mean slope (per tenfold) over methods, as a share of the task's best cell mean."""
    best = defaultdict(float)
    for c in cells:
        best[c["task"]] = max(best[c["task"]], abs(c["mean"]))
    out = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task and r["method"] != "frozen"]
        data = [r["data_trend"]["slope"] for r in mine if "slope" in r["data_trend"]]
        par = [r["param_trend"]["slope"] for r in mine if "slope" in r["param_trend"]]
        scale = best[task] or 1.0
        out[task] = {"data_sensitivity": float(np.mean(data)) / scale if data else None,
                     "param_sensitivity": float(np.mean(par)) / scale if par else None}
    return out


def require_study(folder: str | Path) -> Path:
    """`folder` if it holds a study's store; a one-line UserError if not."""
    folder = Path(folder)
    if not (folder / "results.sqlite").is_file():
        raise UserError(f"advise: --from {folder}: not a study folder (no results.sqlite)")
    return folder


def study_points(folder: str | Path) -> list[dict[str, Any]]:
    """One point per task of the study in `folder` that has finished runs."""
    folder = require_study(folder)
    meta, rows = read_store(folder)
    every = load_runs(folder, rows)
    runs, _ = converged_only(every)  # a run still improving when it stopped measures its length, not the task
    dropped_runs = [r for r in every if r.get("converged") is False]
    cells = aggregate(runs)
    verdicts = claims_mod.judge_claims(runs)
    measured, ident, spec = meta.consistency, meta.identity, meta.spec
    digests = sorted(set((ident.get("checkpoints") or {}).values()))
    zs, sens = cons.zero_shot(cells), sensitivity(verdicts, cells)
    points = []
    for task in sorted(sens):
        m = measured.get(task, {})
        points.append({
            "study": folder.name, "folder": str(folder), "task": task,
            "relation": next((c["relation"] for c in cells if c["task"] == task), None) or m.get("relation"),
            "lm_loss": m.get("lm_loss"), "feature_distance": m.get("feature_distance"), "zero_shot": zs.get(task),
            **sens[task], "checkpoints": digests, "cells": [c for c in cells if c["task"] == task],
            "methods": spec.get("methods", {}), "training": spec.get("training", {}),
            "task_training": (spec.get("task_training") or {}).get(task, {}),
            "dropped": sum(r["task"] == task for r in dropped_runs),
        })
    return points


def usable(points: list[dict], predictor: str, target: str) -> list[dict]:
    return [p for p in points if p.get(predictor) is not None and p.get(target) is not None]


def fit(points: list[dict], predictor: str = PREDICTOR) -> dict[str, Any]:
    """target -> the fitted line (None without a usable point) and the points it used."""
    out = {}
    for target in TARGETS:
        pts = usable(points, predictor, target)
        out[target] = {"line": fit_line([p[predictor] for p in pts], [p[target] for p in pts]) if pts else None,
                       "tasks": [f"{p.get('study', '')}/{p['task']}".lstrip("/") for p in pts]}
    return out


def predict(fitted: dict[str, Any], x: float) -> dict[str, dict[str, Any] | None]:
    """target -> {value, lo, hi, n} at consistency figure x (lo/hi None when there is no interval)."""
    out = {}
    for target, f in fitted.items():
        if f["line"] is None:
            out[target] = None
            continue
        y, lo, hi = predict_line(f["line"], x)
        out[target] = {"value": y, "lo": lo, "hi": hi, "n": f["line"].n}
    return out


def expectation(data: dict[str, Any] | None, delta: float = claims_mod.DEFAULT_DELTA) -> str | None:
    """'likely inconsistent', 'likely consistent', 'uncertain' (the interval reaches both sides of
    delta) or None (no prediction), from a predicted data sensitivity."""
    if data is None:
        return None
    if data["lo"] is not None and data["lo"] <= delta < data["hi"]:
        return "uncertain"
    return "likely inconsistent" if data["value"] > delta else "likely consistent"


PAPER_RULE = {
    "likely consistent": "a small budget and little data should suffice (Tian et al.: on a task consistent with "
                         "pre-training data size no longer matters and the effect of parameter size is not monotonic)",
    "likely inconsistent": "more data and a larger budget should pay (Tian et al.: on a task not consistent with "
                           "pre-training performance rises with data size and with trainable parameters)",
    "uncertain": "the interval reaches both sides of the margin: run the confirming grid before choosing",
}


def nearest(points: list[dict], predictor: str, x: float) -> dict | None:
    """The point whose consistency figure is closest to x (the task most like the new one)."""
    pts = [p for p in points if p.get(predictor) is not None]
    return min(pts, key=lambda p: (abs(p[predictor] - x), p["study"], p["task"])) if pts else None


def leave_one_out(points: list[dict], predictor: str = PREDICTOR) -> list[dict[str, Any]]:
    """For each task name, its points predicted from the other tasks' points (all studies): the
    measured and predicted sensitivities, the error, and whether the interval held the measured value."""
    out = []
    for task in sorted({p["task"] for p in points}):
        rest = [p for p in points if p["task"] != task]
        fitted = fit(rest, predictor)
        for p in points:
            if p["task"] != task or p.get(predictor) is None:
                continue
            pred = predict(fitted, p[predictor])
            for target in TARGETS:
                q, measured = pred[target], p.get(target)
                if q is None or measured is None:
                    continue
                covered = None if q["lo"] is None else bool(q["lo"] <= measured <= q["hi"])
                out.append({"study": p["study"], "task": task, "target": target, "x": p[predictor],
                            "measured": measured, "predicted": q["value"], "lo": q["lo"], "hi": q["hi"],
                            "error": q["value"] - measured, "covered": covered, "n": q["n"],
                            "expected": expectation(q) if target == "data_sensitivity" else None,
                            "expected_measured": (expectation({"value": measured, "lo": None, "hi": None})
                                                  if target == "data_sensitivity" else None)})
    return out


def loo_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """target -> mean absolute error, the largest error, interval coverage, and (data) how often the
    expected claim matched the one the grid's measured sensitivity gives."""
    out = {}
    for target in TARGETS:
        mine = [r for r in rows if r["target"] == target]
        if not mine:
            continue
        errs = [abs(r["error"]) for r in mine]
        cov = [r["covered"] for r in mine if r["covered"] is not None]
        s = {"n": len(mine), "mae": float(np.mean(errs)), "max_error": float(max(errs)),
             "covered": sum(cov), "intervals": len(cov)}
        if target == "data_sensitivity":
            s["claim_right"] = sum(r["expected"] == r["expected_measured"] for r in mine
                                   if r["expected"] not in (None, "uncertain"))
            s["claim_called"] = sum(r["expected"] not in (None, "uncertain") for r in mine)
        out[target] = s
    return out


def loo_text(points: list[dict]) -> str:
    """The leave-one-task-out table for each consistency figure, and its summary, as text."""
    tasks = sorted({p["task"] for p in points})
    lines = [f"leave one task out over {len(tasks)} tasks ({len(points)} study tasks: "
             + ", ".join(f"{p['study']}/{p['task']}" for p in points) + ")"]
    for x in PREDICTORS:
        rows = leave_one_out(points, x)
        lines += ["", f"predictor {x}: {PREDICTORS[x]}",
                  f"  {'study/task':<34} {'target':<18} {'x':>7} {'measured':>9} {'predicted':>9} "
                  f"{'90% interval':>19} {'error':>7}  expected (measured)"]
        for r in rows:
            iv = "–" if r["lo"] is None else f"[{r['lo']:+.3f}, {r['hi']:+.3f}]"
            exp = f"{r['expected']} ({r['expected_measured']})" if r["expected"] else ""
            lines.append(f"  {r['study'] + '/' + r['task']:<34} {r['target']:<18} {r['x']:>7.3f} "
                         f"{r['measured']:>+9.3f} {r['predicted']:>+9.3f} {iv:>19} {r['error']:>+7.3f}  {exp}")
        for target, s in loo_summary(rows).items():
            extra = (f"; expected claim right {s['claim_right']} of {s['claim_called']} called"
                     if target == "data_sensitivity" else "")
            lines.append(f"  {target}: mean |error| {s['mae']:.3f}, largest {s['max_error']:.3f}; measured value "
                         f"inside the interval {s['covered']} of {s['intervals']}{extra}")
    return "\n".join(lines)
