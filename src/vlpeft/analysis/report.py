"""The study report: report.md and one self-contained report.html (figures embedded), rebuilt from
results.sqlite (plus the consistency measures stored beside the results by the study).

Sections, in reading order: what the study found (one sentence per task and claim), the comparison
with Tian et al., embedding vs layer composition (`findings.py`), the verdict matrix (a symbol and a
colour per verdict) and the statistics behind it, the setup in words, the figures per task with a
caption each, the advice, whether the runs learned at all (cells no better than the frozen model or
the majority answer), consistency with pre-training, every cell and every run (sortable in the
HTML). No table cell holds JSON. Files are written atomically and only when changed.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft.analysis import advise as advise_mod
from vlpeft.analysis import claims as claims_mod
from vlpeft.analysis import consistency as cons
from vlpeft.analysis import converged, figures, findings
from vlpeft.analysis import predict as predict_mod
from vlpeft.analysis.results import aggregate, load_runs, read_store
from vlpeft.errors import UserError
from vlpeft.io import write_if_changed
from vlpeft.store import StudyMeta


def _fmt(v, digits: int = 3) -> str:
    """A number for a table: `digits` significant digits, never an exponent for a large one (a median
    of 1,187.5 steps reads 1,188, not 1.19e+03)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) >= 10 ** digits and np.isfinite(v):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def verdict_cell(claim: str, d: dict) -> str:
    v = d["verdict"]
    if v == "confounded":
        why = []
        if d.get("cells_not_converged"):
            why.append(f"{d['cells_not_converged']} of {d['cells']} cells had a run still improving when it stopped")
        if "length check" in d.get("confounded_by", []):
            why.append("the length check changes it")
        return f"confounded: {'; '.join(why)}; as measured: " + verdict_cell(claim, {**d, "verdict": d["measured"]})
    if d.get("small_effect"):
        v += " (a rise smaller than δ: both “rises with data” and “data does not matter” hold)"
    if d.get("length_robust"):
        v += (f" ({d['cells_not_converged']} of {d['cells']} cells still improving where more training could only "
              f"strengthen it)")
    if claim in ("data_trend", "param_trend") and "rho" in d:
        return f"{v} (ρ={d['rho']:.2f}, p={d['p']:.3f}, adjusted {_fmt(d.get('p_adjusted'))}, " \
               f"slope {d['slope']:+.3g}/10×)"
    if claim == "data_flat" and "effect" in d and not np.isnan(d["effect"]):
        return (f"{v} (Δ={d['effect']:+.3g}, 90% CI [{d['ci90'][0]:.3g}, {d['ci90'][1]:.3g}], δ=±{d['margin']:.3g}; "
                f"p equivalent {_fmt(d.get('p_adjusted'))}, different {_fmt(d.get('p_against_adjusted'))}, adjusted)")
    if claim == "param_nonmonotonic" and "levels" in d:
        if v == "untestable":
            return f"untestable ({d['levels']} budgets; needs ≥ 3)"
        return (f"{v} (best at {d['best_params']:,.0f} params; gains {d['gain_low']:+.3g} / {d['gain_high']:+.3g}, "
                f"p {d['p_low']:.3f} / {d['p_high']:.3f})")
    return f"{v}" + (f" ({d['why']})" if d.get("why") else "")


def build(
    folder: str | Path, delta: float = claims_mod.DEFAULT_DELTA, consistency: dict | None = None
) -> dict[str, Any]:
    """Write report.md, report.html and figures/ into the study folder; returns the verdict rows."""
    folder = Path(folder)
    meta, rows = read_store(folder)
    runs = load_runs(folder, rows)
    checks = load_runs(folder, rows, checks=True)
    cells = aggregate(runs)
    verdicts = claims_mod.judge_claims(runs, delta=delta, checks=checks)
    if consistency is None:
        consistency = meta.consistency
    zs = cons.zero_shot(cells)
    sens = predict_mod.sensitivity(verdicts, cells)
    points = [{"task": t, "consistency": zs.get(t), **sens.get(t, {}),
               predict_mod.PREDICTOR: consistency.get(t, {}).get(predict_mod.PREDICTOR),
               "relation": next((c["relation"] for c in cells if c["task"] == t), "")} for t in sorted(sens)]
    figs = figures.all_figures(cells, points, folder / "figures") if cells else {}
    tasks = sorted({c["task"] for c in cells})
    advice = []
    for task in tasks:
        for n in sorted({c["n_train"] for c in cells if c["task"] == task}):
            try:
                advice.append(advise_mod.advise(cells, task, n))
            except UserError:  # e.g. only the frozen model ran on this task
                pass
    context = {"meta": meta, "rows": rows, "runs": runs, "checks": checks, "cells": cells, "verdicts": verdicts,
               "zero_shot": zs,
               "sensitivity": sens, "consistency": consistency, "figures": figs, "advice": advice, "delta": delta,
               "setup": setup(meta, rows, runs)}
    secs = sections(context)
    write_claims(folder, claims_mod.table(verdicts))
    write_if_changed(folder / "report.md", markdown(context, secs))
    write_if_changed(folder / "report.html", to_html(context, secs, folder))
    return {"verdicts": verdicts, "cells": cells, "summary": claims_mod.summary(verdicts), "setup": context["setup"]}


