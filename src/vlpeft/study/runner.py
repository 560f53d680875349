"""The driver of a study: validate everything, make sure the checkpoint exists, fill the store with the
grid, run what is not done on the chosen executor, record each result as it comes, export and report.

Study folder:
    results.sqlite   the store (vlpeft.store), the one source of truth; its meta also keeps the spec,
                     the consistency measures and the checkpoint's pre-training record (pretrain.json)
    results.csv      every row, metrics flattened (and results.parquet when pyarrow is installed)
    report.md        the results table
    runs/<cell id>/  each run's folder (metrics.json, curve.json, PEFT weights; error.log on a crash; with
                     `training: {log: tensorboard}` its TensorBoard events, so `tensorboard --logdir
                     <study>/runs` shows one run per cell, named by its id)

Resume: the same command again skips done cells, re-runs failed and interrupted ones (rows left
'running' by a killed driver), and adopts a run folder whose metrics.json was written but whose row
was not (a kill between the two). It refuses a folder holding a different study.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from vlpeft import store
from vlpeft.errors import UserError
from vlpeft.faults import crash_point
from vlpeft.recipes.config import fields_where
from vlpeft.recipes.progress import Heartbeat, bar_shown, fmt_seconds, lines_shown
from vlpeft.study.spec import Cell, StudySpec, check_cells, expand, fingerprint

# FinetuneConfig fields that do not change a run's result (so they are not compared on resume).
NOT_RESULT_FIELDS = fields_where(result=False)


def study_fingerprint(spec: StudySpec, legacy: bool = False) -> dict[str, Any]:
    """What every cell of the study shares; a folder whose store has another value is another study.
    Checkpoints are named by resolved path and identified by content (`checkpoint_digest`), task files
    by their parsed content; `legacy`: as folders made before that recorded them (weights only, bytes)."""
    from vlpeft.model.checkpoint import checkpoint_digest, weights_digest
    from vlpeft.tasks import get_task
    from vlpeft.tasks.files import data_digest

    models = sorted({spec.model, *spec.task_models.values()})
    results = lambda fields: {k: v for k, v in fields.items() if k not in NOT_RESULT_FIELDS}  # noqa: E731
    digest = weights_digest if legacy else checkpoint_digest
    task_file = file_digest if legacy else task_file_digest
    return _normal({
        "model": spec.model,
        "task_models": spec.task_models,
        "checkpoints": {m: digest(m) for m in models},
        "training": results(spec.training),
        "paths": spec.paths,
        "subset_seed": spec.subset_seed,
        # only when given, so folders of studies written before these existed still match
        **({"task_paths": spec.task_paths} if spec.task_paths else {}),
        **({"task_files": {t: task_file(f) for t, f in sorted(spec.task_files.items())}} if spec.task_files else {}),
        **({"task_data": {t: data_digest(get_task(f)) for t, f in sorted(spec.task_files.items())}}
           if spec.task_files else {}),
        # only when given, so folders of studies written before task_training still match
        **({"task_training": {t: results(o) for t, o in spec.task_training.items()}} if spec.task_training else {}),
        **({"lengths": spec.lengths} if spec.lengths else {}),
    })


def same_place(model: Any) -> Any:
    """A checkpoint as a study compares it: a local folder by its resolved path (so `runs/tiny/`,
    `./runs/tiny` and its absolute path are one checkpoint), a hub id as written."""
    if isinstance(model, str) and model and Path(model).expanduser().exists():
        return str(Path(model).expanduser().resolve())
    return model


def _normal(ident: dict[str, Any]) -> dict[str, Any]:
    out = dict(ident)
    if "model" in out:
        out["model"] = same_place(out["model"])
    if isinstance(out.get("task_models"), dict):  # task -> checkpoint
        out["task_models"] = {t: same_place(m) for t, m in out["task_models"].items()}
    if isinstance(out.get("checkpoints"), dict):  # checkpoint -> digest
        out["checkpoints"] = {same_place(m): h for m, h in out["checkpoints"].items()}
    return out


def file_digest(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def task_file_digest(path: str) -> str:
    """A task file by what it says (its parsed YAML), so a comment or new spacing is the same file."""
    import hashlib

    from vlpeft.io import read_yaml

    text = json.dumps(read_yaml(path, "task file"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_model(spec: StudySpec, log=print) -> None:
    """Pre-train `spec.pretrain` into `spec.model` when that folder holds no checkpoint yet."""
    from vlpeft.model.checkpoint import checkpoint_exists

    folder = Path(spec.model)
    if spec.pretrain is None or checkpoint_exists(spec.model):  # a folder, or a checkpoint shipped with vlpeft
        return
    if folder.exists() and any(folder.iterdir()) and not (folder / "config.json").exists():
        log(f"{folder}: incomplete checkpoint (no config.json): pre-training again")
    from vlpeft.recipes.pretrain import PretrainConfig, pretrain

    log(f"{folder}: no checkpoint: pre-training the {spec.pretrain} preset (once; reused by later studies)")
    record = pretrain(PretrainConfig(preset=spec.pretrain), folder)  # a bar on a terminal, else plain lines
    log(f"pre-trained in {record['train_seconds']:.0f} s -> {folder}")


def resolve_cells(spec: StudySpec) -> list[tuple[Cell, dict, int]]:
    """(cell, FinetuneConfig fields, training examples) for every cell, each checked by the check a run
    makes first (`recipes.prepare.check_cell`, without the weights on a device): a task's missing paths or
    bad options, an unreachable budget, a data size the task cannot give, text that does not fit, a
    device that is not there, or an image the cells will use that does not decode is a UserError naming
    the spec's key before anything runs."""
    import vlpeft
    from vlpeft.model.checkpoint import checkpoint_exists
    from vlpeft.recipes.config import FinetuneConfig
    from vlpeft.recipes.prepare import CellError, check_cell

    models: dict[str, tuple] = {}  # checkpoint -> (model config, its pre-training record, tokenizer or None)

    def model_of(name: str) -> tuple:
        if name not in models:
            if name == spec.model and spec.pretrain is not None and not checkpoint_exists(name):
                from vlpeft.model.config import preset  # not pre-trained yet: the preset's architecture

                models[name] = (preset(spec.pretrain), None, None)
            else:
                loaded = vlpeft.load_model(name)
                models[name] = (loaded.model.cfg, loaded.pretrain, loaded.tokenizer)
        return models[name]

    checked, out, sizes, largest = set(), [], {}, {}
    for cell in expand(spec):
        fields = cell.finetune_fields(spec)
        cfg = FinetuneConfig(**fields)  # types and ranges
        prefix = {"task": f"{spec.source}: task {cell.task}: ", "text": f"{spec.source}: {cell.label} on {cell.task}: ",
                  "method": f"{spec.source}: methods.{cell.label} on {cell.task}: ", "size": ""}
        try:
            c = check_cell(cfg, *model_of(cfg.model), size_name=f"{spec.source}: data_sizes {cell.data_size!r} on "
                                                                f"{cell.task}")
        except CellError as e:
            msg = str(e)
            if e.stage == "task" and msg.startswith(f"task {cell.task}: "):
                msg = msg[len(f"task {cell.task}: "):]
            raise UserError(prefix[e.stage] + msg) from None
        other = sizes.setdefault((cell.task, c.n), cell.data_size)
        if str(other) != str(cell.data_size):  # two sizes, one subset: identical cells under two names
            raise UserError(f"{spec.source}: data_sizes {other!r} and {cell.data_size!r} are both {c.n} examples of "
                            f"{cell.task}'s {len(c.data.train)}; give each size once")
        if cfg.log == "tensorboard" and "tensorboard" not in checked:
            from vlpeft.recipes.runlog import require_tensorboard

            require_tensorboard(f"{spec.source}: log tensorboard")
            checked.add("tensorboard")
        if cfg.device not in checked:
            try:
                check_device(cfg.device, spec.executor)
            except UserError as e:
                raise UserError(f"{prefix['text']}{e}") from None
            checked.add(cfg.device)
        if c.n > largest.get(cell.task, (0,))[0]:
            largest[cell.task] = (c.n, cfg, c)
        out.append((cell, fields, c.n))
    for name, (n, cfg, c) in largest.items():  # decode every image the cells will use, once (subsets are nested)
        used = c.data.select(n, cfg.subset_seed, cfg.val_limit, cfg.test_limit)
        try:
            c.data.check_images([ex.image_id for split in used for ex in split])
        except UserError as e:
            raise UserError(f"{spec.source}: task {name}: {e}") from None
    return out


