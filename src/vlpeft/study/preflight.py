"""Advice for a new task before any grid: `vlpeft advise --model CKPT --task TASK [--from DIR ...]`.

1. `assess`: the task's consistency with the checkpoint's pre-training, with the code a study uses
   (`tasks.consistency.measure`: `lm_loss`, `feature_distance`), plus a short zero-shot evaluation
   (the frozen model on a few test examples, as a study's `frozen` cells are run).
2. `validation_noise`: before a study runs (`vlpeft study --dry-run`), whether each task's validation
   split can tell the claims' margin δ from noise: the validation score's standard error (for a metric
   with a ceiling, VQA accuracy, its bound ceiling / (2 sqrt(n)); else the frozen checkpoint's,
   measured) against δ estimated as `delta` of the ceiling or, without one (CIDEr-D), of the frozen
   score or, where higher (a task the frozen model cannot do yet), of a held-out reference's score
   (`TaskKind.held_out`: one caption scored against the image's others). With a ceiling it also gives
   the best score the split needs, since the report's δ is 5 % of the best cell's score (scores far
   under the ceiling need more examples). The report checks again with the real δ and standard
   errors (`analysis.converged.noise`).
3. `advise_task`: places the task among the tasks of the studies given (`analysis.predict`: a line
   per sensitivity on `predict.PREDICTOR`, with its prediction interval), says which claim of
   Tian et al. the task is expected to follow, recommends a method and budget from the study task
   nearest in consistency, and writes the smallest study that would confirm it. Without studies
   (or with studies of another checkpoint, whose consistency figures are not comparable) the paper's
   rule on the task's declared relation stands in, said to be a rule and not a prediction.
"""

from __future__ import annotations

import math
import time
from typing import Any

from vlpeft import catalogue
from vlpeft.analysis import advise as advise_mod
from vlpeft.analysis import predict
from vlpeft.analysis.findings import consistency_class

ZERO_SHOT_EXAMPLES = 200  # test examples of the zero-shot evaluation
MEASURE_EXAMPLES = 256  # training examples (and images) of the consistency measures, as in a study
CONFIRM_SEEDS = (0, 1)


def assess(model: str, task_ref: str, paths: dict | None = None, threads: int | None = None,
           zero_shot_examples: int = ZERO_SHOT_EXAMPLES, n: int = MEASURE_EXAMPLES) -> dict[str, Any]:
    """Consistency measures and zero-shot score of one task on one checkpoint, timed."""
    import torch

    from vlpeft.model.checkpoint import checkpoint_digest, weights_digest
    from vlpeft.recipes.config import FinetuneConfig
    from vlpeft.recipes.finetune import finetune
    from vlpeft.tasks import get_task, task_paths
    from vlpeft.tasks.consistency import measure

    if threads:
        torch.set_num_threads(threads)
    task = get_task(task_ref)
    paths = {**task_paths(task, {}), **(paths or {})}
    t0 = time.time()
    m = measure(model, [(task_ref, paths)], max_text_len=FinetuneConfig.max_text_len, n=n)[task.name]
    t1 = time.time()
    cfg = FinetuneConfig(model=model, task=task_ref, method="frozen", val_limit=1, test_limit=zero_shot_examples,
                         paths=paths, evals=1)
    rec = finetune(cfg, None, progress=False, log=lambda *a, **k: None)
    t2 = time.time()
    return {"task": task.name, "task_ref": task_ref, "model": model, "relation": task.relation,
            "lm_loss": m["lm_loss"], "feature_distance": m["feature_distance"], "measured_on": m["n"],
            "zero_shot": rec["test_score"], "metric": rec["metric"],
            "majority": (rec.get("secondary") or {}).get("majority_baseline"),
            "zero_shot_on": rec["n_test"], "pool": rec["train_pool"] or rec["data_size"],
            "digest": rec["base_model_digest"] or checkpoint_digest(model),
            "weights_digest": weights_digest(model),  # what studies made before checkpoint_digest recorded
            "seconds": {"measures": round(t1 - t0, 1), "zero_shot": round(t2 - t1, 1)}}