# FinetuneConfig's training-length fields
LENGTH_FIELDS = ("length_policy", "epochs", "min_steps", "min_epochs", "steps", "max_steps", "max_epochs",
                 "eval_every", "patience", "patience_ratio", "noise_z")


def write_claims(folder: Path, table: list[dict[str, Any]]) -> None:
    """claims.csv (and claims.parquet with pandas and pyarrow): one row per task x method label x
    length x claim, the rows the verdict matrix is drawn from. Written atomically, only when changed."""
    import csv
    import io

    from vlpeft.io import atomic_path

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(claims_mod.TABLE_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in table)
    changed = write_if_changed(folder / "claims.csv", buf.getvalue())
    if changed or not (folder / "claims.parquet").exists():
        try:
            import pandas as pd

            frame = pd.DataFrame(table, columns=list(claims_mod.TABLE_COLUMNS))
            with atomic_path(folder / "claims.parquet") as tmp:
                frame.to_parquet(tmp, index=False)
        except ImportError:
            pass


def _budget_order(b) -> tuple:
    """Knob values in numeric order (2 before 16), then parameter targets and '–'."""
    s = str(b)
    return (0, int(s), s) if s.isdigit() else (1, 0, s)


def setup(meta: StudyMeta, rows: list[dict], runs: list[dict]) -> dict[str, Any]:
    """What the study is: from the store's meta and every row (finished or not), so a study with no
    finished run yet still describes its grid; figures of finished runs (environment) where any. The
    pre-training is the record the study kept in its store (never read from the checkpoint folder)."""
    ident, spec, consistency = meta.identity, meta.spec, meta.consistency
    env, pretrain, length = {}, None, {}
    for r in rows:
        if r["metrics"] and not r.get("length_check"):  # a finished run records the settings in effect
            m = json.loads(r["metrics"])
            env = m.get("environment", {})
            length = {k: m["config"][k] for k in LENGTH_FIELDS
                      if k in m.get("config", {})}
            break
    inference = {}  # task -> (kind, options) as its finished runs recorded them
    for r in rows:
        if r["metrics"]:
            m = json.loads(r["metrics"])
            inference.setdefault(m.get("task"), (m.get("task_kind"), m.get("task_options") or {}))
    model = ident.get("model")
    if meta.pretrain:
        pretrain = {k: meta.pretrain.get(k) for k in ("steps", "seed", "objectives", "train_seconds", "config", "data")}
    grid = defaultdict(set)
    for r in rows:
        grid[r["label"]].add(r["budget"] or "–")
    relation = {r["task"]: r["relation"] for r in runs}
    configs = [json.loads(r["config"]) for r in rows if r.get("config")]
    status = defaultdict(int)
    for r in rows:
        status[r["status"]] += 1
    val_s = [r["val_seconds"] for r in runs if r.get("val_seconds") is not None]
    test_s = [r["eval_seconds"] for r in runs if r.get("eval_seconds") is not None]
    return {"name": meta.name, "model": model, "checkpoints": ident.get("checkpoints"),
            "eval_cost": {"validation": float(np.median(val_s)) if val_s else None,
                          "test": float(np.median(test_s)) if test_s else None},
            "inference": inference,
            "training": ident.get("training", {}), "task_training": ident.get("task_training", {}), "spec": spec,
            "environment": env, "pretrain": pretrain,
            "tasks": {t: relation.get(t) or consistency.get(t, {}).get("relation") or "–"
                      for t in sorted({r["task"] for r in rows})},
            "grid": {k: sorted(v, key=_budget_order) for k, v in grid.items()},
            "sizes": sorted({r["n_train"] for r in runs}) or sorted({r["data_size"] for r in rows}, key=str),
            "seeds": sorted({r["seed"] for r in rows}),
            "runs": len(rows), "done": status.get("done", 0), "status": dict(status),
            "failed": [(r["id"], r["reason"]) for r in rows if r["status"] == "failed"],
            "length": length or {k: v for k, v in ident.get("training", {}).items()
                                 if k in LENGTH_FIELDS},
            "lengths": {n: {**{k: v for k, v in ident.get("training", {}).items()
                               if k in LENGTH_FIELDS[1:]}, **f}
                        for n, f in (ident.get("lengths") or {}).items()},
            "length_policy": length.get("length_policy") or ident.get("training", {}).get("length_policy")
            or next((c.get("length_policy") for c in configs if c.get("length_policy")), None)}


