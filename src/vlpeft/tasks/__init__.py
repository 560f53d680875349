"""Downstream tasks: the task protocol (`base`), the two kinds (`captioning`, `vqa`), one module per
data source of the built-in tasks (`scenes`, `easyvqa`, `coco`, `vqav2`), and users' own data from
task files (`files`).

| task              | data                                    | relation to the tiny BLIP's pre-training |
|-------------------|-----------------------------------------|------------------------------------------|
| scenes-caption    | held-out synthetic scenes               | same data, same task                     |
| scenes-vqa        | questions about those scenes            | same data, new task                      |
| easyvqa-caption   | easy-VQA images, label-derived captions | new data, same task                      |
| easyvqa-vqa       | easy-VQA questions                      | new data, new task                       |
| coco-caption      | COCO, Karpathy split (files you give)   | same data, same task (for a real BLIP)   |
| vqav2             | VQAv2 (files you give)                  | same images, new task (for a real BLIP)  |
| path/to/task.yaml | your own captions or QA pairs           | as you declare it                        |
"""

from __future__ import annotations

import functools
import json
import time

from vlpeft.errors import UserError, did_you_mean

# The kinds, then the built-in tasks, register themselves: the tasks in the order of the table above.
# isort: off
from vlpeft.tasks import captioning, vqa  # noqa: F401
from vlpeft.tasks import scenes  # noqa: F401
from vlpeft.tasks import easyvqa  # noqa: F401
from vlpeft.tasks import coco  # noqa: F401
from vlpeft.tasks import vqav2  # noqa: F401
# isort: on
from vlpeft.tasks.base import (
    KINDS,
    SPLIT_NAMES,
    TASKS,
    Batch,
    LoadContext,
    TaskData,
    TaskDef,
    TaskKind,
    check_paths,
    get_kind,
    register_kind,
    register_task,
    task_options,
    task_paths,
)
from vlpeft.tasks.files import data_digest, is_task_file, read_task_file


def get_task(ref: str) -> TaskDef:
    """A task by built-in name or by task file (a path ending in .yaml / .yml, or an existing file)."""
    ref = str(ref)
    if ref in TASKS:
        return TASKS[ref]
    if is_task_file(ref):
        return read_task_file(ref)
    raise UserError(f"unknown task {ref!r}{did_you_mean(ref, TASKS)}; built-in tasks: {', '.join(TASKS)}, "
                    f"or give a task file (my-task.yaml)")


def task_data_digest(task: TaskDef) -> str | None:
    """The digest of a task file's records (`files.data_digest`), which a run records and `evaluate`
    and a resumed study compare; None for a built-in task (its data comes with vlpeft)."""
    return data_digest(task) if task.file else None


def load_task(ref: str, *, scene_seed: int = 0, paths: dict | None = None) -> TaskData:
    """Load a task by name or task file: its splits, candidate answers, image reader and a record of
    how. `paths` names the files of tasks that take them (coco-caption, vqav2: see their TaskDef);
    `scene_seed` is the synthetic-scene seed of the checkpoint's pre-training (scenes tasks)."""
    task = get_task(ref)
    given = check_paths(task, paths)
    start = time.perf_counter()
    data = task.load(task, LoadContext(paths=given, scene_seed=scene_seed))
    for split in SPLIT_NAMES:
        if not data.split(split):
            raise UserError(f"task {task.name}: the {split} split is empty")
    data.details["load_seconds"] = round(time.perf_counter() - start, 3)
    return data


@functools.lru_cache(maxsize=4)
def _cached(ref: str, scene_seed: int, paths_json: str) -> TaskData:
    return load_task(ref, scene_seed=scene_seed, paths=json.loads(paths_json))


def cached_task(ref: str, *, scene_seed: int = 0, paths: dict | None = None) -> TaskData:
    """load_task, remembered: a study worker runs many cells of the same task (tasks are read-only)."""
    return _cached(str(ref), int(scene_seed), json.dumps(paths or {}, sort_keys=True))


__all__ = ["get_task", "load_task", "task_data_digest", "cached_task", "get_kind", "task_options", "task_paths",
           "check_paths", "register_task", "register_kind", "TaskDef", "TaskKind", "TaskData", "Batch", "LoadContext",
           "TASKS", "KINDS", "SPLIT_NAMES"]