def validation_noise(spec, delta: float | None = None, log=print) -> list[dict[str, Any]]:
    """Per task of `spec` (a StudySpec): validation examples, the validation score's standard error (its
    bound where the metric has a ceiling; else the frozen model's, measured), the estimated δ, and
    whether the split is too small (δ < 2 SE), with the size that would do. A task whose checkpoint is
    not there yet (to be pre-trained) is skipped, said so."""
    import dataclasses

    from vlpeft.analysis.claims import DEFAULT_DELTA
    from vlpeft.analysis.converged import NOISE_RATIO
    from vlpeft.model.checkpoint import checkpoint_exists
    from vlpeft.recipes.config import FinetuneConfig
    from vlpeft.recipes.finetune import finetune
    from vlpeft.study.spec import expand
    from vlpeft.tasks import get_kind, get_task

    delta = DEFAULT_DELTA if delta is None else delta
    out = []
    for task in spec.tasks:
        cell = next(c for c in expand(spec) if c.task == task)
        fields = {**cell.finetune_fields(spec), "method": "frozen", "budget": None, "method_options": {},
                  "test_limit": 1, "lr": None, "device": "auto"}
        if spec.pretrain is not None and not checkpoint_exists(fields["model"]):
            out.append({"task": task, "skipped": "the checkpoint is pre-trained when the study runs"})
            continue
        cfg = FinetuneConfig(**fields)
        ceiling = get_kind(get_task(fields["task"]).kind).ceiling
        # the split's size from a run's record; a score is measured only where no bound exists
        rec = finetune(dataclasses.replace(cfg, val_limit=1 if ceiling else NOISE_PROBE), None, progress=False,
                       log=lambda *a, **k: None)
        split = rec["task_details"]["sizes"]["val"]["examples"]
        n_val, probe = min(cfg.val_limit or split, split), rec["n_val"]
        if ceiling:  # per-example scores in [0, ceiling]: the standard error is at most ceiling / (2 sqrt(n))
            se, margin = ceiling / (2 * math.sqrt(n_val)), delta * ceiling
            basis, scale, score = "its bound for scores in [0, the ceiling]", "the metric's ceiling", None
        else:  # the standard error of a mean scales as 1/sqrt(n): measured on a probe of the split, scaled to it
            score, se, probe = rec["best_val_score"], rec["best_val_se"], rec["n_val"]
            who, scale = "the frozen model's", "the frozen score"
            reference = _held_out(cfg, rec["scene_seed"], NOISE_PROBE)
            if reference is not None and reference[0] > score:  # a score within reach, above the frozen model's
                # the noise is the larger of the two: references written alike agree more than a model's captions
                score, scale = reference[0], "a held-out reference's score"
                if reference[1] * math.sqrt(reference[2]) > se * math.sqrt(probe):
                    se, probe, who = reference[1], reference[2], "the held-out references' (a lower bound)"
            se, margin = se * math.sqrt(probe / max(n_val, 1)), delta * score
            basis = f"{who}, measured on {probe:,} and scaled"
        too_small = NOISE_RATIO * se > margin
        # the report's δ is `delta` of the best cell's score p (a fraction of the ceiling), its noise binomial:
        # k sqrt(p (1 - p) / n) <= delta p  <=>  p >= k^2 / (k^2 + delta^2 n), with k = NOISE_RATIO
        reach = ceiling * NOISE_RATIO ** 2 / (NOISE_RATIO ** 2 + delta ** 2 * n_val) if ceiling else None
        out.append({"task": task, "n_val": n_val, "probe": probe, "score": score, "se": se, "basis": basis,
                    "delta": margin, "scale": scale, "too_small": too_small, "score_needed": reach,
                    "needed": math.ceil(n_val * (NOISE_RATIO * se / margin) ** 2) if too_small else None})
    return out


NOISE_PROBE = 200  # validation examples the dry run's frozen evaluation scores


def _held_out(cfg, scene_seed: int, n: int) -> tuple[float, float, int] | None:
    """(score, standard error, examples) of the task kind's held-out references (`TaskKind.held_out`)
    on the first `n` validation examples of the runs' draw; None where the kind has none."""
    from vlpeft.tasks import cached_task

    data = cached_task(cfg.task, scene_seed=scene_seed, paths=cfg.paths)
    if data.kind.held_out is None:
        return None
    predictions, examples = data.kind.held_out(data.select(1, 0, n, 1)[1])
    if not examples:
        return None
    scores = data.kind.score(predictions, examples)
    return scores[data.kind.metric], scores[f"{data.kind.metric}_se"], len(examples)


