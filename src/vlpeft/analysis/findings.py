"""What a study found, in sentences, and where it agrees with Tian et al. (arXiv 2403.08433).

The paper's finding, as its abstract states it: "a natural expectation for PEFTs is that the
performance of various PEFTs is positively related to the data size and fine-tunable parameter size
... such an intuition holds only if the downstream data and task are not consistent with
pre-training. For downstream fine-tuning consistent with pre-training, data size no longer affects
the performance, while the influence of fine-tunable parameter size is not monotonous."

So, per task, from the relation the task declares:
- consistent (same data, same task as pre-training: COCO captioning for BLIP, scenes-caption for the
  tiny BLIP) -> claims 3 and 4 expected: "data size does not matter", "parameter size has a
  non-monotonic effect";
- inconsistent (new data or a new task: VQAv2 for BLIP, whose images are COCO's) -> claims 1 and 2:
  "performance rises with data size", "... with trainable parameters";
- a relation the task does not declare -> no expectation.

The paper's summaries also group the five methods: embedding composition (prompt and prefix
tuning, which add vectors to the sequence) and layer composition (adapters, LoRA, MAM, which add
modules to the layers). `groups` compares the two on each task; the methods compared and their
groups are the catalogue's (`vlpeft.catalogue`), the other trained labels are baselines.

Only the verdicts of `claims.judge_claims` and the cells of `results.aggregate` are read here.
"""

from __future__ import annotations

from typing import Any

from vlpeft import catalogue
from vlpeft.analysis.claims import CLAIMS

EXPECTED = {"consistent": ("data_flat", "param_nonmonotonic"), "inconsistent": ("data_trend", "param_trend")}
OPPOSITE = {"consistent": ("data_trend",), "inconsistent": ("data_flat",)}  # a majority here contradicts the paper
PAPER_SAYS = {
    "consistent": "data size no longer affects performance; the effect of parameter size is not monotonic",
    "inconsistent": "performance rises with data size and with trainable parameters",
}
# claim -> (what holding means, what the opposite verdict means), as sentences say them
PHRASES = {
    "data_trend": ("performance rose with data size", "it fell"),
    "param_trend": ("performance rose with trainable parameters", "it fell"),
    "data_flat": ("data size did not matter", "it did matter"),
    "param_nonmonotonic": ("a budget inside the range was best (a non-monotonic effect)",
                           "an end of the range was best"),
}
SYMBOLS = {"holds": "✓", "does not hold": "✗", "inconclusive": "?", "untestable": "–", "confounded": "⌛"}


def consistency_class(relation: str | None) -> str | None:
    """'consistent', 'inconsistent' or None (undeclared) from a task's relation to pre-training."""
    r = (relation or "").lower()
    if r.startswith("same data, same task"):
        return "consistent"
    if "new data" in r or "new task" in r:
        return "inconsistent"
    return None


def _names(rows: list[dict]) -> str:
    return ", ".join(r["label"] for r in rows)


def _peft(verdicts: list[dict], task: str, length: str | None = None) -> list[dict]:
    compared = catalogue.compared()
    return [v for v in verdicts if v["task"] == task and v.get("length") == length and v["method"] in compared]


def _keys(rows: list[dict]) -> list[tuple[str, str | None]]:
    """(task, training length) pairs, in order; the length is None unless the study has `lengths`."""
    return sorted({(r["task"], r.get("length")) for r in rows}, key=lambda k: (k[0], k[1] or ""))


def _where(task: str, length: str | None) -> str:
    return task + (f" under the {length!r} length" if length else "")