def _table(header: list[str], body: list[list]) -> list[str]:
    return ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(_md_cell(_text(c)) for c in r) + " |" for r in body]


def _md_cell(text: str) -> str:
    """Text as one Markdown table cell: a '|' escaped, line breaks as spaces (a label or task name
    holding either would otherwise split the row)."""
    return " ".join(str(text).replace("|", "\\|").split("\n")).replace("\r", " ")


def _text(cell) -> str:
    """A table cell is a string, or (text, css class, tooltip) for the verdict matrix."""
    return cell[0] if isinstance(cell, tuple) else str(cell)


def inference_text(kind: str | None, opts: dict) -> str:
    """How a task's predictions are made, in words, from its kind and its recorded options."""
    if kind == "caption":
        beams = opts.get("num_beams", 1)
        how = "greedy decoding" if beams == 1 else f"beam search ({beams} beams)"
        return how + (f" after the prompt \"{opts['prompt']}\"" if opts.get("prompt") else "")
    if kind == "vqa":
        if opts.get("inference") == "generate":
            return "greedy generation of a free answer"
        return (f"BLIP's ranking of the candidate answers by likelihood (the {opts.get('rank_k', 128)} with the "
                f"likeliest first token, where there are more)")
    return _pairs(opts)


def _pairs(d: dict) -> str:
    """{'batch_size': 32, 'val_limit': 200} -> 'batch size 32, val limit 200' (never JSON)."""
    def value(v):
        if isinstance(v, dict):
            return "(" + _pairs(v) + ")"
        if isinstance(v, (list, tuple)):
            return "/".join(map(str, v))
        return _fmt(v)
    return ", ".join(f"{k.replace('_', ' ')} {value(v)}" for k, v in sorted(d.items())) or "–"


LENGTH_WORDS = {
    "converge": "until validation stops improving beyond its noise (early stopping): an evaluation every "
                "{eval_every} steps and at step 0, the best weights kept, stopped after {patience} evaluations "
                "without an improvement above {noise_z} standard error(s), not before {min_steps} steps, "
                "{min_epochs} passes over the training subset (at most half the cap) nor {patience_ratio}× the "
                "best evaluation's step, capped at {max_steps} steps; learning rate constant after its warm-up",
    "epochs": "equal epochs: {epochs} passes over every data subset (more data, more steps)",
    "steps": "equal optimiser steps (compute-matched): {steps} steps at every data size",
    "epochs_min_steps": "{epochs} epochs, at least {min_steps} optimiser steps",
}


def length_text(policy: str | None, length: dict, name: bool = False) -> str:
    """'steps: equal optimiser steps (compute-matched): 300 steps at every data size'; with `name`,
    `policy` is a name of the spec's `lengths` and `length` its fields."""
    if name:
        return f"{policy} = " + length_text(length.get("length_policy"), length)
    if policy is None:
        return "–"
    # runs recorded before min_epochs existed had none (0)
    values = {k: "?" for k in LENGTH_FIELDS} | {"min_epochs": 0} | {k: v for k, v in length.items() if v is not None}
    return f"{policy}: " + LENGTH_WORDS.get(policy, "{}").format(**values)


LEARN_HEADROOM = 3  # headroom (in δ) above which a flagged cell reads as undertrained