def noise_text(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['task']}: validation noise not checked ({r['skipped']})"
    line = (f"{r['task']}: validation {r['n_val']:,} examples, standard error ± {r['se']:.3g} ({r['basis']}); "
            f"δ about {r['delta']:.3g} (5 % of {r['scale']})")
    if r["too_small"]:
        line += (f"\n  warning: too small to tell δ from noise (δ < 2 SE): early stopping and model selection would "
                 f"decide at the level of noise; about {r['needed']:,} validation examples would do (val_limit)")
    elif r.get("score_needed") is not None:
        line += (f"\n  the report takes δ as 5 % of the best cell's score: with {r['n_val']:,} examples that is "
                 f"2 SE or more only if the best score reaches {r['score_needed']:.3g}; below it, raise val_limit")
    return line


def _size(data_size, pool: int) -> int:
    from vlpeft.data.subsets import resolve_size

    return pool if data_size is None else resolve_size(data_size, pool, "advise: --data-size")


def confirm_grid(a: dict[str, Any], n: int, label: str | None, grid: dict | None, budgets: list,
                 training: dict) -> dict[str, Any]:
    """The smallest study that tests the expected claims on the new task: the recommended method at
    three budgets (or, without one, every method the catalogue compares at its default budgets),
    three data sizes over a decade up to n, two seeds, and the frozen model."""
    if label and grid is not None:
        entry = {k: v for k, v in grid.items() if v not in ((), [], {}, "", None) and k != "budgets"}
        methods = {label: {**entry, **({"budgets": budgets} if budgets else {})}}  # full, bitfit: no budget
    else:
        methods = {m: {"budgets": list(catalogue.CATALOGUE[m].budgets)} for m in catalogue.compared()}
    methods["frozen"] = {}
    sizes = sorted({max(8, round(n / 10)), max(8, round(n / math.sqrt(10))), n})
    spec = {"name": f"confirm-{a['task']}", "model": a["model"], "tasks": [a["task_ref"]], "methods": methods,
            "data_sizes": sizes, "seeds": list(CONFIRM_SEEDS)}
    if training:
        spec["training"] = training
    return spec


