"""What every run records about where and how it ran, for pre-training and fine-tuning alike: the
environment (vlpeft and package versions, git commit, host, machine, device, threads, time) and the
peak memory of the run (CUDA allocations, or the process's peak resident set on CPU); and a
fine-tuning run's whole record (`run_record` -> `RunRecord`, its metrics.json)."""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

import vlpeft
from vlpeft.recipes.prepare import Prepared
from vlpeft.recipes.step import compile_on, precision_on
from vlpeft.runrecord import RunRecord
from vlpeft.tasks import task_data_digest


def reset_peak_memory(device) -> None:
    """Start a new peak-memory window for this run (a study worker runs many)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(device) -> float:
    """Peak memory since reset_peak_memory: CUDA allocations, or on CPU the process's peak resident
    set (VmHWM; getrusage's ru_maxrss as a fallback, which never resets and, in a spawned worker,
    can carry its parent's peak)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def environment(device) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "numpy", "transformers", "tokenizers", "pycocoevalcap", "easy-vqa"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {"vlpeft": vlpeft.__version__, "versions": versions, "python": platform.python_version(),
            "git_commit": git_commit(), "host": platform.node(), "machine": platform.machine(), "cpu": cpu_model(),
            "device": str(device), "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"cuda_visible_devices": gpus} if gpus is not None else {})}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; what `platform` knows elsewhere): float results
    of the same seed and thread count can differ between CPU kinds."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the vlpeft source tree (None outside a git checkout); asked once per process."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(cfg, prep: Prepared, counts, lr, steps, steps_done, train_seconds, eval_seconds, best_val, test,
               device, base_digest: str, diagnosis, stopped_by: str, val_seconds: float,
               resumed_from: int | None = None) -> RunRecord:
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
        resumed_from_step=resumed_from,
        train_seconds=round(train_seconds, 2),
        eval_seconds=round(eval_seconds, 2),
        val_seconds=round(val_seconds, 2),
        examples_per_second=round((steps_done - (resumed_from or 0)) * cfg.batch_size / train_seconds, 2)
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
