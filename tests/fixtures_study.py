"""A study store with chosen sensitivities, shared by the prediction and pre-grid advice tests."""

import json
import time

import numpy as np

from vlpeft import store
from vlpeft.study.spec import Cell

# name, relation, lm_loss, gain of the score per tenfold data (share of the base), base score
TASKS = (("cap-a", "same data, same task", 1.0, 0.00, 5.0), ("cap-b", "new data, same task", 2.0, 0.04, 4.0),
         ("vqa-a", "same data, new task", 3.0, 0.10, 50.0), ("vqa-b", "new data, new task", 4.0, 0.13, 45.0))
BUDGETS = {"lora": ("rank", {1: 1_000, 4: 4_000, 16: 16_000}), "frozen": (None, {None: 0})}


def fake_store(folder, tasks=TASKS, digest="d1", seed=0):
    """A results.sqlite as a study writes it: each task's score grows by `gain` x base per tenfold
    data and by a tenth of that per tenfold parameters, with a little noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    con = store.connect(folder / "results.sqlite")
    store.set_meta(con, {
        "name": folder.name,
        "identity": json.dumps({"model": "m", "checkpoints": {"m": digest}}),
        "spec": json.dumps({"methods": {"lora": {"method": "lora", "budgets": [1, 4, 16], "lr": [3e-3],
                                                 "options": {}, "training": {}, "task_training": {}},
                                        "frozen": {"method": "frozen"}},
                            "training": {"length_policy": "steps", "steps": 100}, "task_training": {}}),
        "consistency": json.dumps({t: {"lm_loss": x, "feature_distance": x / 4, "relation": r}
                                   for t, r, x, _, _ in tasks}),
    })
    for task, relation, _, gain, base in tasks:
        for label, (knob, budgets) in BUDGETS.items():
            for budget, params in budgets.items():
                for n in (100, 1000, 10000):
                    for s in range(2):
                        trained = label != "frozen"
                        y = base * (1 + trained * (gain * np.log10(n / 100) + gain / 10 * np.log10(params or 1)))
                        y += rng.normal(0, 0.002 * base)
                        cell = Cell(id=f"{task}.{label}.{budget}.n{n}.s{s}", task=task, label=label, method=label,
                                    budget=None if budget is None else str(budget), data_size=n, seed=s, lr=None)
                        store.add_cells(con, [(cell, {"task": task})])
                        metrics = {"status": "done", "task": task, "method": label, "knob": knob,
                                   "knob_value": budget, "data_size": n, "data_fraction": n / 10000, "seed": s,
                                   "metric": "score", "test_score": y, "best_val_score": y, "budget_params": params,
                                   "trainable_params": params, "params": {"backbone": 100_000},
                                   "task_relation": relation, "length_policy": "steps", "train_seconds": 1.0}
                        store.mark_running(con, cell.id)
                        store.finish(con, cell.id, {"status": "done", "metrics": metrics, "started": 1.0, "ended": 2.0})
    con.close()
    return folder


def wait_for(condition, timeout: float, step: float = 0.1) -> bool:
    """Poll `condition()` until it holds or `timeout` seconds pass (instead of a fixed sleep);
    -> whether it held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def training_cells(out) -> list:
    """The run folders of a study folder `out` whose fine-tuning has started (its lock holder file)."""
    return sorted((out / "runs").glob("*/.vlpeft-finetune.holder")) if (out / "runs").is_dir() else []
