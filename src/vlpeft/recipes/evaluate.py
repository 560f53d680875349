"""Using a finished run: its record (metrics.json), the check that a checkpoint is the base it
adapted, and re-scoring its saved PEFT weights on its test split (`vlpeft evaluate`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import vlpeft
from vlpeft.errors import UserError
from vlpeft.peft import load_peft
from vlpeft.recipes.config import FinetuneConfig
from vlpeft.recipes.prepare import prepare, resolve_device
from vlpeft.recipes.step import evaluate_split
from vlpeft.runrecord import RunRecord
from vlpeft.tasks import get_task, task_data_digest


def read_record(run_dir: str | Path) -> RunRecord:
    """The RunRecord of a finished run folder (its metrics.json), or a one-line UserError."""
    from vlpeft.io import read_json

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: {'not a folder' if run_dir.exists() else 'no such run folder'}")
    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir}: not a finished run (no metrics.json)")
    return RunRecord.from_dict(read_json(run_dir / "metrics.json", "run metrics"), str(run_dir / "metrics.json"))


def check_base(record: RunRecord, run_dir, model_path: str, allow_other_base: bool = False,
               use: str = "use") -> bool:
    """Whether `model_path` is the checkpoint the run adapted (the same checkpoint digest; a record from
    before the digest covered the checkpoint's settings holds its weights' digest). A different one
    is a one-line UserError unless `allow_other_base`."""
    from vlpeft.model.checkpoint import checkpoint_digest, weights_digest

    trained_on, given = record.base_model_digest, checkpoint_digest(model_path)
    same_base = trained_on is None or trained_on in (given, weights_digest(model_path))
    if not same_base and not allow_other_base:
        raise UserError(f"{run_dir}: this run adapted {record.config.get('model')} (checkpoint {trained_on}), not "
                        f"{model_path} (checkpoint {given}: its weights, config, tokenizer or preprocessing "
                        f"differ); give that checkpoint, or --allow-other-base to {use} this one anyway")
    return same_base


def evaluate_run(model_path: str, run_dir: str | Path, task: str | None = None,
                 allow_other_base: bool = False) -> dict[str, Any]:
    """Re-score the saved PEFT weights of a run on its test split, with the run's own settings: on its
    recorded task, or on `task` when given (the task's name, or its task file moved or named by another
    path, which must declare the run's task name). The base checkpoint must be the one the run adapted
    (same checkpoint digest) unless `allow_other_base`; a task file's records must be those the run
    was trained on (same data digest), and synthetic scenes are drawn with the run's recorded seed."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    saved = record.config
    # another reference to the run's task (its task file moved, or named by another path) replaces the recorded one
    if task in (record.task, record.task_ref):
        task = None
    if task is not None and (named := get_task(task).name) != record.task:
        raise UserError(f"{run_dir}: this run was trained on {record.task!r}, not {named!r} ({task})")
    loaded = vlpeft.load_model(model_path)  # first: a damaged checkpoint is named as such, not as another one
    same_base = check_base(record, run_dir, model_path, allow_other_base, "score")
    recorded_data, data_now = record.task_data_digest, task_data_digest(get_task(task or record.task_ref))
    if recorded_data is not None and data_now != recorded_data:
        raise UserError(f"{run_dir}: the records of task {record.task} changed since this run was trained "
                        f"(data {recorded_data}, now {data_now}); its recorded test score is not comparable — "
                        f"train it again on the data as it is")
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    cfg = FinetuneConfig(**{**{k: v for k, v in saved.items() if k in fields}, "model": model_path,
                            **({"task": task} if task is not None else {}),
                            **({"scene_seed": record.scene_seed} if saved.get("scene_seed") is None else {})})
    prep = prepare(cfg, loaded)
    device = resolve_device(cfg.device)
    model = prep.loaded.model.to(device)
    load_peft(model, run_dir)
    test = evaluate_split(prep, cfg, model, prep.test)
    return {"task": prep.task.name, "method": cfg.method, "metric": prep.kind.metric, "test_score": test["score"],
            "recorded_test_score": record.test_score, "secondary": test,
            "same_base": same_base}
