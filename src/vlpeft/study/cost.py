"""What a study's cells are expected to cost: the order they run in and the ETA.

Cells run longest first, so that the workers finish together instead of one idling while another
runs a long cell at the end (longest-processing-time-first scheduling, Graham 1969). A cell's cost
is read from the study's own finished runs where it can be: the median seconds of the runs most like
it (same task, method label and budget at the same data size, then at any size, then the same task
and label, then the same task), scaled by its step cap relative to theirs. Without such runs it is
its step cap times its batch (`units`), converted to seconds at the study's median rate when any
run has finished. Under `converge` the cap bounds a run's length, and larger subsets have larger
caps, so the first cells of a fresh study are its largest.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from typing import Any

from vlpeft.recipes.config import FinetuneConfig


def units(fields: dict[str, Any], examples: int) -> float:
    """A cell's cost without history: the most training examples it may process (step cap x batch);
    0 for a method with nothing to train (it only evaluates)."""
    from vlpeft.peft import get_method
    from vlpeft.recipes.length import train_steps

    if not get_method(fields["method"]).trains:
        return 0.0
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}  # (a row of an older version may hold more)
    cfg = FinetuneConfig(**{k: v for k, v in fields.items() if k in known})
    return float(train_steps(cfg, examples) * cfg.batch_size)


def _finished(row: dict[str, Any]) -> tuple[float, float] | None:
    """(seconds, units) of a finished row of the store; None when it is not done or has no time."""
    m = json.loads(row["metrics"]) if row.get("status") == "done" and row.get("metrics") else {}
    seconds = (m.get("train_seconds") or 0) + (m.get("eval_seconds") or 0)
    return (seconds, units(json.loads(row["config"]), int(m.get("data_size") or 0))) if seconds > 0 else None


# How alike two cells are, most alike first: the grid coordinates a finished run must share with a cell.
LIKENESS = (("task", "label", "budget", "data_size"), ("task", "label", "budget"), ("task", "label"), ("task",))


def expected_seconds(todo: list[tuple[int, Any, dict]], rows: list[dict[str, Any]]) -> dict[str, float]:
    """cell id -> expected cost for `todo` ((examples, cell, fields)), from the finished `rows` of the
    store (seconds), else in `units` (seconds when any row gives a rate)."""
    done = [(r, t) for r in rows if (t := _finished(r)) is not None]
    rates = [s / u for _, (s, u) in done if u]
    rate = statistics.median(rates) if rates else 1.0
    # per likeness level and whether the run trains: coordinates -> [(seconds, units)]
    like: dict[tuple, list[tuple[float, float]]] = {}
    for r, (s, u) in done:
        for level in LIKENESS:
            like.setdefault((level, bool(u), *(r[k] for k in level)), []).append((s, u))
    out = {}
    for n, cell, fields in todo:
        mine = {"task": cell.task, "label": cell.label, "budget": cell.budget, "data_size": str(cell.data_size)}
        u = units(fields, n)
        out[cell.id] = u * rate
        for level in LIKENESS:
            found = like.get((level, bool(u), *(mine[k] for k in level)))  # trained runs for trained cells
            if found:
                scale = u / statistics.median(v for _, v in found) if u else 1.0
                out[cell.id] = statistics.median(s for s, _ in found) * scale
                break
    return out


def longest_first(todo: list[tuple[int, Any, dict]], cost: dict[str, float]) -> list[tuple[int, Any, dict]]:
    """`todo` ordered by expected cost, the longest first (ties: the larger subset, then the id)."""
    return sorted(todo, key=lambda t: (-cost[t[1].id], -t[0], t[1].id))


def eta_seconds(elapsed: float, cost: dict[str, float], finished: set[str]) -> float | None:
    """Seconds left: the expected cost of the cells not finished, at the pace the finished ones went
    (elapsed wall time per unit of their expected cost, so parallel workers are counted)."""
    done = sum(cost[i] for i in finished if i in cost)
    if not done:
        return None
    return elapsed * sum(c for i, c in cost.items() if i not in finished) / done


__all__ = ["units", "expected_seconds", "longest_first", "eta_seconds"]
