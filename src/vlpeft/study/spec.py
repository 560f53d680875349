"""The study spec: one YAML file declaring the whole grid, validated, expanded into cells with stable IDs.

A spec (see the presets in src/vlpeft/configs/*.yaml for complete, commented examples):

    name: quick
    model: tiny               # shipped with vlpeft, or a checkpoint folder (relative to where you run) or hub id
    pretrain: tiny            # if `model` is a missing folder, pre-train this preset into it first
    tasks: [scenes-caption, easyvqa-vqa, my-task.yaml]   # built-in names or task files (vlpeft.tasks.files)
    paths: {karpathy_json: $COCO/dataset_coco.json, image_root: $COCO}   # each task takes the keys it knows
    task_paths: {vqav2: {image_root: /data/coco}}         # one task's own paths, over `paths`
    methods:                  # label -> grid of one PEFT method (label defaults to the method's name)
      lora: {budgets: [2, 8]}
      lora-vision: {method: lora, budgets: ["params=20k"], options: {placement: [vision]}}
      full: {lr: [3e-5, 1e-4]}            # a learning-rate grid, selected on validation by the report
      prefix: {budgets: [8], task_training: {easyvqa-vqa: {steps: 600}}}   # a label's own training fields
    data_sizes: [250, "10%", 1.0]
    seeds: [0, 1]
    training: {max_steps: 3000, val_limit: 800}   # FinetuneConfig fields (default length: converge)
    lengths:                  # optional: the whole grid under each training length (cells get `.L<name>`)
      epochs: {length_policy: epochs, epochs: 5}        # equal epochs: more data, more steps
      steps: {length_policy: steps, steps: 300}         # equal optimiser steps (compute-matched)
    task_training: {easyvqa-vqa: {min_steps: 1000}, scenes-caption: {task_options: {num_beams: 3}}}  # per task
    length_check: 2           # once the grid has run: a few cells again, at least twice as long
    executor: {kind: local, workers: 2, threads: 1}

A cell is task x method label x budget x data size x seed x learning rate. Its ID is built from those
values only, e.g. `easyvqa-vqa.lora.b8.n250.s0` (`.lr1e-3` is added when the label has an lr grid,
`.Lsteps` when the spec has `lengths`),
so the same cell always has the same ID whatever else the spec holds. Everything else that shapes a
result (model, training settings, paths, method options) is part of the cell's resolved config, which
the store compares before reusing a result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vlpeft.errors import UserError, did_you_mean, shown
from vlpeft.validate import SEED_MAX, check_values, coerce, from_mapping

# Presets ship inside the package (package data), so they are found after a non-editable install too.
PRESET_DIR = importlib.resources.files("vlpeft") / "configs"
EXECUTORS = ("local", "ray")
LENGTH_FIELDS = ("length_policy", "epochs", "min_steps", "min_epochs", "steps", "max_steps", "max_epochs",
                 "eval_every", "eval_growth", "patience", "patience_ratio", "noise_z", "warmup_steps")


@dataclass(frozen=True)
class MethodGrid:
    method: str = field(default="", metadata={"help": "PEFT method name (vlpeft.peft.REGISTRY); defaults to the label"})
    budgets: tuple[int | str, ...] = field(
        default=(), metadata={"help": "knob values (8) or parameter targets ('params=50k'); empty for methods "
                                      "without a knob, or for the default knob"})
    options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "other method config fields (placement, targets, ...)"}
    )
    lr: tuple[float, ...] = field(
        default=(), metadata={"min": 0, "help": "learning rates to try (empty: the method's default); the report "
                                                "selects on validation"})
    training: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "FinetuneConfig fields for this label's runs, over the study's "
                                                "training, lengths and task_training (e.g. a slower method's steps)"})
    task_training: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "task -> FinetuneConfig fields for this label's runs on that task, "
                                                "applied last"})


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str = field(default="local", metadata={"help": "local (worker processes here) or ray", "choices": EXECUTORS})
    workers: int = field(default=2, metadata={"min": 0, "help": "local: worker processes (0 = run in this process)"})
    threads: int = field(default=1, metadata={"min": 1, "help": "torch threads per run (per worker / per Ray task)"})
    address: str | None = field(default=None, metadata={"help": "ray: cluster address (None = start a local instance)"})
    gpus: float = field(default=0.0, metadata={"min": 0, "help": "ray: GPUs per run (fractions share a GPU: 0.25 = "
                                                                 "four runs on one); local: GPUs to spread the "
                                                                 "workers over (worker i on GPU i mod gpus)"})


@dataclass(frozen=True)
class StudySpec:
    name: str = field(metadata={"help": "study name (shown in the report)"})
    model: str = field(metadata={"help": "tiny (shipped with vlpeft), a checkpoint folder or a hub id"})
    tasks: tuple[str, ...] = field(
        metadata={"help": "built-in task names (`vlpeft tasks`) or task files of your own data (relative to the "
                          "spec's folder); cells are named by task name"})
    methods: dict[str, MethodGrid] = field(metadata={"help": "label -> MethodGrid"})
    data_sizes: tuple[int | float | str, ...] = field(
        metadata={"help": "training-set sizes: counts (250) or fractions (0.1, '10%')"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"min": 0, "max": SEED_MAX, "help": "training seeds"})
    task_models: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "task -> checkpoint, overriding `model` for that task (e.g. BLIP's captioning and VQA checkpoints)"
        },
    )
    pretrain: str | None = field(default=None, metadata={"help": "pre-train this preset into `model` if it is missing"})
    subset_seed: int = field(default=0, metadata={"min": 0, "max": SEED_MAX, "help": "seed of the nested data subsets"})
    training: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "FinetuneConfig fields shared by every run"})
    task_training: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "task -> FinetuneConfig fields overriding `training` (and `lengths`) for that task's runs"},
    )
    lengths: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={"help": "name -> training-length fields (length_policy and its numbers: epochs, steps, "
                          "min_steps, max_steps, ...): the grid runs under each, so the report can compare training "
                          "to convergence with equal optimiser steps"},
    )
    paths: dict[str, str] = field(
        default_factory=dict, metadata={"help": "data files of tasks that take them (coco-caption, vqav2): each task "
                                                "takes the keys it knows"})
    task_paths: dict[str, dict[str, str]] = field(
        default_factory=dict, metadata={"help": "task -> data files of that task alone, overriding `paths`"})
    length_check: int = field(
        default=0,
        metadata={"help": "k >= 2: once the grid has run, re-run for each task x method label the smallest and the "
                          "largest data size at the middle budget (first seed) k times longer (at least k times "
                          "the steps the run took, under a cap k times higher; or a fixed length times k); the "
                          "report says whether any verdict would change, and makes those `confounded`. 0: none"},
    )
    executor: ExecutorSpec = field(default_factory=ExecutorSpec, metadata={"help": "how runs are executed"})
    source: str = field(default="spec", metadata={"help": "where the spec came from (for messages)"})
    task_files: dict[str, str] = field(
        default_factory=dict, metadata={"help": "task name -> its task file (absolute path), for tasks given as files"})

    def task_ref(self, task: str) -> str:
        """How a run names the task: the built-in name, or the task file."""
        return self.task_files.get(task, task)

    def task_paths_of(self, task: str) -> dict[str, str]:
        """The data paths of one task: the study-wide `paths` it knows, then its own `task_paths`."""
        from vlpeft.tasks import get_task, task_paths

        return {**task_paths(get_task(self.task_ref(task)), self.paths), **self.task_paths.get(task, {})}


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    id: str
    task: str
    label: str
    method: str
    budget: str | None
    data_size: Any
    seed: int
    lr: float | None
    length: str | None = None  # a name of the spec's `lengths`, or None: `training` alone
    check: int | None = None  # k: a length-check cell, trained k times longer (None: a cell of the grid)

    def finetune_fields(self, spec: StudySpec) -> dict[str, Any]:
        """The FinetuneConfig fields of this cell (model, threads and device are the executor's):
        `training`, then the cell's length, then the task's own `task_training`, then the method label's
        `training` and its `task_training` for this task."""
        grid = spec.methods[self.label]
        length = spec.lengths[self.length] if self.length else {}
        return {**spec.training, **length, **spec.task_training.get(self.task, {}),
                **grid.training, **grid.task_training.get(self.task, {}),
                "model": spec.task_models.get(self.task, spec.model), "task": spec.task_ref(self.task),
                "method": self.method, "budget": self.budget, "method_options": dict(grid.options),
                "data_size": self.data_size, "seed": self.seed, "subset_seed": spec.subset_seed, "lr": self.lr,
                "paths": spec.task_paths_of(self.task)}


# ------------------------------------------------------------------------------------------ loading

def find_spec(name_or_path: str) -> Path:
    """A preset name (NAME.yaml in the package's configs/, i.e. PRESET_DIR) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"{path}: study spec not found")
        return path
    presets = sorted(p.name[:-len(".yaml")] for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml") and p.is_file())
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise UserError(f"study: {name_or_path!r} is neither a YAML file nor a preset"
                        f"{did_you_mean(name_or_path, presets)} (presets: {', '.join(presets)})")
    return Path(str(candidate))  # a plain Path for callers (files() already gives one for a package on disk)


def load_spec(name_or_path: str, overrides: Sequence[str] = ()) -> StudySpec:
    """The spec of a preset or YAML file, with `overrides` (`--set KEY=VALUE`) applied before it is
    checked, so an overridden key is checked as if the file said it."""
    from vlpeft.io import read_yaml

    path = find_spec(name_or_path)
    return parse_spec(with_overrides(read_yaml(path, "study spec"), overrides), str(path))


def with_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """`data` (a spec mapping) with each `KEY=VALUE` of `overrides` set: KEY a dotted path of mapping
    keys (missing ones are made), VALUE read as YAML (5, 1e-3, [0, 1], true, a string), as torchtune's
    `key=value` overrides. A malformed override is a one-line UserError naming it."""
    import copy

    import yaml

    if not overrides:
        return data
    data = copy.deepcopy(data) if isinstance(data, dict) else data
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise UserError(f"--set {item!r}: expected KEY=VALUE with KEY a dotted key of the spec, e.g. "
                            f"training.patience=5")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"--set {key}: {text!r} is not a YAML value") from None
        node = data
        for depth, part in enumerate(parts):
            if not isinstance(node, dict):
                where = ".".join(parts[:depth]) or "the spec"
                raise UserError(f"--set {key}: {where} is not a mapping ({shown(node)}), so it has no key {part!r}")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if node.get(part) is None:  # a key the file leaves out (or empty): a new mapping
                    node[part] = {}
                node = node[part]
    return data


def parse_spec(data: Any, source: str = "spec") -> StudySpec:
    """Validate a spec mapping: every problem is a one-line UserError naming the key. `from_mapping`
    builds the typed spec (keys, types and the ranges in the fields' metadata); what types cannot say
    is checked here after it."""
    from vlpeft.data.subsets import parse_size
    from vlpeft.peft import REGISTRY, get_method, make_config
    from vlpeft.peft.budget import parse_budget
    if data is None:
        raise UserError(f"{source}: the study spec is empty")
    spec = from_mapping(StudySpec, data, source, what="keys", skip=("source", "task_files"))
    model = spec.model
    if not model.strip():
        raise UserError(f"{source}: model: empty; name a checkpoint folder or a hub id")
    if spec.pretrain is not None:
        from vlpeft.model.config import PRESETS

        if spec.pretrain not in PRESETS:
            raise UserError(f"{source}: pretrain: unknown preset {spec.pretrain!r}"
                            f"{did_you_mean(spec.pretrain, PRESETS)}")
    tasks, task_files = _tasks(spec.tasks, source)
    _only_tasks(spec.task_models, tasks, f"{source}: task_models")

    if not spec.methods:
        raise UserError(f"{source}: methods is empty: the grid has no cell")
    methods = {}
    for label, grid in spec.methods.items():
        where = f"{source}: methods.{label}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", label):
            raise UserError(f"{where}: a label may hold only letters, digits, '-' and '_'")
        method = grid.method or label
        try:
            knob = get_method(method).knob
        except UserError:
            raise UserError(f"{where}: unknown method {method!r}{did_you_mean(method, REGISTRY)}") from None
        for b in grid.budgets:
            if isinstance(b, bool) or not isinstance(b, (int, str)):
                raise UserError(f"{where}.budgets: {b!r} is not a knob value (8) or a parameter target ('params=50k')")
            try:
                parse_budget(b)
            except UserError as e:
                raise UserError(f"{where}.budgets: {e}") from None
        if grid.budgets and knob is None:
            raise UserError(f"{where}.budgets: {method} has no size knob: give no budgets")
        make_config(method, grid.options, source=where)
        methods[label] = dataclasses.replace(grid, method=method)

    sizes = spec.data_sizes
    if not sizes:
        raise UserError(f"{source}: data_sizes is empty: the grid has no cell")
    for s in sizes:  # the range check against each task's pool happens when cells are resolved
        parse_size(s, f"{source}: data_sizes {s!r}")
    if not spec.seeds:
        raise UserError(f"{source}: seeds is empty: the grid has no cell")
    if len(set(spec.seeds)) != len(spec.seeds) or len(set(map(str, sizes))) != len(sizes):
        raise UserError(f"{source}: seeds and data_sizes must not repeat a value")

    training = _training(spec.training, f"{source}: training", model, tasks[0])
    _only_tasks(spec.task_training, tasks, f"{source}: task_training")
    task_training = {t: _training(v, f"{source}: task_training.{t}", model, t, base=training)
                     for t, v in spec.task_training.items()}
    for label, grid in methods.items():  # a label's own training fields, checked like the study's
        where = f"{source}: methods.{label}"
        own = _training(grid.training, f"{where}.training", model, tasks[0], base=training)
        _only_tasks(grid.task_training, tasks, f"{where}.task_training")
        per_task = {t: _training(v, f"{where}.task_training.{t}", model, t,
                                 base={**training, **task_training.get(t, {}), **own})
                    for t, v in grid.task_training.items()}
        methods[label] = dataclasses.replace(grid, training=own, task_training=per_task)
    lengths = {}
    for length, fields in spec.lengths.items():
        where = f"{source}: lengths.{length}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", length):
            raise UserError(f"{where}: a length's name may hold only lower-case letters, digits, '-' and '_'")
        extra = sorted(set(fields) - set(LENGTH_FIELDS))
        if extra or "length_policy" not in fields:
            raise UserError(f"{where}: give length_policy and its numbers ({', '.join(LENGTH_FIELDS)})"
                            + (f"; {extra[0]!r} is not a length field" if extra else ""))
        lengths[length] = _training(fields, where, model, tasks[0], base=training)
    for label, grid in methods.items() if lengths else ():
        own = [*grid.training, *(k for v in grid.task_training.values() for k in v)]
        clash = next((k for k in own if k in LENGTH_FIELDS), None)
        if clash:
            raise UserError(f"{source}: methods.{label}: {clash!r} would override the study's lengths (each "
                            "length must mean the same for every method); set it in lengths instead")

    if spec.length_check == 1 or spec.length_check < 0:
        raise UserError(f"{source}: length_check must be 0 (no check) or a factor k >= 2, got {spec.length_check}")
    _check_gpus(spec.executor, f"{source}: executor.gpus")
    return dataclasses.replace(
        spec,
        tasks=tuple(tasks),
        methods=methods,
        training=training,
        task_training=task_training,
        lengths=lengths,
        paths=_expand_paths(spec.paths, f"{source}: paths"),
        task_paths=_task_paths(spec.task_paths, tasks, task_files, source),
        source=source,
        task_files=task_files,
    )


