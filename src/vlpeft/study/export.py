"""Exports of the store for readers: results.csv (+ results.parquet with pyarrow) and report.md.

Every file is written atomically and only when its content changed, so a rerun of a finished study
leaves the folder exactly as it was. The analysis issue replaces report.md with the full report; until
then it holds the results table: mean ± standard deviation over seeds of the test score per method,
budget and data size, learning rate selected on validation where the spec gave a grid.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from vlpeft.io import atomic_path, write_text
from vlpeft.study import store

FIXED = [c for c in store.COLUMNS if c not in ("config", "metrics")]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}, "c": [1]} -> {"a.b": 1, "c": "[1]"} (lists as JSON)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def table_rows(con) -> list[dict[str, Any]]:
    rows = []
    for r in store.rows(con):
        flat = {k: r[k] for k in FIXED}
        flat.update({f"config.{k}": v for k, v in flatten(json.loads(r["config"])).items()})
        if r["metrics"]:
            flat.update({f"m.{k}": v for k, v in flatten(json.loads(r["metrics"])).items() if k != "config"})
        rows.append(flat)
    return rows


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def export_all(con, out: Path, spec, ids: list[str]) -> None:
    rows = table_rows(con)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    changed = _write_if_changed(out / "results.csv", buf.getvalue())
    parquet = out / "results.parquet"
    if changed or not parquet.exists():
        try:
            import pandas as pd  # optional: with pandas and pyarrow installed, Parquet too

            frame = pd.DataFrame(rows, columns=columns)
            with atomic_path(parquet) as tmp:
                frame.to_parquet(tmp, index=False)
        except ImportError:
            pass
    _write_if_changed(out / "report.md", results_markdown(con, spec, ids))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def results_markdown(con, spec, ids: list[str]) -> str:
    wanted = set(ids)
    runs = [r for r in store.rows(con) if r["id"] in wanted]
    done = [r for r in runs if r["status"] == "done"]
    failed = [r for r in runs if r["status"] == "failed"]
    training = spec.training
    lines = [f"# Study `{spec.name}`", "",
             f"{len(done)} of {len(runs)} runs done, {len(failed)} failed. Model `{spec.model}`; "
             f"training-length policy `{training.get('length_policy', 'epochs_min_steps')}` "
             f"(epochs {training.get('epochs', 5)}, min steps {training.get('min_steps', 300)}). "
             "Cells: test score, mean ± standard deviation over seeds (learning rate picked on validation "
             "where a grid was given); trainable parameters in brackets.", ""]
    sizes = [str(s) for s in spec.data_sizes]
    for task in spec.tasks:
        mine = [r for r in done if r["task"] == task]
        metric = mine[0]["metric"] if mine else "score"
        lines += [f"## {task} ({metric})", "", "| method | budget | " + " | ".join(f"n={s}" for s in sizes) + " |",
                  "|---|---|" + "---|" * len(sizes)]
        for label in spec.methods:
            budgets = sorted({r["budget"] for r in runs if r["task"] == task and r["label"] == label},
                             key=lambda b: (b is None, str(b)))
            for budget in budgets:
                cells, params = [], None
                for size in sizes:
                    chosen = []
                    for seed in spec.seeds:
                        group = [r for r in mine if r["label"] == label and r["budget"] == budget
                                 and r["data_size"] == size and r["seed"] == seed]
                        if group:
                            best = max(group, key=lambda r: (r["best_val_score"] if r["best_val_score"] is not None else -1e9))
                            chosen.append(best["test_score"])
                            params = json.loads(best["metrics"]).get("budget_params")
                    cells.append(_mean_sd(chosen))
                shown = "–" if budget is None else budget
                lines.append(f"| {label} | {shown}{f' ({params:,})' if params is not None else ''} | " + " | ".join(cells) + " |")
        majority = [json.loads(r["metrics"]).get("secondary", {}).get("majority_baseline") for r in mine]
        majority = [m for m in majority if m is not None]
        if majority:
            lines += ["", f"Majority-answer baseline: {majority[0]:.3g}."]
        lines.append("")
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{r['id']}`: {r['reason']}" for r in failed] + [""]
    return "\n".join(lines)
