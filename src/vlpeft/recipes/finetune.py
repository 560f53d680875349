"""One cell of a study: fine-tune one model with one PEFT method at one budget on one task, one data
size and one seed; by default until the validation score stops improving beyond its noise
(`vlpeft.convergence`), keeping the best evaluation's weights (step 0 included); report the test
score and whether the run converged. A plain function: config in, run folder out.

Run folder (every file written atomically; `metrics.json` last, so its presence means "complete"):
    metrics.json           scores, sizes, timings, versions, convergence, the resolved config
    curve.json             step, training loss, validation score and its standard error, learning
                           rate at every evaluation, step 0 (before training) first
    peft_config.json       the method and its config       } the PEFT weights (prefixes folded),
    peft_model.safetensors only the trained tensors         } reloadable with `vlpeft evaluate`
    events.out.tfevents.*  TensorBoard events, written as it trains (`log: tensorboard`; recipes/runlog.py)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vlpeft
from vlpeft import lock
from vlpeft.convergence import diagnose
from vlpeft.data.subsets import resolve_size
from vlpeft.errors import UserError
from vlpeft.faults import crash_point
from vlpeft.io import check_writable, write_json
from vlpeft.model.checkpoint import scene_seed_of
from vlpeft.peft import apply_peft, count_params, fold, get_method, load_peft, save_peft
from vlpeft.peft.base import trainable_state
from vlpeft.peft.budget import method_config
from vlpeft.recipes.config import FinetuneConfig
from vlpeft.recipes.progress import Steps
from vlpeft.recipes.record import environment, peak_memory_mb, reset_peak_memory
from vlpeft.recipes.runlog import RunLog, clear_events, require_tensorboard
from vlpeft.recipes.training import Diverged, adamw, optimizer_step, warmup_cosine
from vlpeft.runrecord import RunRecord
from vlpeft.tasks import cached_task, check_paths, get_kind, get_task, task_data_digest, task_options


def train_steps(cfg: FinetuneConfig, n_train: int) -> int:
    """Optimiser steps for a training subset of n_train examples under cfg.length_policy: the exact
    length of a fixed policy, the cap of `converge` (max_steps, and max_epochs passes when set)."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    if cfg.length_policy == "converge":
        return min(cfg.max_steps, max(1, math.ceil(cfg.max_epochs * per_epoch))) if cfg.max_epochs else cfg.max_steps
    if cfg.length_policy == "steps":
        return cfg.steps
    if cfg.length_policy == "epochs":
        return cfg.epochs * per_epoch
    return max(cfg.epochs * per_epoch, cfg.min_steps)


def eval_steps(cfg: FinetuneConfig, steps: int) -> list[int]:
    """The steps after which validation is evaluated (step 0, before training, comes besides): every
    `eval_every` steps and at the cap under converge; `evals` evenly spaced ones for a fixed length."""
    if not steps:
        return []
    if cfg.length_policy == "converge":
        at, step = [], 0
        while step < steps:  # intervals of eval_every, growing with the run (a window of `patience` evaluations
            step = min(steps, max(step + cfg.eval_every, round(step * cfg.eval_growth)))  # spans a fixed ratio)
            at.append(step)
        return at
    return sorted({max(1, round(steps * (i + 1) / cfg.evals)) for i in range(cfg.evals)})


def lr_factor(cfg: FinetuneConfig, step: int, steps: int) -> float:
    """The learning-rate factor at `step` (0-based): linear warm-up, then cosine decay to 0 over a fixed
    length, or constant under converge (whose length is decided as it goes: see recipes/defaults.py)."""
    if cfg.length_policy == "converge":
        return min(1.0, (step + 1) / warmup_steps(cfg, steps))
    return warmup_cosine(step, steps, warmup_steps(cfg, steps))


def warmup_steps(cfg: FinetuneConfig, steps: int) -> int:
    """Linear warm-up steps of a run of `steps` (the cap under converge): `warmup_steps` if given, else
    `warmup_ratio` of the run (under converge, of min_steps: the length is not known in advance)."""
    if cfg.warmup_steps:
        return cfg.warmup_steps
    base = min(cfg.min_steps, steps) if cfg.length_policy == "converge" else steps
    return max(1, int(base * cfg.warmup_ratio))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("finetune: device 'cuda' asked for, but no CUDA device is available")
    return torch.device(name)