def _tasks(entries: tuple[str, ...], source: str) -> tuple[list[str], dict[str, str]]:
    """Task names, and name -> task file for the entries that are files (relative to the spec's folder)."""
    from vlpeft.tasks import TASKS, get_task
    from vlpeft.tasks.files import is_task_file

    if not entries:
        raise UserError(f"{source}: tasks is empty: the grid has no cell")
    base = Path(source).resolve().parent if Path(source).is_file() else Path.cwd()
    names, files = [], {}
    for entry in entries:
        if entry in TASKS:
            names.append(entry)
            continue
        path = base / entry
        if not (is_task_file(entry) or path.is_file()):
            raise UserError(f"{source}: tasks: unknown task {entry!r}{did_you_mean(str(entry), TASKS)} "
                            f"(built-in tasks: {', '.join(TASKS)}, or a task file)")
        try:
            task = get_task(str(path.resolve()))
        except UserError as e:
            raise UserError(f"{source}: tasks: {e}") from None
        if task.name in files and files[task.name] != str(path.resolve()):
            raise UserError(f"{source}: tasks: {files[task.name]} and {path.resolve()} both declare the task name "
                            f"{task.name!r}; cells are named by it, so give each task file its own name")
        names.append(task.name)
        files[task.name] = str(path.resolve())
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{source}: tasks lists the task {dup!r} twice")
    return names, files


