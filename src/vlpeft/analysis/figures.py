"""The report's figures (matplotlib, Agg), each written as PNG and SVG, atomically.

Per task: score vs data size (one line per method at its best budget, bands = 95 % intervals over
seeds); score vs trainable parameters on a log axis (one panel per data size, one line per method);
the score-vs-parameters Pareto front; a method x data-size heat map. For the study: each task placed
by its consistency with pre-training against its sensitivity to data size and to parameters.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlpeft import catalogue
from vlpeft.io import write_if_changed


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "svg.hashsalt": "vlpeft"})
    return plt


def _save(fig, folder: Path, name: str) -> list[str]:
    """Write name.png and name.svg (deterministic bytes; a file is rewritten only when it changed)."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        buf = io.BytesIO()
        fig.savefig(
            buf, format=ext, bbox_inches="tight", metadata={"Date": None} if ext == "svg" else {"Software": None}
        )
        write_if_changed(folder / f"{name}.{ext}", buf.getvalue())
        out.append(f"{name}.{ext}")
    _plt().close(fig)
    return out


def best_budget_cells(cells: list[dict], task: str) -> dict[str, list[dict]]:
    """label -> cells along data size, at each size the budget with the best validation mean."""
    by: dict[tuple, dict] = {}
    for c in cells:
        if c["task"] != task:
            continue
        key = (c["label"], c["size"])
        if key not in by or c["val"] > by[key]["val"]:
            by[key] = c
    lines: dict[str, list[dict]] = defaultdict(list)
    for (label, _), c in by.items():
        lines[label].append(c)
    return {k: sorted(v, key=lambda c: c["n_train"]) for k, v in lines.items()}


def score_vs_data(cells, task, folder) -> list[str]:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, line in best_budget_cells(cells, task).items():
        x = [c["n_train"] for c in line]
        y = [c["mean"] for c in line]
        color = catalogue.colour(line[0]["method"])
        ax.plot(x, y, marker="o", label=label, color=color)
        ax.fill_between(x, [c["ci"][0] for c in line], [c["ci"][1] for c in line], alpha=0.15, color=color)
    _log_axes(
        ax, "training examples (log)", cells_metric(cells, task), f"{task}: score vs data size (best budget per method)"
    )
    return _save(fig, folder, f"{task}-data")


def _log_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)


def cells_metric(cells, task) -> str:
    return next((c["metric"] for c in cells if c["task"] == task), "score")


def score_vs_params(cells, task, folder) -> list[str]:
    plt = _plt()
    sizes = sorted({(c["n_train"], c["size"]) for c in cells if c["task"] == task})
    fig, axes = plt.subplots(1, len(sizes), figsize=(3.2 * len(sizes), 3.2), squeeze=False, sharey=True)
    for ax, (n, size) in zip(axes[0], sizes):
        mine = [c for c in cells if c["task"] == task and c["size"] == size]
        by: dict[str, list[dict]] = defaultdict(list)
        for c in mine:
            by[c["label"]].append(c)
        for label, line in by.items():
            line.sort(key=lambda c: c["params"])
            color = catalogue.colour(line[0]["method"])
            if line[0]["params"] == 0:  # frozen: no parameters, a reference level
                ax.axhline(line[0]["mean"], color=color, ls="--", lw=1, label=label)
                continue
            x = [c["params"] for c in line]
            ax.errorbar(x, [c["mean"] for c in line], yerr=[[c["mean"] - c["ci"][0] for c in line],
                                                           [c["ci"][1] - c["mean"] for c in line]],
                        marker="o", capsize=2, label=label, color=color)
        ax.set_xscale("log")
        ax.set_title(f"n = {n}")
        ax.set_xlabel("trainable parameters (log)")
    axes[0][0].set_ylabel(cells_metric(cells, task))
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{task}: score vs trainable parameters")
    return _save(fig, folder, f"{task}-params")


def pareto(cells, task, folder) -> list[str]:
    plt = _plt()
    mine = [c for c in cells if c["task"] == task and c["params"] > 0]
    if not mine:
        return []
    largest = max(c["n_train"] for c in mine)
    mine = [c for c in mine if c["n_train"] == largest]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for c in mine:
        ax.scatter(c["params"], c["mean"], color=catalogue.colour(c["method"]), s=18)
    front, best = [], -np.inf
    for c in sorted(mine, key=lambda c: (c["params"], -c["mean"])):
        if c["mean"] > best:
            front.append(c)
            best = c["mean"]
    ax.plot([c["params"] for c in front], [c["mean"] for c in front], color="black", lw=1, drawstyle="steps-post",
            label="Pareto front")
    for c in front:
        ax.annotate(f"{c['label']} {c['budget'] or ''}".strip(), (c["params"], c["mean"]), fontsize=6,
                    xytext=(3, -8), textcoords="offset points")
    for method in sorted({c["method"] for c in mine}):
        ax.scatter([], [], color=catalogue.colour(method), label=method, s=18)
    _log_axes(ax, "trainable parameters (log)", cells_metric(cells, task), f"{task}: Pareto front at n = {largest}")
    return _save(fig, folder, f"{task}-pareto")