@dataclass
class Prepared:
    """Everything a run needs, validated and loaded before any training or writing."""

    loaded: Any  # vlpeft.model.checkpoint.LoadedModel
    task: Any  # vlpeft.tasks.TaskDef
    kind: Any  # vlpeft.tasks.TaskKind
    data: Any  # vlpeft.tasks.TaskData
    options: Any  # the kind's options (e.g. CaptionOptions)
    train: list
    val: list
    test: list
    method_cfg: Any
    resolved: dict
    scene_seed: int


def prepare(cfg: FinetuneConfig, loaded=None, check_images: bool = True) -> Prepared:
    """Model, task, options, subsets and method, each checked; the images the run uses decoded once
    (`check_images`), so bad data stops the run before any training."""
    task = get_task(cfg.task)
    kind = get_kind(task.kind)
    options = task_options(task, cfg.task_options, f"task {task.name}: task_options")
    check_paths(task, cfg.paths)
    if loaded is None:
        loaded = vlpeft.load_model(cfg.model)
    model = loaded.model
    for part in kind.parts:
        if getattr(model, part) is None:
            raise UserError(f"{cfg.model}: task {task.name} needs a {part}, which this checkpoint lacks")
    check_text(cfg, kind, options, loaded, task.name)
    scene_seed = scene_seed_of(loaded.pretrain, cfg.scene_seed)
    data = cached_task(task.ref, scene_seed=scene_seed, paths=cfg.paths)
    n = resolve_size(cfg.data_size, len(data.train), f"task {task.name} data_size")
    train, val, test = data.select(n, cfg.subset_seed, cfg.val_limit, cfg.test_limit)
    resolved, method_cfg = method_config(model.cfg, cfg.method, cfg.budget, cfg.method_options, kind.parts,
                                         f"task {task.name}")
    if check_images:
        data.check_images([ex.image_id for ex in train + val + test])
    return Prepared(loaded, task, kind, data, options, train, val, test, method_cfg, resolved, scene_seed)


def check_text(cfg: FinetuneConfig, kind, options, loaded, task: str) -> None:
    """Before any work: the text length fits the checkpoint's positions, and what the kind gives the
    decoder before its target (a caption prompt: [DEC] prompt) leaves room for at least 2 target
    tokens, in training (max_text_len) and in generation (the positions)."""
    check_text_room(cfg.max_text_len, cfg.model, kind, options, loaded, f"task {task}")


def check_text_room(max_text_len: int, model: str, kind, options, loaded, where: str) -> None:
    """check_text's rule for a text length and a checkpoint (`where` prefixes the error)."""
    positions = loaded.model.cfg.text.max_positions
    if max_text_len > positions:
        raise UserError(f"max_text_len {max_text_len}: more than the checkpoint's {positions} text positions "
                        f"({model})")
    given = kind.given_tokens(loaded.tokenizer, options)
    room = min(max_text_len, positions) - 1 - given - 1  # [DEC]/[CLS], the given tokens, [SEP]
    if given and room < 2:
        raise UserError(f"{where}: the prompt is {given} tokens, which leaves {max(room, 0)} of the "
                        f"{min(max_text_len, positions)} text positions for the caption; shorten it")


def make_batch(prep: Prepared, cfg, examples, rng, pixels: bool = True):
    """The kind's training batch of `examples` (on the CPU; `.to(device)` moves it)."""
    return prep.kind.batch(examples, prep.data, prep.loaded, prep.options, cfg.max_text_len, rng, pixels)


def task_loss(prep: Prepared, model, batch, cfg, image_states=None) -> torch.Tensor:
    return prep.kind.loss(model, batch, cfg.label_smoothing, image_states=image_states)


