"""What every run records about where and how it ran, for pre-training and fine-tuning alike: the
environment (vlpeft and package versions, git commit, host, machine, device, threads, time) and the
peak memory of the run (CUDA allocations, or the process's peak resident set on CPU)."""

from __future__ import annotations

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
