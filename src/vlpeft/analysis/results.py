"""Read a study's results.sqlite into runs and aggregated cells.

- `load_runs(folder)`: one dict per finished run (learning rate already selected: for each task x
  label x budget x data size x seed, the run with the best validation score among the lr grid).
- `aggregate(runs)`: one dict per cell (task x label x budget x data size): mean test score over
  seeds with its 95 % bootstrap interval, trainable parameters (count and % of the backbone), and the
  score relative to full fine-tuning on the same task and data size.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft.analysis.stats import bootstrap_ci
from vlpeft.errors import UserError


def read_store(folder: str | Path) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """(meta, rows) of a study folder's store, read-only."""
    path = Path(folder) / "results.sqlite"
    if not path.is_file():
        raise UserError(f"{folder}: no results.sqlite here (not a study folder)")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        rows = [dict(r) for r in con.execute("SELECT * FROM runs ORDER BY rowid")]
        con.close()
    except sqlite3.DatabaseError as e:
        raise UserError(f"{path}: not a vlpeft results store ({e})") from None
    return meta, rows


def run_record(row: dict[str, Any]) -> dict[str, Any]:
    m = json.loads(row["metrics"])
    params = m.get("params", {})
    return {
        "id": row["id"], "task": row["task"], "label": row["label"], "method": row["method"],
        "budget": row["budget"], "knob": m.get("knob"), "knob_value": m.get("knob_value"),
        "size": row["data_size"], "n_train": m["data_size"], "fraction": m.get("data_fraction"),
        "seed": row["seed"], "lr": m.get("lr"), "metric": m["metric"], "test": float(m["test_score"]),
        "val": float(m["best_val_score"]), "params": int(m.get("budget_params", 0)),
        "trainable": int(m.get("trainable_params", 0)), "backbone": int(params.get("backbone", 0)) or None,
        "percent": float(params.get("budget_percent_of_backbone", 0.0)), "seconds": m.get("train_seconds"),
        "relation": m.get("task_relation"), "length_policy": m.get("length_policy"),
        "majority": (m.get("secondary") or {}).get("majority_baseline"), "steps": m.get("steps"),
    }


def load_runs(folder: str | Path, rows: list[dict] | None = None) -> list[dict[str, Any]]:
    """Finished runs, one per grid point, the learning rate picked on validation."""
    if rows is None:
        _, rows = read_store(folder)
    done = [run_record(r) for r in rows if r["status"] == "done" and r["metrics"]]
    best: dict[tuple, dict] = {}
    for r in done:
        key = (r["task"], r["label"], r["budget"], r["size"], r["seed"])
        if key not in best or r["val"] > best[key]["val"]:
            best[key] = r
    return list(best.values())


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
                      "percent": first["percent"], "relation": first["relation"]})
    full = {(c["task"], c["size"]): c["mean"] for c in cells if c["method"] == "full"}
    for c in cells:
        ref = full.get((c["task"], c["size"]))
        c["relative_to_full"] = c["mean"] / ref if ref else None
    cells.sort(key=lambda c: (c["task"], c["label"], c["params"], c["n_train"]))
    return cells