def learn_reading(check: dict) -> str:
    """What a row of the did-it-learn table means: 'learned' (no cell flagged), 'undertrained' (flagged
    although fine-tuning has room above the baseline) or 'baseline near the best' (the frozen model or
    the majority answer is already within a few δ of the task's best cell)."""
    if not check["flagged"]:
        return "learned"
    return "undertrained" if check["headroom"] >= LEARN_HEADROOM * check["margin"] else "baseline near the best"


def _seconds(x) -> str:
    """1440.3 -> '1,440 s (24 min)'."""
    if not isinstance(x, (int, float)):
        return "–"
    return f"{x:,.0f} s" + (f" ({x / 60:.0f} min)" if x >= 120 else "")


def _method_settings(spec: dict) -> list[str]:
    """'adapter: lr 0.01', 'prefix: on easyvqa-vqa steps 600': what a label sets beyond its budgets."""
    out = []
    for label, g in (spec.get("methods") or {}).items():
        parts = ([f"lr {', '.join(f'{x:g}' for x in g['lr'])}"] if g.get("lr") else []) + (
            [_pairs(g["training"])] if g.get("training") else []) + [
            f"on {t} {_pairs(v)}" for t, v in sorted((g.get("task_training") or {}).items())]
        if parts:
            out.append(f"{label}: " + ", ".join(parts))
    return out


def setup_rows(s: dict) -> list[list[str]]:
    """The setup as readable rows: words and numbers, no JSON."""
    env, pre = s["environment"], s["pretrain"]
    other = {k: v for k, v in s["training"].items() if k not in LENGTH_FIELDS}
    versions = {"vlpeft": env.get("vlpeft"), "python": env.get("python"), **(env.get("versions") or {})}
    rows = [
        ["study", _fmt(s["name"])],
        ["model", _fmt(s["model"])],
        *([["checkpoint digest", "; ".join(f"{k}: {v}" for k, v in sorted(s["checkpoints"].items()))]]
          if s["checkpoints"] else []),
        ["pre-training", f"{pre['steps']:,} steps in {_seconds(pre.get('train_seconds'))}, "
                         f"seed {_fmt(pre.get('seed'))}; objectives {', '.join(pre.get('objectives') or []) or '–'}"
         if pre else "–"],
        ["tasks (relation to pre-training)", "; ".join(f"{k} ({v})" for k, v in sorted(s["tasks"].items()))],
        ["methods × budgets", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in s["grid"].items())],
        *([["per-method settings", "; ".join(method_settings)]] if (method_settings := _method_settings(s["spec"]))
          else []),
        ["data sizes (examples)", ", ".join(f"{n:,}" if isinstance(n, int) else str(n) for n in s["sizes"])],
        ["seeds", ", ".join(map(str, s["seeds"]))],
        ["training length", "; ".join(length_text(n, v, name=True) for n, v in s["lengths"].items())
         + " (the grid runs under each)" if s["lengths"] else length_text(s["length_policy"], s["length"])],
        ["other training settings", _pairs(other)],
        *([["length check", f"the smallest and the largest data size at each method's middle budget (first seed) "
                            f"re-run {s['spec']['length_check']}× longer (cap and patience, or a fixed length)"]]
          if (s["spec"] or {}).get("length_check") else []),
        *([["inference (validation and test alike)", "; ".join(f"{t}: {inference_text(*v)}"
                                                              for t, v in sorted(s["inference"].items()))]]
          if s.get("inference") else []),
        ["evaluation per run (median)", f"validation {_fmt(s['eval_cost']['validation'])} s over the whole run "
                                        f"(step 0 included), test {_fmt(s['eval_cost']['test'])} s"],
        ["multiple testing", "Benjamini–Hochberg over every test of the report (false discovery rate α = "
                             f"{claims_mod.stats.ALPHA}); the raw p-values are in claims.csv beside the adjusted"],
        *([["per-task training", "; ".join(f"{k}: {_pairs(v)}" for k, v in sorted(s["task_training"].items()))]]
          if s["task_training"] else []),
        ["runs", f"{s['done']} done of {s['runs']}: " + ", ".join(f"{n} {k}" for k, n in sorted(s["status"].items()))],
        ["hardware", f"{_fmt(env.get('host'))} {_fmt(env.get('machine'))}, device {_fmt(env.get('device'))}, "
                     f"{_fmt(env.get('threads'))} torch thread(s) per run" if env else "– (no finished run yet)"],
        ["versions", ", ".join(f"{k} {v}" for k, v in versions.items() if v) + (f"; git {env['git_commit']}"
                                                                              if env.get("git_commit") else "")
         if env else "– (no finished run yet)"],
    ]
    return rows


