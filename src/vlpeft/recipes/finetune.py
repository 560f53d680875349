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
    state.pt               with `keep_state`: the training state at the run's end (its last weights, the
                           optimiser, the data order and random states, the curve and the best weights so
                           far), from which a longer run of the same cell goes on (`resume`)

A run resumed from a state is the run trained from scratch with the longer length: the same seed,
data order, learning-rate schedule and evaluations, so the same curve and weights; only the steps
both share are not computed again (a study's length check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlpeft import lock
from vlpeft.convergence import diagnose
from vlpeft.faults import crash_point
from vlpeft.io import atomic_path, check_writable, write_json
from vlpeft.peft import apply_peft, count_params, fold, get_method, save_peft
from vlpeft.peft.base import trainable_state
from vlpeft.recipes.config import FinetuneConfig
from vlpeft.recipes.length import eval_steps, lr_factor, stop_floor, train_steps, warmup_steps
from vlpeft.recipes.prepare import prepare, resolve_device
from vlpeft.recipes.progress import Steps
from vlpeft.recipes.record import reset_peak_memory, run_record
from vlpeft.recipes.runlog import RunLog, clear_events, require_tensorboard
from vlpeft.recipes.step import autocast, evaluate_split, frozen_image_encoder, loss_function, make_batch, train_step
from vlpeft.recipes.training import adamw

RUN_FILES = ("metrics.json", "curve.json", "peft_config.json", "peft_model.safetensors", "error.log", "state.pt")
STATE_FILE = "state.pt"
# Fields a resumed run may set differently from the run whose state it continues: how long it trains.
LENGTH_FIELDS = ("min_steps", "min_epochs", "max_steps", "max_epochs", "steps", "epochs", "evals")


def finetune(cfg: FinetuneConfig, out: str | Path | None, progress: bool = True, loaded=None,
             log=print, keep_state: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
    """Train, select on validation, score the test split; write the run folder `out` (if given).
    Everything that can be checked is checked before the first step, `out` being writable included.
    `out` is held for the whole run (a second finetune into it is refused at once) and replaced as a
    whole: the old record goes first, so a kill while writing leaves an unfinished run, never the old
    record beside new weights. A failure before any file is written leaves no folder behind.
    `keep_state`: also write `state.pt` (needs `out`). `resume`: a `state.pt` (or the run folder
    holding one) of the same cell, trained shorter: the run goes on from it (`resumable`)."""
    if out is None:
        return _finetune(cfg, None, progress, loaded, False, resume)
    if cfg.log == "tensorboard":
        require_tensorboard()  # before the folder is made
    out = Path(out)
    check_writable(out, "run folder")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with lock.hold(out, "finetune"):
            return _finetune(cfg, out, progress, loaded, keep_state, resume)
    finally:
        if made:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: the run failed before writing anything


def _finetune(cfg: FinetuneConfig, out: Path | None, progress: bool, loaded, keep_state: bool,
              resume: str | Path | None) -> dict[str, Any]:
    with contextlib.ExitStack() as closing:  # the progress thread and the TensorBoard writer end however the run ends
        return _train(cfg, out, progress, loaded, closing, keep_state, resume)


def state_path(run: str | Path) -> Path:
    run = Path(run)
    return run / STATE_FILE if run.is_dir() else run


def resumable(cfg: FinetuneConfig, state: str | Path, n_train: int | None = None) -> dict[str, Any] | None:
    """The state saved by a run (`keep_state`) if `cfg` can go on from it: the same settings but for
    the length, the same warm-up (in steps, for `n_train` training examples; default: the state's), the
    converge policy, and the state's last evaluation one that `cfg`'s own schedule makes too (a run
    stopped by its cap evaluated at a step a longer schedule may skip); else None."""
    path = state_path(state)
    if cfg.length_policy != "converge" or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # unreadable (a partial copy, another version): train from scratch, the same result
        return None
    mine, theirs = dataclasses.asdict(cfg), dict(saved.get("config") or {})
    ignored = set(LENGTH_FIELDS) | {"warmup_steps", "warmup_ratio", "threads", "device", "log", "feature_cache_dir",
                                    "feature_cache_disk_mb"}
    if saved.get("format") != 1 or any(mine.get(k) != theirs.get(k) for k in set(mine) | set(theirs)
                                       if k not in ignored):
        return None
    n = saved["n_train"] if n_train is None else n_train
    steps = train_steps(cfg, n)
    if warmup_steps(cfg, steps) != saved["warmup"] or saved["step"] not in eval_steps(cfg, steps):
        return None
    return saved


def load_trainable(model, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` (name -> tensor, as `trainable_state` keeps it) into the model's parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _train(cfg: FinetuneConfig, out: Path | None, progress: bool, loaded, closing: contextlib.ExitStack,
           keep_state: bool = False, resume: str | Path | None = None) -> dict[str, Any]:
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
    floor = stop_floor(cfg, len(prep.train))
    rng = np.random.default_rng(cfg.seed)
    opt = adamw(model, cfg.weight_decay, lr) if steps else None
    loss_fn = loss_function(prep, cfg, model, device) if steps else None
    eval_at = set(eval_steps(cfg, steps))
    started = time.time()
    val_seconds, offset = 0.0, 0.0  # offset: a resumed run's curve counts the seconds of the run it goes on from
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
               "seconds": round(time.time() - started + offset, 2)}
        runlog.evaluation(row)
        return row

    saved = resumable(cfg, resume, len(prep.train)) if (resume is not None and steps) else None
    if saved is None:
        # Step 0: the model before training is a candidate too, so a run never ends worse on validation
        # than it started (training that only hurts selects the starting weights).
        curve = [validate(0, None, 0.0)]
        best, best_state = curve[0]["val_score"], trainable_state(model) if steps else None
        order, pos, start = rng.permutation(len(prep.train)), 0, 0
    else:  # go on from the end of a shorter run of this cell: its weights, optimiser, data order, curve
        load_trainable(model, saved["weights"])
        opt.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = saved["rng"]
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        curve, best, best_state = saved["curve"], saved["best"], saved["best_state"]
        order, pos, start = np.asarray(saved["order"]), saved["pos"], saved["step"]
        offset = float(curve[-1].get("seconds") or 0.0)
    running, stopped_by = [], "length" if steps else "untrained"
    for step in bar:
        if step < start:
            continue  # done by the run this one goes on from
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
                if step + 1 >= max(floor, cfg.patience_ratio * judged.best_step) and judged.converged:
                    stopped_by = "converged"
                    break
    train_seconds = time.time() - started
    steps_done = curve[-1]["step"]
    diagnosis = diagnose(curve, cfg.patience, cfg.noise_z, trained=bool(steps))
    state = None
    if keep_state and out is not None and steps:
        state = {"format": 1, "config": dataclasses.asdict(cfg), "step": steps_done, "n_train": len(prep.train),
                 "warmup": warmup_steps(cfg, steps), "weights": trainable_state(model),
                 "optimizer": opt.state_dict(), "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                 "order": order.tolist(), "pos": pos, "curve": curve, "best": best, "best_state": best_state}
    if best_state is not None:  # the validation-selected weights (the starting ones when step 0 was best)
        load_trainable(model, best_state)
    fold(model)  # e.g. prefixes leave their reparameterisation; outputs unchanged
    bar.doing("scoring the test split")
    t0 = time.time()
    test = evaluate_split(prep, cfg, model, prep.test, encode)
    eval_seconds = time.time() - t0
    metrics = run_record(cfg, prep, counts, lr, steps, steps_done, train_seconds, eval_seconds, best, test, device,
                         base_digest, diagnosis, stopped_by, val_seconds,
                         resumed_from=start if saved is not None else None).to_dict()
    runlog.result(metrics)
    if out is not None:
        for name in RUN_FILES:  # metrics.json first: until the new one is written the run is unfinished
            (out / name).unlink(missing_ok=True)
        if runlog.writer is None:
            clear_events(out)  # an earlier run's TensorBoard events
        save_peft(model, out, extra={"task": prep.task.name, "base_model": cfg.model, "base_model_digest": base_digest})
        crash_point("run_weights_written")
        write_json(out / "curve.json", curve)
        if state is not None:
            with atomic_path(out / STATE_FILE) as tmp:
                torch.save(state, tmp)
        write_json(out / "metrics.json", metrics)  # last: marks the run complete
    return metrics


__all__ = ["FinetuneConfig", "finetune", "RUN_FILES", "STATE_FILE", "resumable"]