def _only_tasks(by_task: dict, tasks: list[str], where: str) -> None:
    """A UserError naming the first key of `by_task` (task -> settings) that is not one of the spec's tasks."""
    for t in by_task:
        if t not in tasks:
            raise UserError(f"{where}: {t!r} is not one of the spec's tasks{did_you_mean(t, tasks)}")


def _task_paths(raw: dict[str, dict[str, str]], tasks: list[str], task_files: dict,
                source: str) -> dict[str, dict[str, str]]:
    _only_tasks(raw, tasks, f"{source}: task_paths")
    out = {}
    for t, paths in raw.items():
        if t in task_files:
            raise UserError(f"{source}: task_paths.{t}: a task file names its own data; give no paths for it")
        out[t] = _expand_paths(paths, f"{source}: task_paths.{t}")
    return out


def _training(raw: dict[str, Any], where: str, model: str, task: str, base: dict | None = None) -> dict[str, Any]:
    """Validated FinetuneConfig fields shared by runs (cell-level keys are the grid's, not these);
    ranges are checked on `base` updated with them."""
    from vlpeft.recipes.config import FinetuneConfig

    known = [f.name for f in dataclasses.fields(FinetuneConfig) if not f.metadata.get("grid")]
    for key in raw:
        if key not in known:
            raise UserError(f"{where}: unknown or grid-level key {key!r}{did_you_mean(str(key), known)}")
    hints = typing.get_type_hints(FinetuneConfig)
    training = {key: coerce(value, hints[key], f"{where}.{key}") for key, value in raw.items()}
    try:  # range checks of FinetuneConfig itself
        FinetuneConfig(model=model, task=task, method="frozen", **{**(base or {}), **training})
    except TypeError as e:
        raise UserError(f"{where}: {e}") from e
    except UserError as e:  # "finetune: lr must be ..." -> "spec.yaml: training.lr must be ..."
        raise UserError(f"{where}.{str(e).removeprefix('finetune: ')}") from None
    return training