SHORT = {"data_trend": "rises with data", "param_trend": "rises with parameters", "data_flat": "data does not matter",
         "param_nonmonotonic": "parameters non-monotonic"}


def matrix_cell(claim: str, d: dict) -> tuple[str, str, str]:
    v = d["verdict"]
    symbol = findings.SYMBOLS[v] + (" <δ" if d.get("small_effect") else "")
    return (symbol, "v-" + v.replace(" ", "-"), f"{v}: {verdict_cell(claim, d)}")


CAPTIONS = {
    "data": "Score against training examples (log scale), each method at its best budget: a rising line means "
            "data size matters for that method; a flat one, that it does not.",
    "params": "Score against trainable parameters (log scale), one panel per data size: a peak inside the range is "
              "a non-monotonic effect of parameter size; a steady rise, that more parameters pay.",
    "pareto": "Score against trainable parameters at the largest data size: methods on the upper-left front give "
              "the most score per parameter.",
    "heatmap": "Mean score of each method's best budget at each data size: read a row left to right for the effect "
               "of data.",
    "consistency": "Each task by its consistency with pre-training (the checkpoint's loss on the task's targets, "
                   "or zero-shot over best fine-tuned score where that loss was not measured) against its gain per "
                   "tenfold data (left) and parameters (right), with the least-squares line and its 90 % "
                   "prediction interval from three tasks on (what `vlpeft advise --model` predicts a new task "
                   "from): the paper expects consistent tasks to gain little from data.",
}