def frozen_image_encoder(prep: Prepared, cfg, model):
    """Cached image encoding when the method leaves the vision encoder untouched, else None."""
    from vlpeft.recipes import features

    if not cfg.feature_cache or features.cache_limit_bytes() <= 0 or not features.vision_untouched(model):
        return None
    # The images and their preprocessing; the checkpoint is identified by its vision weights' digest.
    source = json.dumps([prep.data.image_source, repr(prep.loaded.preprocess),
                         precision_on(cfg, next(model.parameters()).device)], sort_keys=True)
    return features.image_encoder(model, prep.data, prep.loaded.preprocess, source,
                                  cache_dir=cfg.feature_cache_dir, disk_cap_mb=cfg.feature_cache_disk_mb)


def precision_on(cfg, device) -> str:
    """The precision a run uses on `device`: cfg.precision, with 'auto' = bf16 on a CUDA device that
    supports it (tensor cores), fp32 elsewhere (on a CPU without AMX bf16 was slower: docs/speed.md)."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(cfg, device):
    """bf16 autocast of forward passes when the run's precision is bf16 (a no-op context for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_on(cfg, device) == "bf16")


# Device types on which `compile: auto` compiles: where benchmarks/bench.py's compile_speedup measured
# a whole cell, compile included, faster than eager. None so far: on the CPUs measured a compiled step
# is 13-17 % faster but its compile (and a recompile per batch shape) costs more than a cell saves
# (docs/speed.md); not yet measured on CUDA.
COMPILE_PAYS: frozenset[str] = frozenset()


def compile_on(cfg, device) -> bool:
    """Whether a run compiles its loss on `device` (cfg.compile, 'auto' per COMPILE_PAYS)."""
    return cfg.compile == "on" or (cfg.compile == "auto" and device.type in COMPILE_PAYS)


def loss_function(prep: Prepared, cfg, model, device):
    """The training loss as a function of (batch, image_states): the kind's loss, compiled with
    `torch.compile` (dynamic shapes: text lengths vary batch to batch) when `compile_on`."""

    def loss(batch, image_states=None):
        return task_loss(prep, model, batch, cfg, image_states)

    return torch.compile(loss, dynamic=True) if compile_on(cfg, device) else loss


def train_step(prep: Prepared, cfg, model, opt, batch, image_states=None, step: int = 0, loss_fn=None) -> float:
    """One optimiser step on a prepared batch: forward (autocast per cfg.precision) through `loss_fn`
    (default: the kind's loss, uncompiled), backward, gradient-norm clip, AdamW step. Raises Diverged
    on a non-finite loss or gradient norm. -> loss."""
    model.train()
    with autocast(cfg, next(model.parameters()).device):
        if loss_fn is None:
            loss = task_loss(prep, model, batch, cfg, image_states)
        else:
            loss = loss_fn(batch, image_states)
    return optimizer_step(loss, opt, [p for g in opt.param_groups for p in g["params"]], cfg.grad_clip, step)


def evaluate_split(prep: Prepared, cfg, model, examples, encode_images=None) -> dict[str, Any]:
    """Scores of `model` on `examples` (primary metric under "score")."""
    model.eval()
    with autocast(cfg, next(model.parameters()).device):
        preds = prep.kind.predict(model, examples, prep.data, prep.loaded, prep.options, cfg.max_text_len,
                                  encode_images=encode_images)
    scores = prep.kind.score(preds, examples)
    scores["score"] = scores[prep.kind.metric]
    scores["score_se"] = scores.get(f"{prep.kind.metric}_se", 0.0)  # the score's own noise (standard error)
    scores["examples"] = [
        {"id": getattr(ex, "question_id", ex.image_id), "prediction": p} for ex, p in zip(examples[:5], preds[:5])
    ]
    return scores


RUN_FILES = ("metrics.json", "curve.json", "peft_config.json", "peft_model.safetensors", "error.log")


def finetune(cfg: FinetuneConfig, out: str | Path | None, progress: bool = True, loaded=None,
             log=print) -> dict[str, Any]:
    """Train, select on validation, score the test split; write the run folder `out` (if given).
    Everything that can be checked is checked before the first step, `out` being writable included.
    `out` is held for the whole run (a second finetune into it is refused at once) and replaced as a
    whole: the old record goes first, so a kill while writing leaves an unfinished run, never the old
    record beside new weights. A failure before any file is written leaves no folder behind."""
    if out is None:
        return _finetune(cfg, None, progress, loaded)
    if cfg.log == "tensorboard":
        require_tensorboard()  # before the folder is made
    out = Path(out)
    check_writable(out, "run folder")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with lock.hold(out, "finetune"):
            return _finetune(cfg, out, progress, loaded)
    finally:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: the run failed before writing anything