def claim_sentence(rows: list[dict], claim: str) -> str:
    """'data size did not matter for 3 of 5 methods (prompt, prefix, lora); it did matter for adapter;
    inconclusive for mam.' over the verdict rows of one task; confounded verdicts are counted apart
    ('2 confounded by training length (adapter, mam)'), and a rise smaller than δ is said to be one."""
    said, opposite = PHRASES[claim]
    by = {v: [r for r in rows if r[claim]["verdict"] == v] for v in SYMBOLS}
    n = len(rows)
    small = [r for r in by["holds"] if r[claim].get("small_effect")]
    parts = [f"{said} for {len(by['holds'])} of {n} methods" + (f" ({_names(by['holds'])})" if by["holds"] else "")
             + (f", by less than δ for {_names(small)}: a small effect" if small and claim == "data_trend" else "")
             + (f", though it rose by less than δ for {_names(small)}" if small and claim == "data_flat" else "")]
    if by["does not hold"]:
        if claim in ("data_trend", "param_trend"):  # refuted by a falling trend, or by no effect beyond ±δ
            fell = [r for r in by["does not hold"] if r[claim].get("rho", 0) < 0 and r[claim].get("p", 1) < 0.05]
            flat = [r for r in by["does not hold"] if r not in fell]
            parts += ([f"{opposite} for {_names(fell)}"] if fell else []) + (
                [f"it stayed within ±δ for {_names(flat)}"] if flat else [])
        else:
            parts.append(f"{opposite} for {_names(by['does not hold'])}")
    if by["inconclusive"]:
        parts.append(f"inconclusive for {_names(by['inconclusive'])}")
    if by["confounded"]:
        parts.append(f"{len(by['confounded'])} confounded by training length ({_names(by['confounded'])})")
    if by["untestable"]:
        why = sorted({r[claim].get("why") or ("fewer than 3 budgets" if claim == "param_nonmonotonic" else "")
                      for r in by["untestable"]} - {""})
        parts.append(f"untestable for {_names(by['untestable'])}" + (f" ({'; '.join(why)})" if why else ""))
    return "; ".join(parts) + "."


def _count(rows: list[dict], claim: str, verdict: str = "holds") -> int:
    return sum(r[claim]["verdict"] == verdict for r in rows)


def paper_comparison(verdicts: list[dict], relations: dict[str, str]) -> list[dict[str, Any]]:
    """Per task: the paper's expectation for its relation, what this study found for the expected
    claims (methods holding of the five methods run), and `agreement`: 'agrees' (each expected claim
    holds for a majority of methods), 'differs' (an expected claim is refuted, or the opposite claim
    holds, for a majority), 'not shown' (neither), or 'no expectation' (relation not declared)."""
    out = []
    for task, length in _keys(verdicts):
        rows, cls = _peft(verdicts, task, length), consistency_class(relations.get(task))
        row = {"task": task, "length": length, "where": _where(task, length),
               "relation": relations.get(task) or "not declared", "class": cls, "methods": len(rows),
               "paper": PAPER_SAYS.get(cls, "no expectation: declare the task's relation to pre-training"),
               "found": {}, "agreement": "no expectation"}
        if cls and rows:
            n = len(rows)
            row["found"] = {c: _count(rows, c) for c in EXPECTED[cls] + OPPOSITE[cls]}
            row["confounded"] = {c: _count(rows, c, "confounded") for c in EXPECTED[cls] + OPPOSITE[cls]}
            refuted = any(_count(rows, c, "does not hold") > n / 2 for c in EXPECTED[cls]) or \
                any(_count(rows, c) > n / 2 for c in OPPOSITE[cls])
            shown = all(_count(rows, c) > n / 2 for c in EXPECTED[cls])
            row["agreement"] = "differs" if refuted else "agrees" if shown else "not shown"
        out.append(row)
    return out


def found_text(row: dict[str, Any]) -> str:
    """'data size does not matter: 3 of 5; parameter size has a non-monotonic effect: 0 of 5' for a
    `paper_comparison` row."""
    against = OPPOSITE.get(row["class"], ())
    confounded = row.get("confounded") or {}
    return "; ".join(("against it, " if c in against else "") + f"{CLAIMS[c]}: {k} of {row['methods']}"
                     + (f" ({confounded[c]} confounded)" if confounded.get(c) else "")
                     for c, k in row["found"].items()) or "–"


def groups(verdicts: list[dict], cells: list[dict]) -> list[dict[str, Any]]:
    """Per task with both groups run: each group's best cell (mean over seeds, 95 % interval) at the
    task's largest data size, and the claims on which the groups' majority verdicts differ."""
    out = []
    for task, length in _keys(verdicts):
        mine = [c for c in cells if c["task"] == task and c.get("length") == length]
        if not mine:
            continue
        largest = max(c["n_train"] for c in mine)
        best, majority = {}, {}
        for name, methods in catalogue.groups().items():
            at = [c for c in mine if c["method"] in methods and c["n_train"] == largest]
            rows = [v for v in verdicts if v["task"] == task and v.get("length") == length and v["method"] in methods]
            if not at or not rows:
                break
            best[name] = max(at, key=lambda c: c["mean"])
            majority[name] = {c: max(SYMBOLS, key=lambda v: (_count(rows, c, v), v == "holds")) for c in CLAIMS}
        if len(best) < 2:
            continue
        (a, ca), (b, cb) = best.items()
        overlap = ca["ci"][0] <= cb["ci"][1] and cb["ci"][0] <= ca["ci"][1]
        differ = [c for c in CLAIMS if majority[a][c] != majority[b][c]]
        out.append({"task": task, "where": _where(task, length), "size": largest, "best": best, "overlap": overlap,
                    "differ": differ,
                    "majority": majority})
    return out