def caption(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return CAPTIONS.get(stem.rsplit("-", 1)[-1], "")


def sections(ctx) -> list[dict[str, Any]]:
    """The report's sections in order, shared by the Markdown and the HTML. Each is a dict: title,
    kind ('text': bullets; 'table': head, body, note; 'figures'), and `collapsed` (HTML: folded)."""
    s, verdicts, cells = ctx["setup"], ctx["verdicts"], ctx["cells"]
    relations = s["tasks"]
    out: list[dict[str, Any]] = []
    lengths = findings.length_agreement(verdicts)
    noise = converged.noise(ctx["runs"], ctx["delta"])
    checked = converged.length_check(verdicts)
    factor = (s["spec"] or {}).get("length_check") or None
    sentences = findings.task_sentences(verdicts, relations) + findings.length_sentences(lengths) + [
        converged.length_check_sentence(r, factor) for r in checked] + [
        converged.noise_sentence(r) for r in noise if r["too_small"]]
    out.append({"title": "What this study found", "kind": "text", "items": sentences or [
        "No PEFT method has finished runs yet: nothing to report. The setup below describes the grid."]})
    comparison = findings.paper_comparison(verdicts, relations)
    out.append({"title": "Compared with Tian et al. (2024)", "kind": "table",
                "head": ["task", "relation", "Tian et al. expect", "this study: methods holding", "agreement"],
                "body": [[r["where"], r["relation"], r["paper"], findings.found_text(r), r["agreement"]]
                         for r in comparison],
                "note": "Tian et al. (arXiv 2403.08433): performance rises with data size and trainable parameters "
                        "only when the downstream data and task are not consistent with pre-training; on a consistent "
                        "task, data size no longer matters and the effect of parameter size is not monotonic. "
                        "'agrees': each expected claim holds for most of the five PEFT methods; 'differs': most "
                        "refute one, or show its opposite; 'not shown': neither."})
    out.append({"title": "Embedding composition vs layer composition", "kind": "text",
                "items": [findings.group_sentence(g) for g in findings.groups(verdicts, cells)] or [
                    "Needs a task with finished runs of both groups: prompt or prefix tuning, and an adapter, LoRA "
                    "or MAM."]})
    if lengths:
        names = sorted({n for r in lengths for n in r["verdicts"]})
        out.append({"title": "Training length: do the data-size verdicts agree?", "kind": "table",
                    "head": ["task", "method"] + [f"{n}: {SHORT[c]}" for n in names for c in findings.DATA_CLAIMS]
                    + ["agree"],
                    "body": [[r["task"], r["label"]] + [
                        matrix_cell(c, {"verdict": r["verdicts"].get(n, {}).get(c, "untestable")})
                        for n in names for c in findings.DATA_CLAIMS] + ["yes" if r["agree"] else "no"]
                        for r in lengths],
                    "note": "The study ran its grid under each training length of its spec (`lengths`): "
                            + "; ".join(length_text(n, s["lengths"].get(n, {}), name=True) for n in names)
                            + ". Where the verdicts differ, the data-size effect depends on how long the "
                            "smaller subsets are trained."})
    out.append({"title": "Verdict matrix", "kind": "table", "head": ["task", "method"] + list(SHORT.values()),
                "body": matrix_rows(verdicts),
                "note": "✓ holds · ✗ does not hold · ? inconclusive · – untestable · ⌛ confounded: the test rests on "
                        "a run that was still improving when it stopped, or the length check changes it (its "
                        "verdict as measured is in the next table) · <δ: performance rises with data, by less than "
                        "δ (both “rises with data” and “data does not matter” hold: a small effect). The claims: "
                        + "; ".join(f"{SHORT[c]} = “{t}”" for c, t in claims_mod.CLAIMS.items())
                        + ". Each verdict's statistics are in the next table (and in the HTML, on hover); every row is "
                        "in claims.csv."})
    out.append({"title": "Statistics behind each verdict", "kind": "table", "collapsed": True,
                "head": ["task", "method"] + list(claims_mod.CLAIMS.values()),
                "body": [[v["task"], v["label"]] + [verdict_cell(c, v[c]) for c in claims_mod.CLAIMS]
                         for v in verdicts],
                "note": f"Permutation and bootstrap tests; the false discovery rate over this report's "
                        f"{len(claims_mod.family(verdicts))} tests is held at α = {claims_mod.stats.ALPHA} "
                        "(Benjamini–Hochberg: verdicts use the adjusted p-values; claims.csv has both). "
                        f"δ = {ctx['delta']:.0%} of the task's best cell mean. Slopes are score change per tenfold "
                        "more data (or parameters), inside each budget (or data size)."})
    out.append({"title": "Setup", "kind": "table", "head": ["item", "value"], "body": setup_rows(s), "note": ""})
    out.append({"title": "Figures", "kind": "figures"})
    adv = []
    for a in ctx["advice"]:
        r, u = a["recommended"], a["runner_up"]
        adv.append([a["task"], f"{a['study_size']:,}", f"{r['label']} {r['budget'] or ''}".strip(),
                    f"{r['expected']:.3g} [{r['ci'][0]:.3g}, {r['ci'][1]:.3g}]", f"{r['params']:,}",
                    f"{u['label']} {u['budget'] or ''} ({u['expected']:.3g})".strip() if u else "–"])
    out.append({"title": "Advice (ranked on validation, expected test score with 95% CI)", "kind": "table",
                "head": ["task", "examples", "recommended", "expected score", "params", "runner-up"], "body": adv,
                "note": "`vlpeft advise DIR --task T --data-size N [--max-params P]` answers for other sizes and "
                        "caps."})
    checks = claims_mod.baseline_check(ctx["runs"], ctx["delta"])
    out.append({"title": "Did the runs learn? Cells no better than the baseline", "kind": "table",
                "head": ["task", "method", "cells flagged", "headroom: task best − baseline", "reading",
                         "flagged (budget/examples: mean)"],
                "body": [[c["task"], c["label"], f"{len(c['flagged'])} of {c['cells']}",
                          f"{c['headroom']:.3g} (δ {c['margin']:.3g})", learn_reading(c),
                          ", ".join(f"{_fmt(f['budget'])}/{f['size']} ({f['mean']:.3g})" for f in c["flagged"]) or "–"]
                         for c in checks],
                "note": "Baseline: the better of the frozen model's score at that data size and the majority answer "
                        "(VQA); a cell is flagged when its mean is below baseline + δ. Reading: 'undertrained' when "
                        f"the headroom is at least {LEARN_HEADROOM:g} δ; 'baseline near the best' below that. "
                        "Where the headroom is many δ, "
                        "flagged cells learned nothing measurable (train longer: `task_training.TASK.steps`, or one "
                        "method's `methods.LABEL.task_training`), and "
                        "the claims about that method describe undertrained runs, not the method; where it is about "
                        "δ, the frozen model already does about as well as fine-tuning."})
    conv = converged.table(ctx["runs"])
    out.append({"title": "Did the runs converge?", "kind": "table",
                "head": ["task", "method", "runs converged", "still improving", "flat at start", "too short",
                         "reached the cap", "median steps to best", "median steps run"],
                "body": [[c["task"], c["label"], f"{c['converged']} of {c['runs']}",
                          str(c["states"].get("still_improving", 0)), str(c["states"].get("flat_at_start", 0)),
                          str(c["states"].get("too_short", 0)), str(c["capped"]),
                          _fmt(c["median_steps_to_best"]), _fmt(c["median_steps"])] for c in conv],
                "note": "A run converged when its validation score had not improved beyond its own noise (one "
                        "standard error by default: binomial for VQA accuracy, a bootstrap over images for "
                        "CIDEr-D) over its last `patience` evaluations; still improving when those evaluations "
                        "rose above everything before them; flat at start when validation never left its starting "
                        "score while the training loss kept falling; too short with fewer evaluations than a "
                        "judgement needs. A claim resting on a run that did not converge is ⌛ confounded."})
    out.append({"title": "Can the validation set tell δ from noise?", "kind": "table",
                "head": ["task", "validation examples", "median standard error", "δ", "reading"],
                "body": [[r["task"], f"{r['n_val']:,}", _fmt(r["se"]), _fmt(r["delta"]),
                          "–" if r["too_small"] is None else
                          f"too small: about {r['needed']:,} examples would do" if r["too_small"] else "yes"]
                         for r in noise],
                "note": f"The standard error is the run's best validation score's; the split is too small when δ is "
                        f"under {converged.NOISE_RATIO:g} standard errors (early stopping and selection would then "
                        "decide at the level of noise)."})
    cons_rows = []
    for task in sorted(ctx["sensitivity"]):
        m, sens = ctx["consistency"].get(task, {}), ctx["sensitivity"][task]
        cons_rows.append([task, relations.get(task, ""), _fmt(ctx["zero_shot"].get(task)), _fmt(m.get("lm_loss")),
                          _fmt(m.get("feature_distance")), _fmt(sens["data_sensitivity"]),
                          _fmt(sens["param_sensitivity"])])
    out.append({"title": "Consistency with pre-training", "kind": "table",
                "head": ["task", "relation", "zero-shot / best", "LM loss of the checkpoint", "image-feature distance",
                         "data-size sensitivity", "parameter sensitivity"], "body": cons_rows,
                "note": "Zero-shot: the frozen model's score over the best fine-tuned score. LM loss: the pre-trained "
                        "model's loss on the task's targets. Distance: ITC image features of the task vs the "
                        "pre-training scenes, in units of the pre-training spread. Sensitivities: mean slope per "
                        "tenfold, as a share of the best score."})
    out.append({"title": "Every cell (mean over seeds)", "kind": "table",
                "head": ["task", "method", "budget", "examples", "mean", "95% CI", "seeds", "params", "% backbone",
                         "÷ full"],
                "body": [[c["task"], c["label"], _fmt(c["budget"]), str(c["n_train"]), f"{c['mean']:.4g}",
                          f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]", str(c["seeds"]), f"{c['params']:,}",
                          f"{c['percent']:.3f}", _fmt(c["relative_to_full"])] for c in cells], "note": ""})
    out.append({"title": "Every run", "kind": "table",
                "head": ["id", "task", "method", "budget", "examples", "seed", "lr", "test", "val", "params",
                         "train s"],
                "body": [[r["id"], r["task"], r["label"], _fmt(r["budget"]), str(r["n_train"]), str(r["seed"]),
                          _fmt(r["lr"]), f"{r['test']:.4g}", f"{r['val']:.4g}", f"{r['params']:,}",
                          _fmt(r["seconds"])] for r in ctx["runs"]], "note": ""})
    if s["failed"]:
        out.append({"title": "Failed runs", "kind": "table", "head": ["id", "reason"],
                    "body": [[i, r or ""] for i, r in s["failed"]], "note": ""})
    return out


