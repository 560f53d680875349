"""Read a study's results.sqlite into runs and aggregated cells.

- `load_runs(folder)`: one dict per finished run of the grid (learning rate already selected: for
  each task x label x budget x data size x seed (x training length), the run with the best
  validation score among the lr grid); `load_runs(folder, checks=True)`: the runs of the study's
  length check instead (a few cells trained k times longer), selected the same way.
- `converged_only(runs)`: the runs known not to have stopped while still improving, and how many
  were dropped (advice and predictions are made from these).
- `aggregate(runs)`: one dict per cell (task x label x budget x data size): mean test score over
  seeds with its 95 % bootstrap interval, trainable parameters (count and % of the backbone), and the
  score relative to full fine-tuning on the same task and data size.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft import store
from vlpeft.analysis.stats import bootstrap_ci
from vlpeft.runrecord import RunRecord


def read_store(folder: str | Path) -> tuple[store.StudyMeta, list[dict[str, Any]]]:
    """(meta, rows) of a study folder's store, read-only (through the store's API): the study's record
    typed, and every row."""
    return store.read(folder)


def run_record(row: dict[str, Any]) -> dict[str, Any]:
    """One finished run as the analysis uses it: the row's grid coordinates and its RunRecord. A run
    of a study with `lengths` is labelled `label@length` (e.g. `lora@steps`), so every grouping by
    label (cells, claims, advice, figures) keeps the training lengths apart."""
    m = RunRecord.from_dict(json.loads(row["metrics"]), f"run {row['id']}")
    length = row.get("length")
    return {
        "id": row["id"], "task": row["task"], "label": row["label"] + (f"@{length}" if length else ""),
        "base_label": row["label"], "length": length, "method": row["method"],
        "budget": row["budget"], "knob": m.knob, "knob_value": m.knob_value,
        "size": row["data_size"], "n_train": m.data_size, "fraction": m.data_fraction,
        "seed": row["seed"], "lr": m.lr, "metric": m.metric, "test": float(m.test_score),
        "val": float(m.best_val_score), "params": int(m.budget_params),
        "trainable": int(m.trainable_params), "backbone": int(m.params.get("backbone", 0)) or None,
        "percent": float(m.params.get("budget_percent_of_backbone", 0.0)), "seconds": m.train_seconds,
        "relation": m.task_relation, "length_policy": m.length_policy,
        "majority": m.majority_baseline, "steps": m.steps, "steps_done": m.steps_done,
        "steps_to_best": m.steps_to_best, "converged": m.converged,
        "state": (m.convergence or {}).get("state"), "stopped_by": m.stopped_by, "val_se": m.best_val_se,
        "n_val": m.n_val,
        "val_seconds": m.val_seconds, "eval_seconds": m.eval_seconds,
        "check": row.get("length_check"),
    }


def load_runs(folder: str | Path, rows: list[dict] | None = None, checks: bool = False) -> list[dict[str, Any]]:
    """Finished runs, one per grid point, the learning rate picked on validation: the grid's, or with
    `checks` the length check's."""
    if rows is None:
        _, rows = read_store(folder)
    done = [run_record(r) for r in rows
            if r["status"] == "done" and r["metrics"] and bool(r.get("length_check")) == checks]
    best: dict[tuple, dict] = {}
    for r in done:
        key = (r["task"], r["label"], r["budget"], r["size"], r["seed"])
        if key not in best or r["val"] > best[key]["val"]:
            best[key] = r
    return list(best.values())


def converged_only(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(runs that did not stop while still learning, how many were dropped). Runs recorded before
    convergence was judged (converged None) are kept."""
    kept = [r for r in runs if r.get("converged") is not False]
    return kept, len(runs) - len(kept)


def cell_key(r) -> tuple:
    return (r["task"], r["label"], r["budget"], r["size"])


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[cell_key(r)].append(r)
    cells = []
    for (task, label, budget, size), rs in groups.items():
        scores = [r["test"] for r in rs]
        lo, hi = bootstrap_ci(scores, seed=len(cells))
        first = rs[0]
        cells.append({"task": task, "label": label, "method": first["method"], "budget": budget,
                      "knob": first["knob"], "knob_value": first["knob_value"], "size": size,
                      "n_train": first["n_train"], "fraction": first["fraction"], "metric": first["metric"],
                      "mean": float(np.mean(scores)), "ci": (lo, hi), "seeds": len(rs),
                      "val": float(np.mean([r["val"] for r in rs])), "params": first["params"],
                      "percent": first["percent"], "relation": first["relation"], "length": first.get("length"),
                      "not_converged": sum(r.get("converged") is False for r in rs)})
    full = {(c["task"], c["size"]): c["mean"] for c in cells if c["method"] == "full"}
    for c in cells:
        ref = full.get((c["task"], c["size"]))
        c["relative_to_full"] = c["mean"] / ref if ref else None
    cells.sort(key=lambda c: (c["task"], c["label"], c["params"], c["n_train"]))
    return cells