def _expand_paths(paths: dict[str, str], where: str) -> dict[str, str]:
    """Data paths with $VARIABLES and ~ expanded (presets name user data through the environment)."""
    from vlpeft.io import expand_path

    return {key: expand_path(value, f"{where}.{key}") for key, value in paths.items()}


def with_executor(spec: StudySpec, **changes) -> StudySpec:
    """The spec with executor settings overridden from the command line (None = keep); a bad value
    is a one-line error naming its flag."""
    changes = {k: v for k, v in changes.items() if v is not None}
    executor = dataclasses.replace(spec.executor, **changes)
    if executor.kind not in EXECUTORS:
        raise UserError(f"--executor {executor.kind!r} is not one of {', '.join(EXECUTORS)}")
    for key, value in changes.items():
        try:
            check_values(dataclasses.replace(ExecutorSpec(), **{key: value}), "")
        except UserError as e:
            rule = str(e).split(" must ", 1)[1]  # ": threads must be an integer >= 1, got 0"
            raise UserError(f"--{key} {value}: must {rule}") from None
    _check_gpus(executor, f"--gpus {executor.gpus:g}" if "gpus" in changes else f"{spec.source}: executor.gpus")
    return dataclasses.replace(spec, executor=executor)


def _check_gpus(executor: ExecutorSpec, where: str) -> None:
    if executor.kind == "local" and executor.gpus != int(executor.gpus):
        raise UserError(f"{where}: the local executor pins each worker to one whole GPU; a fraction "
                        f"({executor.gpus:g}) shares a GPU between runs on Ray (executor kind ray)")


