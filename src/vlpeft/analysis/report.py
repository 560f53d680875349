"""The study report: report.md and one self-contained report.html (figures embedded), rebuilt from
results.sqlite (plus the consistency measures stored beside the results by the study).

Sections: setup (model, pre-training recipe, tasks, grid, training-length policy, hardware,
versions), the verdict table of the four claims and its summary, whether the runs learned at all
(cells no better than the frozen model or the majority answer), consistency with pre-training,
advice, the figures, every cell and every run (sortable in the HTML). Files are written atomically
and only when changed.
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
from vlpeft.analysis import figures
from vlpeft.analysis.results import aggregate, load_runs, read_store
from vlpeft.errors import UserError
from vlpeft.io import write_if_changed


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def verdict_cell(claim: str, d: dict) -> str:
    v = d["verdict"]
    if claim in ("data_trend", "param_trend") and "rho" in d:
        return f"{v} (ρ={d['rho']:.2f}, p={d['p']:.3f}, slope {d['slope']:+.3g}/10×)"
    if claim == "data_flat" and "effect" in d and not np.isnan(d["effect"]):
        return f"{v} (Δ={d['effect']:+.3g}, 90% CI [{d['ci90'][0]:.3g}, {d['ci90'][1]:.3g}], δ=±{d['margin']:.3g})"
    if claim == "param_nonmonotonic" and "levels" in d:
        if v == "untestable":
            return f"untestable ({d['levels']} budgets; needs ≥ 3)"
        return f"{v} (best at {d['best_params']:,.0f} params; gains {d['gain_low']:+.3g} / {d['gain_high']:+.3g}, p {d['p_low']:.3f} / {d['p_high']:.3f})"
    return f"{v}" + (f" ({d['why']})" if d.get("why") else "")


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


def build(folder: str | Path, delta: float = claims_mod.DEFAULT_DELTA, consistency: dict | None = None) -> dict[str, Any]:
    """Write report.md, report.html and figures/ into the study folder; returns the verdict rows."""
    folder = Path(folder)
    meta, rows = read_store(folder)
    runs = load_runs(folder, rows)
    cells = aggregate(runs)
    verdicts = claims_mod.judge_claims(runs, delta=delta)
    if consistency is None:
        consistency = json.loads(meta.get("consistency", "{}") or "{}")
    zs = cons.zero_shot(cells)
    sens = sensitivity(verdicts, cells)
    points = [{"task": t, "consistency": zs.get(t), **sens.get(t, {}),
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
    context = {"meta": meta, "rows": rows, "runs": runs, "cells": cells, "verdicts": verdicts, "zero_shot": zs,
               "sensitivity": sens, "consistency": consistency, "figures": figs, "advice": advice, "delta": delta,
               "setup": setup(meta, rows, runs)}
    tables = sections(context)
    write_if_changed(folder / "report.md", markdown(context, tables))
    write_if_changed(folder / "report.html", to_html(context, tables, folder))
    return {"verdicts": verdicts, "cells": cells, "summary": claims_mod.summary(verdicts), "setup": context["setup"]}


def setup(meta: dict, rows: list[dict], runs: list[dict]) -> dict[str, Any]:
    """What the study is: from the store's meta and every row (finished or not), so a study with no
    finished run yet still describes its grid; figures of finished runs (environment) where any."""
    ident = json.loads(meta.get("identity", "{}") or "{}")
    spec = json.loads(meta.get("spec", "{}") or "{}")
    consistency = json.loads(meta.get("consistency", "{}") or "{}")
    env, pretrain, length = {}, None, {}
    for r in rows:
        if r["metrics"]:  # a finished run records the settings in effect, defaults included
            m = json.loads(r["metrics"])
            env = m.get("environment", {})
            length = {k: m["config"][k] for k in ("length_policy", "epochs", "min_steps", "steps")
                      if k in m.get("config", {})}
            break
    model = ident.get("model")
    if model and (Path(model) / "pretrain.json").is_file():
        pre = json.loads((Path(model) / "pretrain.json").read_text())
        pretrain = {k: pre.get(k) for k in ("steps", "seed", "objectives", "train_seconds", "config", "data")}
    grid = defaultdict(set)
    for r in rows:
        grid[r["label"]].add(r["budget"] or "–")
    relation = {r["task"]: r["relation"] for r in runs}
    configs = [json.loads(r["config"]) for r in rows if r.get("config")]
    status = defaultdict(int)
    for r in rows:
        status[r["status"]] += 1
    return {"name": meta.get("name"), "model": model, "checkpoints": ident.get("checkpoints"),
            "training": ident.get("training", {}), "task_training": ident.get("task_training", {}), "spec": spec,
            "environment": env, "pretrain": pretrain,
            "tasks": {t: relation.get(t) or consistency.get(t, {}).get("relation") or "–"
                      for t in sorted({r["task"] for r in rows})},
            "grid": {k: sorted(v, key=str) for k, v in grid.items()},
            "sizes": sorted({r["n_train"] for r in runs}) or sorted({r["data_size"] for r in rows}, key=str),
            "seeds": sorted({r["seed"] for r in rows}),
            "runs": len(rows), "done": status.get("done", 0), "status": dict(status),
            "failed": [(r["id"], r["reason"]) for r in rows if r["status"] == "failed"],
            "length": length or {k: v for k, v in ident.get("training", {}).items()
                                 if k in ("length_policy", "epochs", "min_steps", "steps")},
            "length_policy": length.get("length_policy")
            or next((c.get("length_policy") for c in configs if c.get("length_policy")), None)}


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in body]


def sections(ctx) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) of each table, shared by the Markdown and the HTML."""
    s = ctx["setup"]
    out = []
    t = s["training"]
    env = s["environment"]
    setup_rows = [
        ["study", _fmt(s["name"])], ["model", f"{_fmt(s['model'])}" + (f" (weights {json.dumps(s['checkpoints'])})" if s["checkpoints"] else "")],
        ["pre-training", json.dumps({k: s["pretrain"][k] for k in ("steps", "seed", "objectives", "train_seconds")})
         if s["pretrain"] else "–"],
        ["tasks", ", ".join(f"{k} ({v})" for k, v in sorted(s["tasks"].items()))],
        ["methods × budgets", "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in s["grid"].items())],
        ["data sizes (examples)", ", ".join(map(str, s["sizes"]))], ["seeds", ", ".join(map(str, s["seeds"]))],
        ["training-length policy", (f"{_fmt(s['length_policy'])} — " + ", ".join(
            f"{k.replace('_', ' ')} {s['length'][k]}" for k in ("epochs", "min_steps", "steps") if k in s["length"])
            + f"; other settings {json.dumps(t)}")],
        *([["per-task training", json.dumps(s["task_training"])]] if s["task_training"] else []),
        ["runs", f"{s['done']} done of {s['runs']}: " + ", ".join(f"{n} {k}" for k, n in sorted(s["status"].items()))],
        ["hardware", f"{env.get('host')} {env.get('machine')}, device {env.get('device')}, {env.get('threads')} torch "
                     f"thread(s) per run" if env else "– (no finished run yet)"],
        ["versions", json.dumps({"vlpeft": env.get("vlpeft"), "python": env.get("python"), **(env.get("versions") or {}),
                                 "git": env.get("git_commit")}) if env else "– (no finished run yet)"],
    ]
    out.append(("Setup", ["item", "value"], setup_rows, ""))
    head = ["task", "method"] + list(claims_mod.CLAIMS.values())
    body = [[v["task"], v["label"]] + [verdict_cell(c, v[c]) for c in claims_mod.CLAIMS] for v in ctx["verdicts"]]
    out.append(("Verdicts: the four claims, per task and method", head, body,
                f"Permutation and bootstrap tests at α = {claims_mod.stats.ALPHA}; δ = {ctx['delta']:.0%} of the task's best "
                "cell mean. Slopes are score change per tenfold more data (or parameters), inside each budget (or data size)."))
    summ = claims_mod.summary(ctx["verdicts"])
    body = [[task] + [", ".join(f"{n} {v}" for v, n in sorted(summ[task][c].items())) for c in claims_mod.CLAIMS]
            for task in sorted(summ)]
    out.append(("Summary: verdicts counted over methods", ["task"] + list(claims_mod.CLAIMS.values()), body, ""))
    checks = claims_mod.baseline_check(ctx["runs"], ctx["delta"])
    body = [[c["task"], c["label"], f"{len(c['flagged'])} of {c['cells']}", f"{c['headroom']:.3g} (δ {c['margin']:.3g})",
             ", ".join(f"{_fmt(f['budget'])}/{f['size']} ({f['mean']:.3g})" for f in c["flagged"]) or "–"]
            for c in checks]
    out.append(("Did the runs learn? Cells no better than the baseline",
                ["task", "method", "cells flagged", "headroom: task best − baseline", "flagged (budget/examples: mean)"], body,
                "Baseline: the better of the frozen model's score at that data size and the majority answer (VQA); a cell "
                "is flagged when its mean is below baseline + δ. Where the headroom is many δ, flagged cells learned nothing "
                "measurable (train longer: `task_training.TASK.min_steps`), and the claims about that method describe undertrained "
                "runs, not the method; where it is about δ, the frozen model already does about as well as fine-tuning."))
    cons_rows = []
    for task in sorted(ctx["sensitivity"]):
        m = ctx["consistency"].get(task, {})
        sens = ctx["sensitivity"][task]
        cons_rows.append([task, ctx["setup"]["tasks"].get(task, ""), _fmt(ctx["zero_shot"].get(task)),
                          _fmt(m.get("lm_loss")), _fmt(m.get("feature_distance")), _fmt(sens["data_sensitivity"]),
                          _fmt(sens["param_sensitivity"])])
    out.append(("Consistency with pre-training", ["task", "relation", "zero-shot / best", "LM loss of the checkpoint",
                                                   "image-feature distance", "data-size sensitivity", "parameter sensitivity"],
                cons_rows, "Zero-shot: the frozen model's score over the best fine-tuned score. LM loss: the pre-trained "
                           "model's loss on the task's targets. Distance: ITC image features of the task vs the pre-training "
                           "scenes, in units of the pre-training spread. Sensitivities: mean slope per tenfold, as a share of the best score."))
    adv = []
    for a in ctx["advice"]:
        r, u = a["recommended"], a["runner_up"]
        adv.append([a["task"], str(a["study_size"]), f"{r['label']} {r['budget'] or ''}".strip(),
                    f"{r['expected']:.3g} [{r['ci'][0]:.3g}, {r['ci'][1]:.3g}]", f"{r['params']:,}",
                    f"{u['label']} {u['budget'] or ''} ({u['expected']:.3g})".strip() if u else "–"])
    out.append(("Advice (ranked on validation, expected test score with 95% CI)",
                ["task", "examples", "recommended", "expected score", "params", "runner-up"], adv,
                "`vlpeft advise DIR --task T --data-size N [--max-params P]` answers for other sizes and caps."))
    cells = [[c["task"], c["label"], _fmt(c["budget"]), str(c["n_train"]), f"{c['mean']:.4g}",
              f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]", str(c["seeds"]), f"{c['params']:,}", f"{c['percent']:.3f}",
              _fmt(c["relative_to_full"])] for c in ctx["cells"]]
    out.append(("Every cell (mean over seeds)", ["task", "method", "budget", "examples", "mean", "95% CI", "seeds",
                                                 "params", "% backbone", "÷ full"], cells, ""))
    runs = [[r["id"], r["task"], r["label"], _fmt(r["budget"]), str(r["n_train"]), str(r["seed"]), _fmt(r["lr"]),
             f"{r['test']:.4g}", f"{r['val']:.4g}", f"{r['params']:,}", _fmt(r["seconds"])] for r in ctx["runs"]]
    out.append(("Every run", ["id", "task", "method", "budget", "examples", "seed", "lr", "test", "val", "params", "train s"],
                runs, ""))
    if s["failed"]:
        out.append(("Failed runs", ["id", "reason"], [[i, r or ""] for i, r in s["failed"]], ""))
    return out