def matrix_rows(verdicts: list[dict]) -> list[list]:
    """The verdict matrix from claims.table's rows (the rows of claims.csv), one row per task x label."""
    by: dict[tuple, dict] = {}
    nested = {(v["task"], v["label"]): v for v in verdicts}
    for r in claims_mod.table(verdicts):
        by.setdefault((r["task"], r["label"]), {})[r["claim"]] = r
    return [[task, label] + [matrix_cell(c, {**nested[task, label][c], "verdict": per[c]["verdict"]})
                             for c in claims_mod.CLAIMS] for (task, label), per in by.items()]


def _figure_groups(ctx) -> list[tuple[str, list[str]]]:
    """(heading, PNG files) per task, then the study-wide figures."""
    return [(group, [f for f in files if f.endswith(".png")]) for group, files in ctx["figures"].items()]


def markdown(ctx, secs) -> str:
    lines = [f"# Study report: {' '.join(str(ctx['setup']['name']).split())}", ""]
    for sec in secs:
        lines += [f"## {sec['title']}", ""]
        if sec["kind"] == "text":
            lines += [f"- {item}" for item in sec["items"]] + [""]
        elif sec["kind"] == "figures":
            for group, files in _figure_groups(ctx):
                lines += [f"### {group}", ""]
                for f in files:
                    lines += [f"![{f}](figures/{f})", "", f"*{caption(f)}*", ""]
        else:
            lines += _table(sec["head"], sec["body"]) + ([""] + [sec["note"]] if sec["note"] else []) + [""]
    return "\n".join(lines)