# ---------------------------------------------------------------------------------------- expansion

def _token(value) -> str:
    """A filesystem-safe, readable rendering of a grid value."""
    text = str(value).strip().lower().replace("%", "pct").replace("params=", "p").replace("knob=", "")
    return re.sub(r"[^a-z0-9.-]+", "-", text)


def cell_id(task: str, label: str, budget, data_size, seed: int, lr: float | None, length: str | None = None,
            check: int | None = None) -> str:
    parts = [task, label]
    if budget is not None:
        parts.append(f"b{_token(budget)}")
    parts += [f"n{_token(data_size)}", f"s{seed}"]
    if lr is not None:
        parts.append(f"lr{lr:g}")
    if length is not None:
        parts.append(f"L{length}")
    if check is not None:
        parts.append(f"x{check}")
    return ".".join(parts)


def expand(spec: StudySpec) -> list[Cell]:
    """Every cell of the grid, in a stable order (task, label, budget, size, seed, lr, length)."""
    cells = []
    for task in spec.tasks:
        for label, grid in spec.methods.items():
            for budget in grid.budgets or (None,):
                for size in spec.data_sizes:
                    for seed in spec.seeds:
                        for lr in grid.lr if len(grid.lr) > 1 else (grid.lr[0] if grid.lr else None,):
                            show_lr = lr if len(grid.lr) > 1 else None
                            for length in spec.lengths or (None,):
                                cells.append(Cell(id=cell_id(task, label, budget, size, seed, show_lr, length),
                                                  task=task, label=label, method=grid.method,
                                                  budget=None if budget is None else str(budget),
                                                  data_size=size, seed=seed, lr=lr, length=length))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{spec.source}: two cells share the ID {dup!r} (a budget or size written twice?)")
    return cells