def check_device(device: str, executor) -> None:
    """A run asking for CUDA must get it where it runs: here for the local executor, and for Ray a
    task given GPUs (a Ray task without any sees none)."""
    if device != "cuda":
        return
    if executor.kind == "ray" and not executor.gpus:
        raise UserError("device cuda: give the Ray executor gpus (a Ray task without GPUs sees none)")
    if executor.kind == "local":
        import torch

        if not torch.cuda.is_available():
            raise UserError("device cuda: no CUDA device is available on this machine")


def open_store(out: Path, spec: StudySpec, ident: dict) -> Any:
    """The folder's store, created for this study or checked to belong to it (untouched if not)."""
    path = out / "results.sqlite"
    if not path.exists():
        if out.exists() and any(p for p in out.iterdir() if not p.name.startswith(".")):
            raise UserError(f"{out}: folder is not empty and holds no study (results.sqlite); choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        con = store.connect(path)
        store.write_meta(con, fingerprint=fingerprint(ident), identity=ident, name=spec.name,
                         created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        return con
    found = store.study_meta(path)  # read-only look first: a foreign store must stay untouched
    if found.name not in (None, spec.name):  # its report is titled and gridded as that study
        raise UserError(f"{out}: holds the study {found.name!r}, not {spec.name!r}; use another --out "
                        f"(or the name {found.name!r} to extend that study)")
    if found.fingerprint == fingerprint(ident):
        return store.connect(path)
    diff = differences(found, spec, ident)
    if diff:
        raise UserError(f"{out}: holds a different study (its {', '.join(diff)} differ from this spec's); "
                        f"use another --out")
    con = store.connect(path)  # the same study, recorded another way: recorded as this version does from now on
    store.write_meta(con, fingerprint=fingerprint(ident), identity=ident)
    return con


def record_pretrain(con, spec: StudySpec) -> None:
    """Keep the study checkpoint's pre-training record (its pretrain.json, if it has one: a folder
    pre-trained by vlpeft, or the shipped tiny) in the store, so that the report reads it there and
    not from the checkpoint folder. Written when the study starts or resumes, only when changed; a
    record stays when its file later goes (the checkpoint, compared by digest, is the same)."""
    from vlpeft.model.checkpoint import pretrain_record

    record = pretrain_record(spec.model)
    if record is not None:
        store.write_meta(con, pretrain=record)


def differences(meta: store.StudyMeta, spec: StudySpec, ident: dict) -> list[str]:
    """What differs between this study (`spec`, its `ident`) and the one a store's `meta` records;
    [] for the same study."""
    if meta.fingerprint == fingerprint(ident):
        return []
    return identity_diff(meta.identity, ident, lambda: study_fingerprint(spec, True))


def identity_diff(theirs: dict, ident: dict, legacy: Callable[[], dict]) -> list[str]:
    """The keys of this study's identity that differ from a store's recorded one, comparing what each
    means: checkpoints by resolved path and content, task files by parsed content; a key recorded the
    way older versions did (`legacy`) is the same when it equals that. A store made before task data
    was compared has no task_data: not a difference."""
    theirs, old = _normal(theirs), None
    same = lambda a, b: json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)  # noqa: E731
    diff = []
    for key, value in ident.items():
        if key == "task_data" and key not in theirs or same(theirs.get(key), value):
            continue
        old = old if old is not None else legacy()
        if not same(theirs.get(key), old.get(key)):
            diff.append(key)
    return diff + [key for key in theirs if key not in ident]  # given then, not now


def _comparable(config: dict) -> str:
    """A cell's settings as resume compares them: result fields only, the checkpoint by `same_place`."""
    kept = {k: same_place(v) if k == "model" else v for k, v in config.items() if k not in NOT_RESULT_FIELDS}
    return json.dumps(kept, sort_keys=True, default=str)


def _adoptable(run_dir: Path, config: dict) -> dict | None:
    """metrics.json of a finished run whose row was never updated (driver killed in between)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    saved = {k: v for k, v in (metrics.get("config") or {}).items() if k in config}
    return metrics if metrics.get("status") == "done" and _comparable(saved) == _comparable(config) else None


def _adopted(con, out: Path, cell: Cell, fields: dict) -> dict | None:
    """Record a finished run whose row was never updated (the driver killed in between); its metrics."""
    adopted = _adoptable(out / "runs" / cell.id, fields)
    if adopted is not None:
        store.finish(con, cell.id, {"status": "done", "metrics": adopted})
    return adopted


def _execute(con, spec: StudySpec, out: Path, todo: list[tuple[int, Cell, dict]], quiet: bool,
             keep: frozenset[str] = frozenset()) -> None:
    """Run `todo` ((examples, cell, fields)) on the spec's executor, recording each result as it comes,
    the longest expected first (`study.cost`: the workers finish together; the ETA uses the same costs).
    `keep`: the ids of the runs that keep their training state (the length check's originals)."""
    from vlpeft.study import cost, executors

    expected = cost.expected_seconds(todo, store.rows(con))
    todo = cost.longest_first(todo, expected)
    ex = spec.executor
    # Absolute paths: Ray workers need not share the driver's working folder.
    cache = {"feature_cache_dir": str((out / "cache" / "features").resolve())}  # shared by the workers
    runs = (out / "runs").resolve()
    # The length check's originals keep their training state, and each check goes on from its original's
    # (the same run as training it from scratch, without the steps both share: recipes/finetune.py).
    payloads = [{"id": c.id, "config": {**cache, **f}, "run_dir": str(runs / c.id), "threads": ex.threads,
                 "keep_state": c.id in keep,
                 "resume": str(runs / original_of(c.id)) if c.check is not None else None} for _, c, f in todo]
    progress = Progress(len(todo), quiet=quiet, expected=expected)

    def on_start(cell_id):
        store.mark_running(con, cell_id)

    def on_done(cell_id, result):
        if result.get("disk"):  # a full or read-only disk: every cell would fail the same way
            from vlpeft.errors import DiskError

            raise DiskError(f"{result['reason']}; the study stopped (every finished run is kept): free some "
                            f"space and run the same command again to go on")
        store.finish(con, cell_id, result)
        progress.finished(cell_id, result)
        crash_point("after_result")

    try:
        if ex.kind == "ray":
            executors.run_ray(payloads, ex.threads, ex.gpus, ex.address, on_start, on_done)
        else:
            executors.run_local(payloads, ex.workers, ex.threads, on_start, on_done, gpus=int(ex.gpus))
    finally:
        progress.close()


def length_check_cells(spec: StudySpec, cells: list[tuple[Cell, dict, int]],
                       rows: dict[str, dict]) -> list[tuple[Cell, dict, int]]:
    """The length check's cells (`spec.length_check` = k), once the grid has run: the cells chosen by
    `spec.check_cells` whose original run finished, each with the original's fields trained k times
    longer (`spec.lengthened`, from how long the original actually trained)."""
    fields_of = {c.id: f for c, f, _ in cells}
    out = []
    for cell, n in check_cells(spec, [(c, n) for c, _, n in cells]):
        original = rows.get(original_of(cell.id))
        if original is None or original["status"] != "done":
            continue
        out.append((cell, lengthened(fields_of[original["id"]], spec.length_check, json.loads(original["metrics"])),
                    n))
    return out


def original_of(check_id: str) -> str:
    """The grid cell a length-check cell trains longer (its id less the trailing `.xK`)."""
    return check_id.rsplit(".", 1)[0]


def lengthened(fields: dict[str, Any], k: int, original: dict[str, Any]) -> dict[str, Any]:
    """The FinetuneConfig fields of a length-check run: a cell's `fields` trained k times longer than
    its `original` run (its metrics) did. Under converge: at least k times the steps it ran
    (min_steps), the cap (max_steps, max_epochs) k times higher, the same warm-up; then the usual
    stopping rule. A fixed length (steps, epochs, the epochs_min_steps floor) k times over."""
    from vlpeft.recipes.config import FinetuneConfig
    from vlpeft.recipes.length import warmup_steps

    cfg = FinetuneConfig(**fields)
    longer = {
        "converge": lambda: {"min_steps": k * int(original.get("steps_done") or 0), "max_steps": k * cfg.max_steps,
                             "max_epochs": k * cfg.max_epochs, "warmup_steps": warmup_steps(cfg, int(
                                 original.get("steps") or cfg.max_steps))},
        "steps": lambda: {"steps": k * cfg.steps},
        "epochs": lambda: {"epochs": k * cfg.epochs},
        "epochs_min_steps": lambda: {"epochs": k * cfg.epochs, "min_steps": k * cfg.min_steps},
    }[cfg.length_policy]()
    return {**fields, **longer}


class Progress:
    """Done/total, failures and ETA: a live bar on a terminal, one line per finished run, and in a log
    (stdout not a terminal) a plain line at least every PLAIN_SECONDS (`recipes.progress`) between them."""

    def __init__(self, total: int, quiet: bool = False, expected: dict[str, float] | None = None):
        self.total, self.done, self.failed, self.quiet = total, 0, 0, quiet
        self.expected, self.finished_ids = expected or {}, set()
        self.t0 = time.time()
        self.bar = None
        if bar_shown() and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="study", unit="run", dynamic_ncols=True)
        self.beat = Heartbeat(self.describe) if lines_shown() and not quiet and total else None

    def describe(self) -> str:
        """The plain progress line: cells done, rate, ETA."""
        elapsed = time.time() - self.t0
        rate = f", {self.done / elapsed * 3600:.3g} runs/h" if self.done and elapsed > 0 else ""
        return (f"study: {self.done}/{self.total} runs done{f', {self.failed} failed' if self.failed else ''}, "
                f"{fmt_seconds(elapsed)} elapsed{rate}, ETA {self.eta()}")

    def eta(self) -> str:
        from vlpeft.study.cost import eta_seconds

        if not self.done:
            return "?"
        left = eta_seconds(time.time() - self.t0, self.expected, self.finished_ids) if self.expected else None
        if left is None:
            left = (time.time() - self.t0) / self.done * (self.total - self.done)
        return fmt_seconds(left)

    def finished(self, cell_id: str, result: dict) -> None:
        self.done += 1
        self.finished_ids.add(cell_id)
        m = result.get("metrics") or {}
        if result["status"] == "done":
            what = f"{m.get('metric')} {m.get('test_score', float('nan')):.4g}"
        else:
            self.failed += 1
            what = f"FAILED: {result.get('reason')}"
        seconds = (result.get("ended") or time.time()) - (result.get("started") or time.time())
        line = (f"[{self.done}/{self.total}{f', {self.failed} failed' if self.failed else ''}, ETA {self.eta()}] "
                f"{cell_id}: {what} ({seconds:.0f} s)")
        if self.bar is not None:
            self.bar.write(line)
            self.bar.set_postfix(failed=self.failed)
            self.bar.update(1)
        elif self.beat is not None:
            self.beat.write(line)  # the next plain line comes PLAIN_SECONDS after this one
        elif not self.quiet:
            print(line, flush=True)

    def close(self):
        if self.beat is not None:
            self.beat.close()
        if self.bar is not None:
            self.bar.close()


def run_study(spec: StudySpec, out: str | Path, quiet: bool = False, log=print) -> dict[str, Any]:
    """Run (or resume) the study into `out`; returns a summary {total, done, failed, ran, seconds}."""
    from vlpeft import lock
    from vlpeft.io import check_writable
    from vlpeft.model.checkpoint import checkpoint_exists

    out = Path(out)
    t0 = time.time()
    cells = resolve_cells(spec)  # every input problem surfaces here, before any writing
    try:
        check_writable(out, "study folder")
    except UserError:
        finished = finished_as_is(out, spec, cells, t0)
        if finished is None:
            raise
        return finished  # a finished study on read-only media: the same command is still a no-op
    if spec.pretrain is not None and not checkpoint_exists(spec.model):
        check_writable(spec.model, "checkpoint folder")
    made = [p for p in (out, *out.parents) if not p.exists()]  # the folders this call makes, deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with lock.hold(out):  # one study process per folder
            return _run_held(spec, out, cells, t0, quiet, log)
    except BaseException:
        for p in made:  # a study that failed before writing anything (Ray unreachable) leaves no new folder
            try:
                p.rmdir()  # only an empty folder: never anything a study wrote
            except OSError:
                break
        raise


def finished_as_is(out: Path, spec: StudySpec, cells: list, t0: float) -> dict[str, Any] | None:
    """The summary of running `spec` again in `out` when that would do no work (the same study, every
    cell and length check done with these settings, the report written), read without writing
    anything; else None."""
    if not (out / "results.sqlite").is_file() or not (out / "report.html").is_file():
        return None
    try:
        meta, rows = store.read(out)
    except UserError:
        return None
    if meta.name != spec.name or differences(meta, spec, study_fingerprint(spec)):
        return None
    by_id = {r["id"]: r for r in rows}
    done = lambda c, f: (r := by_id.get(c.id)) is not None and r["status"] == "done" and \
        _comparable(json.loads(r["config"])) == _comparable(f)  # noqa: E731
    if not all(done(c, f) for c, f, _ in cells):
        return None
    checks = length_check_cells(spec, cells, by_id)
    if not all(done(c, f) for c, f, _ in checks):
        return None
    n = len(cells) + len(checks)
    return {"total": n, "done": n, "failed": 0, "ran": 0, "seconds": round(time.time() - t0, 1), "grid_seconds": 0.0}


def _run_held(spec: StudySpec, out: Path, cells: list, t0: float, quiet: bool, log) -> dict[str, Any]:
    from vlpeft.study import executors

    ensure_model(spec, log=log)
    with executors.session(spec.executor.kind, spec.executor.address):  # Ray reached before the store is written
        return _run_grid(spec, out, cells, t0, quiet, log)


def _run_grid(spec: StudySpec, out: Path, cells: list, t0: float, quiet: bool, log) -> dict[str, Any]:
    from vlpeft.study import export

    ident = study_fingerprint(spec)
    con = open_store(out, spec, ident)
    try:
        record_pretrain(con, spec)
        store.add_cells(con, [(c, f) for c, f, _ in cells])
        existing = {r["id"]: r for r in store.rows(con)}
        for cell, fields, _ in cells:
            if _comparable(json.loads(existing[cell.id]["config"])) != _comparable(fields):
                raise UserError(f"{out}: cell {cell.id} was recorded with other settings (method options or "
                                f"learning rate changed under the same label); use another --out or another label")
        interrupted = store.reset_interrupted(con)
        if interrupted:
            log(f"{interrupted} run(s) were interrupted last time: running them again")
        todo = [(n, cell, fields) for cell, fields, n in cells
                if existing[cell.id]["status"] != "done" and _adopted(con, out, cell, fields) is None]
        ex = spec.executor
        n_cells = len(cells)
        log(
            f"study {spec.name}: {n_cells} cells, {n_cells - len(todo)} done, {len(todo)} to run "
            f"({ex.kind} executor, {ex.workers if ex.kind == 'local' else 'ray'} worker(s) x {ex.threads} thread(s)) "
            f"-> {out}"
        )
        if any(f.get("log") == "tensorboard" for _, f, _ in cells):
            log(f"TensorBoard events in each run folder: tensorboard --logdir {out / 'runs'}")
        grid_started = time.time()
        originals = frozenset(original_of(c.id) for c, _ in check_cells(spec, [(c, n) for c, _, n in cells]))
        _execute(con, spec, out, todo, quiet, keep=originals)
        ran = len(todo)
        checks = length_check_cells(spec, cells, {r["id"]: r for r in store.rows(con)})
        if checks:
            store.add_cells(con, [(c, f) for c, f, _ in checks])
            existing = {r["id"]: r for r in store.rows(con)}
            todo = [(n, c, f) for c, f, n in checks if existing[c.id]["status"] != "done"
                    and _adopted(con, out, c, f) is None]
            log(f"length check: {len(checks)} cell(s) trained {spec.length_check}x longer, {len(todo)} to run")
            _execute(con, spec, out, todo, quiet)
            cells, ran = cells + checks, ran + len(todo)
        grid_seconds = time.time() - grid_started
        ids = [c.id for c, _, _ in cells]
        record_study(con, spec, log)
        export.export_all(con, out)
        from vlpeft.analysis import report

        report.build(out)
        counts: dict[str, int] = {}
        wanted = set(ids)
        for r in store.rows(con):
            if r["id"] in wanted:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
    finally:
        con.close()
    summary = {"total": len(cells), "done": counts.get("done", 0), "failed": counts.get("failed", 0), "ran": ran,
               "seconds": round(time.time() - t0, 1), "grid_seconds": round(grid_seconds, 1)}
    return summary


def record_study(con, spec: StudySpec, log=print) -> None:
    """Keep the spec and the checkpoint's consistency measures in the store (written only when new)."""
    import dataclasses

    values: dict[str, Any] = {"spec": dataclasses.asdict(spec)}
    measured = dict(store.study_meta(con).consistency)
    missing = [t for t in spec.tasks if t not in measured]
    if missing:
        from vlpeft.recipes.config import FinetuneConfig
        from vlpeft.tasks.consistency import measure

        def text_len(t: str) -> int:  # as the task's runs keep their texts
            return int({**spec.training, **spec.task_training.get(t, {})}.get("max_text_len",
                                                                              FinetuneConfig.max_text_len))

        for model, length in sorted({(spec.task_models.get(t, spec.model), text_len(t)) for t in missing}):
            tasks = [t for t in missing if (spec.task_models.get(t, spec.model), text_len(t)) == (model, length)]
            try:
                measured.update(measure(model, [(spec.task_ref(t), spec.task_paths_of(t)) for t in tasks],
                                        max_text_len=length))
            except Exception as e:  # a report without these numbers beats no report
                log(f"consistency measures of {', '.join(tasks)} skipped ({e.__class__.__name__}: {e})")
        values["consistency"] = measured
    store.write_meta(con, **values)  # only what changed


def dry_run(spec: StudySpec) -> list[dict[str, Any]]:
    """The cells the spec expands to, checked, without writing anything."""
    return [{"id": c.id, "examples": n} for c, _, n in resolve_cells(spec)]


def dry_run_checks(spec: StudySpec, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The length check's cells of a dry run (`dry_run`'s cells): id, examples, and the run they lengthen."""
    examples = {c["id"]: c["examples"] for c in cells}
    grid = {c.id: c for c in expand(spec)}
    return [{"id": c.id, "examples": n, "of": c.id.rsplit(".", 1)[0]}
            for c, n in check_cells(spec, [(grid[i], n) for i, n in examples.items()])]


__all__ = ["run_study", "dry_run", "resolve_cells"]