def _neighbours(values: list, chosen) -> list:
    """Three budgets around `chosen` among `values` (sorted numerically where they are numbers)."""
    vals = sorted(values, key=lambda v: (0, float(v), "") if str(v).replace(".", "", 1).isdigit() else (1, 0, str(v)))
    i = next((k for k, v in enumerate(vals) if str(v) == str(chosen)), len(vals) // 2)
    i = min(max(i - 1, 0), max(len(vals) - 3, 0))
    return [int(v) if str(v).isdigit() else v for v in vals[i:i + 3]]


def advise_task(a: dict[str, Any], folders: list[str], data_size=None, max_params: int | None = None,
                predictor: str = predict.PREDICTOR) -> dict[str, Any]:
    """Advice for the assessed task `a` (see `assess`) from the studies in `folders`."""
    n = _size(data_size, a["pool"])
    points, other = [], []
    for folder in folders:
        for p in predict.study_points(folder):
            same = not p["checkpoints"] or {a["digest"], a.get("weights_digest")} & set(p["checkpoints"])
            (points if same else other).append(p)
    out: dict[str, Any] = {"task": a, "data_size": n, "max_params": max_params, "predictor": predictor,
                           "studies": folders, "excluded": sorted({p["study"] for p in other}),
                           "dropped": sum(p.get("dropped", 0) for p in points), "points": [
                               {k: p.get(k) for k in ("study", "task", "relation", predictor, *predict.TARGETS)}
                               for p in points]}
    if points:
        fitted = predict.fit(points, predictor)
        pred = predict.predict(fitted, a[predictor])
        out["prediction"] = pred
        out["expected"] = predict.expectation(pred["data_sensitivity"])
        out["basis"] = "prediction"
        near = predict.nearest(points, predictor, a[predictor])
        sizes = sorted({c["n_train"] for c in near["cells"]})
        rec = advise_mod.advise(near["cells"], near["task"], min(max(n, sizes[0]), sizes[-1]), max_params)
        out["nearest"] = {"study": near["study"], "task": near["task"], "relation": near["relation"],
                          predictor: near[predictor], "study_size": rec["study_size"]}
        out["recommended"], out["runner_up"] = rec["recommended"], rec["runner_up"]
        label = rec["recommended"]["label"]
        base_label = label.split("@")[0]
        budgets = sorted({c["budget"] for c in near["cells"] if c["label"] == label and c["budget"] is not None},
                         key=str)
        training = {**near["training"], **near["task_training"]}
        out["confirm"] = confirm_grid(a, n, base_label, near["methods"].get(base_label),
                                      _neighbours(budgets, rec["recommended"]["budget"]), training)
    else:
        cls = consistency_class(a["relation"])
        out["prediction"], out["basis"] = None, "rule"
        out["expected"] = {"consistent": "likely consistent", "inconsistent": "likely inconsistent"}.get(cls)
        out["recommended"] = out["runner_up"] = out["nearest"] = None
        out["confirm"] = confirm_grid(a, n, None, None, [], {})
    return out


def _interval(q: dict | None) -> str:
    if q is None:
        return "no prediction (no study task has this figure)"
    s = f"{q['value']:+.3f}"
    if q["lo"] is None:
        return s + f" (no interval: {q['n']} study task(s); three or more give one)"
    return s + f" [90% prediction interval {q['lo']:+.3f}, {q['hi']:+.3f}] from {q['n']} study tasks"


def advice_text(out: dict[str, Any]) -> str:
    import yaml

    a, x = out["task"], out["predictor"]
    lines = [f"task {a['task']} ({a['relation']}), checkpoint {a['model']} (weights {a['digest']}):",
             f"  consistency with pre-training: lm_loss {a['lm_loss']:.3f}, feature_distance "
             f"{a['feature_distance']:.3f} (on {a['measured_on']} training examples); zero-shot {a['metric']} "
             f"{a['zero_shot']:.4g} on {a['zero_shot_on']} test examples"
             + (f" (majority answer {a['majority']:.4g})" if a.get("majority") is not None else ""),
             f"  measured in {a['seconds']['measures'] + a['seconds']['zero_shot']:.0f} s "
             f"(measures {a['seconds']['measures']:.0f} s, zero-shot {a['seconds']['zero_shot']:.0f} s)"]
    if out.get("dropped"):
        lines.append(f"  left out: {out['dropped']} run(s) of those studies that were still improving when they "
                     f"stopped (their scores measure the training length); predictions use converged runs only")
    if out["excluded"]:
        lines.append(f"  not used: {', '.join(out['excluded'])} (another checkpoint: its consistency figures "
                     f"are not comparable with this one's)")
    if out["basis"] == "prediction":
        pred = out["prediction"]
        lines += [f"  predicted from {len(out['points'])} study task(s), a least-squares line on {x} "
                  f"({predict.PREDICTORS[x]}):",
                  f"    gain per tenfold data, share of the best score:       {_interval(pred['data_sensitivity'])}",
                  f"    gain per tenfold parameters, share of the best score: {_interval(pred['param_sensitivity'])}"]
    else:
        lines.append("  no study given (--from) for this checkpoint: the paper's rule on the task's declared relation "
                     "stands in; it is a rule, not a prediction")
    if out["expected"]:
        lines.append(f"  expected: {out['expected']}: {predict.PAPER_RULE[out['expected']]}")
    else:
        lines.append("  expected: no expectation (the task declares no relation to pre-training); run the grid below")
    r = out["recommended"]
    if r:
        near = out["nearest"]
        lines.append(f"  recommended for {out['data_size']:,} examples: {r['label']}"
                     + (f" {r['knob']}={r['knob_value']}" if r["knob"] else "")
                     + f" ({r['params']:,} params), the best on validation for the most similar study task, "
                     f"{near['study']}/{near['task']} ({x} {near[x]:.3f}) at {near['study_size']:,} examples "
                     f"(its test score there: {r['expected']:.4g} [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}])")
    spec = out["confirm"]
    cells = sum(max(1, len(m.get("budgets", []))) for m in spec["methods"].values()) * len(spec["data_sizes"]) \
        * len(spec["seeds"])
    lines += [f"  the smallest grid that would confirm it ({cells} runs): save as confirm.yaml, run "
              f"`vlpeft study confirm.yaml --out runs/confirm-{a['task']}`:",
              *("    " + s for s in yaml.safe_dump(spec, sort_keys=False).rstrip().splitlines())]
    return "\n".join(lines)


__all__ = ["assess", "advise_task", "advice_text"]