def check_cells(spec: StudySpec, sized: list[tuple[Cell, int]]) -> list[tuple[Cell, int]]:
    """The length check's cells (`spec.length_check` = k): for each task x trained method label (x lr,
    x length), the middle budget at the smallest and the largest data size (by resolved examples) with
    the first seed, each trained k times longer. `sized`: the grid's cells with their examples; returns
    the check cells with theirs."""
    if not spec.length_check:
        return []
    first_seed = spec.seeds[0]
    out, seen = [], set()
    for cell, _ in sized:
        grid = spec.methods[cell.label]
        key = (cell.task, cell.label, cell.lr, cell.length)
        if cell.method == "frozen" or key in seen:
            continue
        seen.add(key)
        budgets = [None if b is None else str(b) for b in (grid.budgets or (None,))]
        middle = budgets[len(budgets) // 2]
        mine = [(c, n) for c, n in sized if (c.task, c.label, c.lr, c.length) == key and c.budget == middle
                and c.seed == first_seed]
        ends = {min(mine, key=lambda t: t[1])[0].data_size, max(mine, key=lambda t: t[1])[0].data_size}
        for c, n in mine:
            if c.data_size in ends:
                out.append((dataclasses.replace(
                    c, check=spec.length_check,
                    id=cell_id(c.task, c.label, c.budget, c.data_size, c.seed, c.lr if len(grid.lr) > 1 else None,
                               c.length, spec.length_check)), n))
    return out


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
