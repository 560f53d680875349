"""Were the runs under the verdicts finished? Three readings of a study's runs for the report:

- `table(runs)`: per task x method label, how many runs converged, were still improving when they
  stopped, stayed flat at their start while the loss fell, or were too short to judge
  (`vlpeft.convergence`), how many reached their cap, and the median steps to the best validation
  score and run.
- `noise(runs, delta)`: per task, whether its validation split can tell δ (the claims' margin) from
  noise: the median standard error of the runs' best validation scores against δ. Too small when
  δ < 2 SE: an improvement of δ would not clear the noise, so early stopping and model selection
  would be coin tosses at the scale the verdicts judge. The split size that would do, from SE ∝ 1/√n.
- `length_check(verdicts)`: per task, what the study's length check (a few cells re-run k times
  longer) did to the verdicts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from vlpeft.analysis.claims import CLAIMS, DEFAULT_DELTA, reference_scores

NOISE_RATIO = 2.0  # δ must be at least this many standard errors of the validation score


def table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        if r["method"] != "frozen":
            by[(r["task"], r["label"])].append(r)
    out = []
    for (task, label), rs in sorted(by.items()):
        states = defaultdict(int)
        for r in rs:
            states[r.get("state") or "not recorded"] += 1
        cells: dict[tuple, list] = defaultdict(list)
        for r in rs:
            cells[(r["budget"], r["size"])].append(r)
        best = [r["steps_to_best"] for r in rs if r.get("steps_to_best") is not None]
        done = [r["steps_done"] for r in rs if r.get("steps_done") is not None]
        out.append({"task": task, "label": label, "runs": len(rs), "states": dict(states),
                    "converged": sum(r.get("converged") is True for r in rs),
                    "not_converged": sum(r.get("converged") is False for r in rs),
                    "cells": len(cells), "cells_converged": sum(all(r.get("converged") is not False for r in c)
                                                                for c in cells.values()),
                    "capped": sum(r.get("stopped_by") == "cap" for r in rs),
                    "median_steps_to_best": float(np.median(best)) if best else None,
                    "median_steps": float(np.median(done)) if done else None})
    return out


def noise(runs: list[dict[str, Any]], delta: float = DEFAULT_DELTA) -> list[dict[str, Any]]:
    reference = reference_scores(runs)
    out = []
    for task in sorted({r["task"] for r in runs}):
        se = [r["val_se"] for r in runs if r["task"] == task and r.get("val_se") is not None]
        n_val = max((r.get("n_val") or 0 for r in runs if r["task"] == task), default=0)
        margin = delta * (reference.get(task) or 1.0)
        if not se:
            out.append({"task": task, "n_val": n_val, "se": None, "delta": margin, "too_small": None, "needed": None})
            continue
        median = float(np.median(se))
        too_small = NOISE_RATIO * median > margin
        needed = math.ceil(n_val * (NOISE_RATIO * median / margin) ** 2) if too_small and n_val else None
        out.append({"task": task, "n_val": n_val, "se": median, "delta": margin, "too_small": too_small,
                    "needed": needed})
    return out


def noise_sentence(row: dict[str, Any]) -> str:
    return (f"Warning: on {row['task']} the validation split ({row['n_val']:,} examples, standard error "
            f"±{row['se']:.3g}) is too small to tell δ = {row['delta']:.3g} from noise (δ < {NOISE_RATIO:g} SE): "
            f"early stopping and model selection there are close to coin tosses at the scale of the verdicts; "
            f"about {row['needed']:,} validation examples would do (`val_limit`).")


def length_check(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task with checked labels: labels checked, runs, and the (label, claim, verdict before ->
    under the check) that changed."""
    out = []
    for task in sorted({v["task"] for v in verdicts if v.get("length_check")}):
        rows = [v for v in verdicts if v["task"] == task and v.get("length_check")]
        changed = [(v["label"], c, v[c].get("measured", v[c]["verdict"]), v["length_check"]["verdicts"][c])
                   for v in rows for c in v["length_check"]["changed"]]
        out.append({"task": task, "labels": len(rows), "runs": sum(v["length_check"]["runs"] for v in rows),
                    "changed": changed})
    return out


def length_check_sentence(row: dict[str, Any], factor: int | None) -> str:
    longer = f"{factor}×" if factor else "k×"
    head = (f"On {row['task']}, the length check re-ran {row['runs']} run(s) of {row['labels']} method(s) {longer} "
            f"longer")
    if not row["changed"]:
        return head + ": no verdict would change."
    what = "; ".join(f"{label} “{CLAIMS[c]}” {before} → {after}" for label, c, before, after in row["changed"])
    return head + f": {len(row['changed'])} verdict(s) would change ({what}); they read `confounded`."
