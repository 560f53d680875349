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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlpeft import lock
from vlpeft.convergence import diagnose
from vlpeft.faults import crash_point
from vlpeft.io import check_writable, write_json
from vlpeft.peft import apply_peft, count_params, fold, get_method, save_peft
from vlpeft.peft.base import trainable_state
from vlpeft.recipes.config import FinetuneConfig
from vlpeft.recipes.length import eval_steps, lr_factor, stop_floor, train_steps
from vlpeft.recipes.prepare import prepare, resolve_device
from vlpeft.recipes.progress import Steps
from vlpeft.recipes.record import reset_peak_memory, run_record
from vlpeft.recipes.runlog import RunLog, clear_events, require_tensorboard
from vlpeft.recipes.step import autocast, evaluate_split, frozen_image_encoder, loss_function, make_batch, train_step
from vlpeft.recipes.training import adamw

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
    floor = stop_floor(cfg, len(prep.train))
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
                if step + 1 >= max(floor, cfg.patience_ratio * judged.best_step) and judged.converged:
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


__all__ = ["FinetuneConfig", "finetune", "RUN_FILES"]