def _finetune(cfg: FinetuneConfig, out: Path | None, progress: bool, loaded) -> dict[str, Any]:
    with contextlib.ExitStack() as closing:  # the progress thread and the TensorBoard writer end however the run ends
        return _train(cfg, out, progress, loaded, closing)


def _train(cfg: FinetuneConfig, out: Path | None, progress: bool, loaded, closing: contextlib.ExitStack
           ) -> dict[str, Any]:
    from vlpeft.model.checkpoint import checkpoint_digest

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prep = prepare(cfg, loaded)
    base_digest = checkpoint_digest(cfg.model)
    device = resolve_device(cfg.device)
    reset_peak_memory(device)
    model = prep.loaded.model.to(device)
    torch.manual_seed(cfg.seed)
    apply_peft(model, cfg.method, prep.method_cfg)
    counts = count_params(model)
    encode = frozen_image_encoder(prep, cfg, model)  # None: the ViT runs in every step
    lr = cfg.lr if cfg.lr is not None else get_method(cfg.method).default_lr
    steps = 0 if counts["trainable"] == 0 else train_steps(cfg, len(prep.train))
    rng = np.random.default_rng(cfg.seed)
    opt = adamw(model, cfg.weight_decay, lr) if steps else None
    loss_fn = loss_function(prep, cfg, model, device) if steps else None
    eval_at = set(eval_steps(cfg, steps))
    started = time.time()
    val_seconds = 0.0
    runlog = closing.enter_context(RunLog(out if cfg.log == "tensorboard" else None, prep.kind.metric))
    runlog.config(dataclasses.asdict(cfg))
    bar = closing.enter_context(Steps(steps, f"{prep.task.name} {cfg.method}", enabled=progress,
                                      cap=cfg.length_policy == "converge"))

    def validate(step: int, loss: float | None, lr_now: float) -> dict:
        nonlocal val_seconds
        t = time.time()
        bar.doing("validating")
        val = evaluate_split(prep, cfg, model, prep.val, encode)
        bar.doing(None)
        val_seconds += time.time() - t
        row = {"step": step, "loss": loss, "val_score": val["score"], "val_se": val["score_se"], "lr": lr_now,
               "seconds": round(time.time() - started, 2)}
        runlog.evaluation(row)
        return row

    # Step 0: the model before training is a candidate too, so a run never ends worse on validation
    # than it started (training that only hurts selects the starting weights).
    curve = [validate(0, None, 0.0)]
    best, best_state = curve[0]["val_score"], trainable_state(model) if steps else None
    order, pos = rng.permutation(len(prep.train)), 0
    running, stopped_by = [], "length" if steps else "untrained"
    for step in bar:
        if pos + cfg.batch_size > len(order):
            order, pos = rng.permutation(len(prep.train)), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        examples = [prep.train[i] for i in idx]
        batch = make_batch(prep, cfg, examples, rng, pixels=encode is None).to(device)
        crash_point("train_step")
        with autocast(cfg, device):
            states = encode([ex.image_id for ex in examples]) if encode else None
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(cfg, step, steps)
        running.append(train_step(prep, cfg, model, opt, batch, states, step, loss_fn))
        runlog.train(step + 1, running[-1], opt.param_groups[0]["lr"])
        if step + 1 in eval_at:
            row = validate(step + 1, float(np.mean(running)), opt.param_groups[0]["lr"])
            running = []
            curve.append(row)
            bar.set_postfix(loss=round(row["loss"], 3), val=round(row["val_score"], 3))
            if row["val_score"] > best:
                best, best_state = row["val_score"], trainable_state(model)
            if cfg.length_policy == "converge":
                stopped_by = "cap"
                judged = diagnose(curve, cfg.patience, cfg.noise_z)
                if step + 1 >= max(cfg.min_steps, cfg.patience_ratio * judged.best_step) and judged.converged:
                    stopped_by = "converged"
                    break
    train_seconds = time.time() - started
    steps_done = curve[-1]["step"]
    diagnosis = diagnose(curve, cfg.patience, cfg.noise_z, trained=bool(steps))
    if best_state is not None:  # the validation-selected weights (the starting ones when step 0 was best)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in best_state.items():
                params[n].copy_(t)
    fold(model)  # e.g. prefixes leave their reparameterisation; outputs unchanged
    bar.doing("scoring the test split")
    t0 = time.time()
    test = evaluate_split(prep, cfg, model, prep.test, encode)
    eval_seconds = time.time() - t0
    metrics = run_record(cfg, prep, counts, lr, steps, steps_done, train_seconds, eval_seconds, best, test, device,
                         base_digest, diagnosis, stopped_by, val_seconds).to_dict()
    runlog.result(metrics)
    if out is not None:
        for name in RUN_FILES:  # metrics.json first: until the new one is written the run is unfinished
            (out / name).unlink(missing_ok=True)
        if runlog.writer is None:
            clear_events(out)  # an earlier run's TensorBoard events
        save_peft(model, out, extra={"task": prep.task.name, "base_model": cfg.model, "base_model_digest": base_digest})
        crash_point("run_weights_written")
        write_json(out / "curve.json", curve)
        write_json(out / "metrics.json", metrics)  # last: marks the run complete
    return metrics