def heatmap(cells, task, folder) -> list[str]:
    plt = _plt()
    lines = best_budget_cells(cells, task)
    labels = list(lines)
    sizes = sorted({c["n_train"] for line in lines.values() for c in line})
    grid = np.full((len(labels), len(sizes)), np.nan)
    for i, label in enumerate(labels):
        for c in lines[label]:
            grid[i, sizes.index(c["n_train"])] = c["mean"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(sizes), 0.8 + 0.32 * len(labels)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(sizes)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < np.nanmean(grid) else "black")
    ax.set_xlabel("training examples")
    ax.set_title(f"{task}: {cells_metric(cells, task)} (best budget)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return _save(fig, folder, f"{task}-heatmap")


def consistency_figure(points: list[dict[str, Any]], folder) -> list[str]:
    """points: {task, consistency (zero-shot / best), lm_loss, data_sensitivity, param_sensitivity,
    relation}. The x axis is `predict.PREDICTOR` (measured before any run, what `vlpeft advise --model`
    predicts from) when every task has it, else zero-shot / best; with three tasks or more, the
    least-squares line and its 90 % prediction band."""
    from vlpeft.analysis import predict

    plt = _plt()
    x_key = predict.PREDICTOR if points and all(p.get(predict.PREDICTOR) is not None for p in points) \
        else "consistency"
    x_label = {"consistency": "consistency: zero-shot / best fine-tuned score",
               "lm_loss": "checkpoint's loss on the task's targets (lower: more consistent)"}.get(x_key, x_key)
    fitted = predict.fit(points, x_key)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, key, title in ((axes[0], "data_sensitivity", "10x data"), (axes[1], "param_sensitivity", "10x parameters")):
        pts = predict.usable(points, x_key, key)
        for p in pts:
            ax.scatter(p[x_key], p[key], s=30, color="#1f77b4")
            ax.annotate(f"{p['task']}\n({p['relation']})", (p[x_key], p[key]), fontsize=7,
                        xytext=(5, -4), textcoords="offset points")
        line = fitted[key]["line"]
        if line is not None and line.sigma is not None:
            xs = np.linspace(min(p[x_key] for p in pts), max(p[x_key] for p in pts), 50)
            band = [predict.predict({key: fitted[key]}, float(x))[key] for x in xs]
            ax.plot(xs, [b["value"] for b in band], color="#ff7f0e", lw=1, label="least-squares fit")
            ax.fill_between(xs, [b["lo"] for b in band], [b["hi"] for b in band], color="#ff7f0e", alpha=0.15,
                            label="90 % prediction interval")
            ax.legend(fontsize=7, loc="best")
        ax.axhline(0, color="grey", lw=0.5)
        ax.margins(x=0.35, y=0.2)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"gain per {title}\n(share of the best score)")
    fig.suptitle("tasks by consistency with pre-training vs sensitivity")
    return _save(fig, folder, "consistency")


def all_figures(cells, consistency_points, folder: Path) -> dict[str, list[str]]:
    """Every figure of the report into `folder`; group -> file names. Drawing them takes seconds, so
    they are drawn only when their inputs (and this module) changed since the last time: a rebuild of
    an unchanged study draws nothing (`.inputs.json` keeps the digest and the file list)."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps([cells, consistency_points], sort_keys=True, default=str).encode()
                         + Path(__file__).read_bytes()).hexdigest()
    record = folder / ".inputs.json"
    try:
        last = json.loads(record.read_text(encoding="utf-8"))
        if last["key"] == key and all((folder / f).is_file() for files in last["files"].values() for f in files):
            return last["files"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    out = {}
    for task in sorted({c["task"] for c in cells}):
        out[task] = score_vs_data(cells, task, folder) + score_vs_params(cells, task, folder) + \
            pareto(cells, task, folder) + heatmap(cells, task, folder)
    if consistency_points:
        out["study"] = consistency_figure(consistency_points, folder)
    write_if_changed(record, json.dumps({"key": key, "files": out}, indent=1))
    return out
