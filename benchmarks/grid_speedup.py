"""Figures 3 and 3b of bench.py, measured together by `grid_speedup`.

3. grid_cache_speedup (goal >= 3): wall time of a small grid of real `finetune` runs (3 PEFT
   methods x 2 seeds, 5 epochs (the study default) over a small subset, evals=1, small validation
   and test sets)
   without the feature cache / with it (starting cold; on-disk cache in a fresh temporary folder when
   FinetuneConfig has `feature_cache_dir`). Each run gets a shared copy of one loaded checkpoint, as a
   study worker does. The runs of the two grids alternate. Detail: both wall times, and whether the
   test scores of the two grids are identical.
3b. grid_overhead_share (goal <= 0.1): the share of the cached grid's wall time spent outside
   training steps (validation included) and the test evaluation: giving each run its model, preparing
   the task, building the optimiser, recording.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from common import finetune_config, sig

GRID_METHODS = ("lora", "prefix", "adapter")
GRID_SEEDS = (0, 1)


def grid_speedup(pristine, model_path, s, scene_seed, threads, tmp: Path) -> tuple[float, dict, float]:
    from vlpeft.peft import shared_copy
    from vlpeft.recipes import features
    from vlpeft.recipes.finetune import FinetuneConfig, finetune

    has_dir = "feature_cache_dir" in {f.name for f in dataclasses.fields(FinetuneConfig)}
    cache_dir = tempfile.mkdtemp(prefix="features-", dir=tmp)
    features.clear()  # the cached grid starts cold
    g = s["grid"]
    seconds = {False: 0.0, True: 0.0}
    inside = {False: 0.0, True: 0.0}  # training steps (validation included) and the test evaluation
    scores: dict[bool, list[float]] = {False: [], True: []}
    cells = [(m, seed) for m in GRID_METHODS for seed in GRID_SEEDS]
    for i, (method, seed) in enumerate(cells):
        for cached in ((False, True) if i % 2 == 0 else (True, False)):
            extra = {"feature_cache_dir": cache_dir} if cached and has_dir else {}
            cfg = finetune_config(model_path, method, g["batch_size"], g["data_size"], scene_seed, threads,
                                  seed=seed, length_policy="epochs", epochs=g["epochs"], evals=1,
                                  val_limit=g["val_limit"], test_limit=g["test_limit"], feature_cache=cached, **extra)
            t0 = time.perf_counter()
            loaded = dataclasses.replace(pristine, model=shared_copy(pristine.model))  # as a study worker does
            metrics = finetune(cfg, out=None, progress=False, loaded=loaded, log=lambda *a, **k: None)
            seconds[cached] += time.perf_counter() - t0
            inside[cached] += metrics["train_seconds"] + metrics["eval_seconds"]
            scores[cached].append(metrics["test_score"])
            del loaded
    diff = max(abs(a - b) for a, b in zip(scores[False], scores[True]))
    detail = {"runs_per_grid": len(cells), "methods": list(GRID_METHODS), "seeds": list(GRID_SEEDS), **g,
              "uncached_s": sig(seconds[False]), "cached_s": sig(seconds[True]),
              "disk_cache": has_dir, "test_scores_identical": scores[False] == scores[True],
              "test_scores_max_abs_diff": diff, "test_scores_uncached": [sig(x, 6) for x in scores[False]],
              "test_scores_cached": [sig(x, 6) for x in scores[True]],
              "cached_outside_s": sig(seconds[True] - inside[True])}
    return sig(seconds[False] / seconds[True]), detail, sig(1 - inside[True] / seconds[True])