def run_record(cfg, prep: Prepared, counts, lr, steps, steps_done, train_seconds, eval_seconds, best_val, test,
               device, base_digest: str, diagnosis, stopped_by: str, val_seconds: float) -> RunRecord:
    n_train, n_full = len(prep.train), len(prep.data.train)
    secondary = {k: v for k, v in test.items() if k not in ("score", "examples", "metrics_ran")}
    secondary.update(prep.kind.baselines(prep.data, prep.test))
    return RunRecord(
        task=prep.task.name,
        task_ref=prep.task.ref,
        task_kind=prep.task.kind,
        task_relation=prep.task.relation,
        method=cfg.method,
        knob=prep.resolved["knob"],
        knob_value=prep.resolved["value"],
        budget_target=prep.resolved["target"],
        method_config={
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(prep.method_cfg).items()
        },
        data_size=n_train,
        data_fraction=n_train / n_full,
        train_pool=n_full,
        seed=cfg.seed,
        subset_seed=cfg.subset_seed,
        metric=prep.kind.metric,
        test_score=test["score"],
        best_val_score=best_val,
        secondary=secondary,
        metrics_ran=test.get("metrics_ran", []),
        test_examples=test["examples"],
        n_val=len(prep.val),
        n_test=len(prep.test),
        params=counts,
        trainable_params=counts["trainable"],
        budget_params=counts["budget"],
        total_params=counts["total"],
        lr=lr,
        steps=steps,
        steps_done=steps_done,
        steps_to_best=diagnosis.best_step,
        converged=diagnosis.converged,
        convergence=diagnosis.to_dict(),
        stopped_by=stopped_by,
        best_val_se=diagnosis.noise,
        batch_size=cfg.batch_size,
        length_policy=cfg.length_policy,
        epochs=cfg.epochs,
        min_steps=cfg.min_steps,
        train_seconds=round(train_seconds, 2),
        eval_seconds=round(eval_seconds, 2),
        val_seconds=round(val_seconds, 2),
        examples_per_second=round(steps_done * cfg.batch_size / train_seconds, 2)
        if train_seconds > 0 and steps_done
        else 0.0,
        peak_memory_mb=peak_memory_mb(device),
        precision=precision_on(cfg, device),
        compiled=compile_on(cfg, device) and steps > 0,
        task_options=dataclasses.asdict(prep.options),
        scene_seed=prep.scene_seed,
        task_details=prep.data.details,
        base_model_digest=base_digest,
        task_data_digest=task_data_digest(prep.task),
        config=dataclasses.asdict(cfg),
        environment=environment(device),
    )


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


__all__ = ["FinetuneConfig", "Prepared", "finetune", "evaluate_run", "read_record", "check_base", "prepare",
           "train_steps", "eval_steps", "Diverged"]