def group_sentence(g: dict[str, Any]) -> str:
    (a, ca), (b, cb) = g["best"].items()
    hi, lo = ((a, ca), (b, cb)) if ca["mean"] >= cb["mean"] else ((b, cb), (a, ca))
    members = ", ".join(catalogue.groups()[hi[0]])
    score = (f"at {g['size']:,} examples, {hi[0]} ({members}) reached {hi[1]['mean']:.3g} at best "
             f"({hi[1]['label']}, 95% interval [{hi[1]['ci'][0]:.3g}, {hi[1]['ci'][1]:.3g}]) against "
             f"{lo[1]['mean']:.3g} for {lo[0]} ({lo[1]['label']}, [{lo[1]['ci'][0]:.3g}, {lo[1]['ci'][1]:.3g}])"
             + (": the intervals overlap" if g["overlap"] else ": the intervals do not overlap"))
    if g["differ"]:
        what = "; ".join(f"{CLAIMS[c]} ({g['majority'][a][c]} for most of {a}, {g['majority'][b][c]} for {b})"
                         for c in g["differ"])
        return f"On {g['where']}, {score}. The groups' verdicts differ on: {what}."
    return f"On {g['where']}, {score}. Their verdicts agree on every claim."


def task_sentences(verdicts: list[dict], relations: dict[str, str]) -> list[str]:
    """One sentence per task and claim, over the five PEFT methods the study ran on it."""
    out = []
    for task, length in _keys(verdicts):
        rows = _peft(verdicts, task, length)
        if not rows:
            continue
        relation = relations.get(task)
        where = f"On {_where(task, length)}" + (f" ({relation})" if relation else "")
        for claim in CLAIMS:
            out.append(f"{where}: {claim_sentence(rows, claim)}")
    return out


DATA_CLAIMS = ("data_trend", "data_flat")


def length_agreement(verdicts: list[dict]) -> list[dict[str, Any]]:
    """For a study run under several training lengths (`lengths` in the spec: equal epochs, equal
    optimiser steps, ...): per task and method label, the data-size verdicts under each length and
    whether they agree. Empty for a study with one length."""
    by: dict[tuple, dict[str, dict]] = {}
    for v in verdicts:
        if v.get("length"):
            by.setdefault((v["task"], v.get("base_label", v["label"])), {})[v["length"]] = v
    out = []
    for (task, label), per in sorted(by.items()):
        if len(per) < 2:
            continue
        verdict = {length: {c: v[c]["verdict"] for c in DATA_CLAIMS} for length, v in sorted(per.items())}
        out.append({"task": task, "label": label, "method": next(iter(per.values()))["method"], "verdicts": verdict,
                    "agree": len({tuple(d.values()) for d in verdict.values()}) == 1})
    return out


def length_sentences(rows: list[dict[str, Any]]) -> list[str]:
    """'On easyvqa-vqa, the data-size verdicts under the epochs and steps lengths agree for 3 of 5
    methods; they differ for lora (epochs: ...; steps: ...).' per task."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        lengths = sorted({n for r in mine for n in r["verdicts"]})
        agree = [r for r in mine if r["agree"]]
        text = (f"On {task}, the data-size verdicts under the {' and '.join(lengths)} lengths agree for "
                f"{len(agree)} of {len(mine)} methods")
        differ = [r for r in mine if not r["agree"]]
        if differ:
            text += "; they differ for " + "; ".join(
                f"{r['label']} (" + "; ".join(f"{n}: “rises with data” {v['data_trend']}, “data does not matter” "
                                              f"{v['data_flat']}" for n, v in r["verdicts"].items()) + ")"
                for r in differ)
        out.append(text + ".")
    return out
