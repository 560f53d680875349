"""Exports of the store for readers: results.csv and results.parquet (with pandas and pyarrow).

Every file is written atomically and only when its content changed, so a rerun of a finished study
leaves the folder exactly as it was. (The report is vlpeft.analysis.report's.)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from vlpeft import store
from vlpeft.io import atomic_path, write_if_changed

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
        flat["converged"] = None if r["converged"] is None else bool(r["converged"])  # a boolean column
        flat.update({f"config.{k}": v for k, v in flatten(json.loads(r["config"])).items()})
        if r["metrics"]:
            flat.update({f"m.{k}": v for k, v in flatten(json.loads(r["metrics"])).items() if k != "config"})
        rows.append(flat)
    return rows


def one_type(values):
    """A pandas column whose values mix kinds (a study's data sizes [100, "50%"]; bools beside numbers)
    as text, for Parquet's one type per column; missing values stay missing. Other columns unchanged."""
    import pandas as pd

    if values.dtype != object:
        return values
    kinds = {type(v) for v in values[values.notna()]}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values
    return values.map(lambda v: v if pd.isna(v) else str(v))


def export_all(con, out: Path) -> None:
    rows = table_rows(con)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    changed = write_if_changed(out / "results.csv", buf.getvalue())
    parquet = out / "results.parquet"
    if changed or not parquet.exists():
        try:
            import pandas as pd  # optional: with pandas and pyarrow installed, Parquet too

            frame = pd.DataFrame(rows, columns=columns)
            for column in frame.columns:
                frame[column] = one_type(frame[column])
            with atomic_path(parquet) as tmp:
                frame.to_parquet(tmp, index=False)
        except ImportError:
            pass
