"""Advice from a study: which method and budget to use for a task, a data size and a parameter cap.

Candidates are the study's cells (method label x budget) at the study data size nearest to the asked
one on a log scale, with at most `max_params` trainable parameters. They are ranked by their mean
*validation* score over seeds (so the choice does not peek at test scores); the expected score is
the chosen cell's mean test score with its 95 % bootstrap interval over seeds, so a runner-up may
show a higher expected score than the recommendation. Cells with a run that had not converged
(still improving when it stopped) are left out, and counted (`dropped`): their scores measure the
training length, not the method. A data size outside the study's range by up
to `EXTRAPOLATION_LIMIT` times is answered from the nearest size and said to be an extrapolation;
further out it is refused: the study says nothing there.
"""

from __future__ import annotations

import math
from typing import Any

from vlpeft.errors import UserError, did_you_mean

EXTRAPOLATION_LIMIT = 10  # how far outside the study's data sizes advice is still given (as a factor)


def advise(cells: list[dict[str, Any]], task: str, data_size: int | float | str,
           max_params: int | None = None) -> dict[str, Any]:
    """`data_size`: examples you have, a count (2000) or a fraction of the task's training pool
    (0.1, "10%")."""
    from vlpeft.data.subsets import parse_size

    tasks = sorted({c["task"] for c in cells})
    if task not in tasks:
        raise UserError(f"advise: the study has no finished runs of task {task!r}{did_you_mean(task, tasks)} "
                        f"(it has: {', '.join(tasks) or 'none'})")
    mine = [c for c in cells if c["task"] == task]
    if str(data_size).strip().lstrip("-").isdigit() and int(data_size) <= 0:
        raise UserError(f"advise: --data-size must be a positive number of examples, got {data_size}")
    size = parse_size(data_size, "advise: --data-size")
    if size.count is not None:
        data_size = size.count
    else:  # a fraction of the task's training pool, which a count is not bounded by
        pool = next((round(c["n_train"] / c["fraction"]) for c in mine if c.get("fraction")), None)
        if pool is None:
            raise UserError(f"advise: --data-size {data_size!r}: the study does not record {task}'s training pool; "
                            f"give a count of examples")
        data_size = size.of(pool, "advise: --data-size")
    sizes = sorted({c["n_train"] for c in mine})
    factor = max(sizes[0] / data_size, data_size / sizes[-1])
    if factor > EXTRAPOLATION_LIMIT:
        raise UserError(
            f"advise: --data-size {data_size:,} is {factor:,.0f}x outside the sizes this study ran on {task} "
            f"({sizes[0]:,}-{sizes[-1]:,} examples); it says nothing that far out: run a study that "
            f"reaches it"
        )
    nearest = min(sizes, key=lambda n: (abs(math.log(n) - math.log(data_size)), n))
    at_size = [c for c in mine if c["n_train"] == nearest and c["method"] != "frozen"]
    pool = [c for c in at_size if not c.get("not_converged")]
    dropped = len(at_size) - len(pool)
    if max_params is not None:
        pool = [c for c in pool if c["params"] <= max_params]
        if not pool:
            smallest = min((c["params"] for c in mine if c["params"] > 0), default=0)
            raise UserError(f"advise: no method of the study fits --max-params {max_params:,} "
                            f"(the smallest trained budget has {smallest:,} parameters)")
    if not pool:
        if dropped:
            raise UserError(f"advise: every cell of {task} at {nearest:,} examples had a run still improving when it "
                            f"stopped ({dropped} cell(s)): the study cannot rank them; train longer (a larger "
                            f"max_steps)")
        raise UserError(f"advise: the study trained no method on {task} (only the frozen model)")
    ranked = sorted(pool, key=lambda c: (-c["val"], c["params"]))
    frozen = next((c for c in mine if c["method"] == "frozen" and c["n_train"] == nearest), None)

    def pick(c):
        return None if c is None else {"label": c["label"], "method": c["method"], "budget": c["budget"],
                                       "knob": c["knob"], "knob_value": c["knob_value"], "params": c["params"],
                                       "percent": c["percent"], "expected": c["mean"], "ci": list(c["ci"]),
                                       "val": c["val"], "seeds": c["seeds"]}

    return {"task": task, "metric": mine[0]["metric"], "asked_size": data_size, "study_size": nearest,
            "study_sizes": sizes, "extrapolation": factor if factor > 1 else None, "max_params": max_params,
            "recommended": pick(ranked[0]),
            "runner_up": pick(ranked[1] if len(ranked) > 1 else None), "frozen": pick(frozen),
            "candidates": len(ranked), "dropped": dropped}


def advice_text(a: dict[str, Any]) -> str:
    r, u = a["recommended"], a["runner_up"]

    def name(c):
        return (
            f"{c['label']}"
            + (f" {c['knob']}={c['knob_value']}" if c["knob"] else "")
            + f" ({c['params']:,} params, {c['percent']:.2f}% of backbone)"
        )

    lines = [f"task {a['task']}, {a['asked_size']:,} examples (study size used: {a['study_size']:,}"
             + (f", at most {a['max_params']:,} params" if a["max_params"] else "") + "):",
             f"  recommended: {name(r)}: validation {r['val']:.4g}; expected test {a['metric']} {r['expected']:.4g} "
             f"[95% CI {r['ci'][0]:.4g}, {r['ci'][1]:.4g}] over {r['seeds']} seed(s)"]
    if u:
        lines.append(f"  runner-up:   {name(u)}: validation {u['val']:.4g}; expected test {u['expected']:.4g} "
                     f"[{u['ci'][0]:.4g}, {u['ci'][1]:.4g}]")
    lines.append("  (ranked by mean validation score: test scores are reported, never used to choose)")
    if a.get("dropped"):
        lines.append(f"  ({a['dropped']} cell(s) left out: a run there was still improving when it stopped, so its "
                     f"score measures the training length)")
    if a["frozen"]:
        lines.append(f"  (frozen model, no training: {a['frozen']['expected']:.4g})")
    if a.get("extrapolation"):
        lines.append(f"  warning: {a['asked_size']:,} examples is {a['extrapolation']:.1f}x outside the study's sizes "
                     f"({', '.join(map(str, a['study_sizes']))}): this extrapolates from {a['study_size']:,}")
    elif a["study_size"] != a["asked_size"]:
        lines.append(f"  note: the study ran {', '.join(map(str, a['study_sizes']))} examples; the nearest was used")
    return "\n".join(lines)