SCRIPT = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
function sortTable(th) {
  var table = th.closest('table'), body = table.tBodies[0];
  var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[idx].textContent.replace(/,/g, ''), y = b.cells[idx].textContent.replace(/,/g, '');
    var nx = parseFloat(x), ny = parseFloat(y);
    var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return asc ? c : -c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-errors', String(window.__errors.length));
});
"""

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px;line-height:1.4}
table{border-collapse:collapse;margin:1em 0;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee;cursor:pointer}
img{max-width:100%;margin:0.5em 0;border:1px solid #ddd}.note,figcaption{color:#555;font-size:12px}
td.v-holds{background:#d4edda;color:#155724;text-align:center}
td.v-does-not-hold{background:#f8d7da;color:#721c24;text-align:center}
td.v-inconclusive{background:#fff3cd;color:#856404;text-align:center}
td.v-untestable{background:#eee;color:#777;text-align:center}
td.v-confounded{background:#dcd6f7;color:#3d2a8a;text-align:center}
figure{margin:0 0 1.5em 0}summary{cursor:pointer;font-weight:bold}"""


def to_html(ctx, secs, folder: Path) -> str:
    esc = html.escape
    name = esc(str(ctx["setup"]["name"]))
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlpeft study {name}</title>"
             f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>", f"<h1>Study report: {name}</h1>"]

    def td(cell) -> str:
        if isinstance(cell, tuple):
            text, cls, tip = cell
            return f"<td class='{esc(cls)}' title='{esc(tip)}'>{esc(text)}</td>"
        return f"<td>{esc(str(cell))}</td>"

    for sec in secs:
        if sec["kind"] == "figures":
            parts.append(f"<h2>{esc(sec['title'])}</h2>")
            for group, files in _figure_groups(ctx):
                parts.append(f"<h3>{esc(group)}</h3>")
                for f in files:
                    data = base64.b64encode((folder / "figures" / f).read_bytes()).decode()
                    parts.append(f"<figure><img alt='{esc(f)}' src='data:image/png;base64,{data}'>"
                                 f"<figcaption>{esc(caption(f))}</figcaption></figure>")
            continue
        folded = sec.get("collapsed")
        parts.append(f"<details><summary>{esc(sec['title'])}</summary>" if folded else f"<h2>{esc(sec['title'])}</h2>")
        if sec["kind"] == "text":
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in sec["items"]) + "</ul>")
        else:
            if sec["note"]:
                parts.append(f"<p class='note'>{esc(sec['note'])}</p>")
            parts.append("<table><thead><tr>" + "".join(f"<th onclick='sortTable(this)'>{esc(h)}</th>"
                                                        for h in sec["head"]) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(td(c) for c in r) + "</tr>" for r in sec["body"]]
            parts.append("</tbody></table>")
        if folded:
            parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts)