BEFORE_FIGURES = 6  # setup, verdicts, summary, did the runs learn, consistency, advice; then figures, cells, runs


def markdown(ctx, tables) -> str:
    lines = [f"# Study report: {ctx['setup']['name']}", ""]
    for title, head, body, note in tables[:BEFORE_FIGURES]:
        lines += [f"## {title}", ""] + _table(head, body) + ([""] + [note] if note else []) + [""]
    lines += ["## Figures", ""]
    for group, files in ctx["figures"].items():
        for f in files:
            if f.endswith(".png"):
                lines.append(f"![{f}](figures/{f})")
        lines.append("")
    for title, head, body, note in tables[BEFORE_FIGURES:]:
        lines += [f"## {title}", ""] + _table(head, body) + [""]
    return "\n".join(lines)


SCRIPT = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
function sortTable(th) {
  var table = th.closest('table'), body = table.tBodies[0], idx = Array.prototype.indexOf.call(th.parentNode.children, th);
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

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#eee;cursor:pointer}
img{max-width:100%;margin:0.5em 0;border:1px solid #ddd}.note{color:#555;font-size:12px}"""


def to_html(ctx, tables, folder: Path) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vlpeft study {esc(str(ctx['setup']['name']))}</title>"
             f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
             f"<h1>Study report: {esc(str(ctx['setup']['name']))}</h1>"]

    def table(title, head, body, note):
        parts.append(f"<h2>{esc(title)}</h2>")
        if note:
            parts.append(f"<p class='note'>{esc(note)}</p>")
        parts.append("<table><thead><tr>" + "".join(f"<th onclick='sortTable(this)'>{esc(h)}</th>" for h in head)
                     + "</tr></thead><tbody>")
        for r in body:
            parts.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>")
        parts.append("</tbody></table>")

    for sec in tables[:BEFORE_FIGURES]:
        table(*sec)
    parts.append("<h2>Figures</h2>")
    for group, files in ctx["figures"].items():
        parts.append(f"<h3>{esc(group)}</h3>")
        for f in files:
            if f.endswith(".png"):
                data = base64.b64encode((folder / "figures" / f).read_bytes()).decode()
                parts.append(f"<img alt='{esc(f)}' src='data:image/png;base64,{data}'>")
    for sec in tables[BEFORE_FIGURES:]:
        table(*sec)
    parts.append("</body></html>")
    return "\n".join(parts)

