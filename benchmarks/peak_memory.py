"""Figure 5 of bench.py: lora_peak_mem_vs_full (goal <= 0.6).

Peak memory of a LoRA training run (with the feature cache, as a study runs it) / full fine-tuning's,
each in a fresh subprocess that loads the checkpoint, trains a few steps and reports its peak: on CPU
the process's peak RSS (so the Python + torch baseline and the transient of loading the weights are
in), read as VmHWM from /proc/self/status because getrusage's ru_maxrss of a child inherits the
parent's high-water mark across fork+exec on Linux (both children would report the parent's peak);
torch.cuda.max_memory_allocated on CUDA.

The subprocess is this file run as a script (`peak_memory` launches it):

    python benchmarks/peak_memory.py --_memory-child '{"model": ..., "method": "lora", "batch": ...,
        "data_size": ..., "scene_seed": ..., "threads": ..., "steps": ...}'

which prints one JSON line (the peaks) on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from common import ROOT, device, prepared, sig, task_batch, vlpeft_step


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB): VmHWM, which starts afresh at exec, unlike ru_maxrss."""
    from vlpeft.recipes.record import peak_memory_mb

    return int(peak_memory_mb(torch.device("cpu")) * 1024)


def memory_child(spec: dict) -> None:
    """In a fresh process: load, apply the method, train a few steps, print the peak memory (JSON)."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dev = device()
    s = {"batch": spec["batch"], "data_size": spec["data_size"]}
    prep, cfg, model, encode = prepared(
        None, spec["model"], spec["method"], s, spec["scene_seed"], spec["threads"], dev
    )
    after_load = peak_rss_kib()
    batch, image_ids = task_batch(prep, cfg, spec["batch"], dev)
    step = vlpeft_step(prep, cfg, model, batch, image_ids, encode)
    for _ in range(spec["steps"]):
        step()
    out = {"max_rss_kib": peak_rss_kib(), "max_rss_after_load_kib": after_load, "cached": encode is not None,
           "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if dev.type == "cuda":
        out["cuda_max_allocated"] = torch.cuda.max_memory_allocated(dev)
    print(json.dumps(out))


def peak_memory(model_path, s, scene_seed, threads) -> tuple[float, dict]:
    peaks = {}
    for method in ("lora", "full"):  # one after the other: never two heavy processes at once
        spec = {"model": model_path, "method": method, "batch": s["batch"], "data_size": s["data_size"],
                "scene_seed": scene_seed, "threads": threads, "steps": s["mem_steps"]}
        # the child is this file run as a script (its `main`), from the repository root
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_memory-child", json.dumps(spec)],
                           check=False, capture_output=True, text=True, cwd=str(ROOT))
        if r.returncode != 0:
            raise RuntimeError(f"memory child ({method}) failed:\n{r.stderr[-3000:]}")
        peaks[method] = json.loads(r.stdout.strip().splitlines()[-1])
    key = "cuda_max_allocated" if "cuda_max_allocated" in peaks["full"] else "max_rss_kib"
    unit = 2 ** 20 if key == "cuda_max_allocated" else 1024
    mib = {m: peaks[m][key] / unit for m in peaks}
    detail = {"measure": "torch.cuda.max_memory_allocated" if unit == 2 ** 20 else "peak RSS (VmHWM) of the process",
              "lora_mib": sig(mib["lora"]), "full_mib": sig(mib["full"]), "lora_cached": peaks["lora"]["cached"],
              "peak_rss_after_load_mib": {m: sig(peaks[m]["max_rss_after_load_kib"] / 1024) for m in peaks},
              "ru_maxrss_mib": {m: sig(peaks[m]["ru_maxrss_kib"] / 1024) for m in peaks},
              "steps": s["mem_steps"], "batch": s["batch"]}
    return sig(mib["lora"] / mib["full"]), detail


def main() -> int:
    p = argparse.ArgumentParser(description="the memory child of bench.py's figure 5 (run by `peak_memory`)")
    p.add_argument("--_memory-child", dest="memory_child", required=True, metavar="SPEC",
                   help="JSON: model, method, batch, data_size, scene_seed, threads, steps")
    memory_child(json.loads(p.parse_args().memory_child))
    return 0


if __name__ == "__main__":
    sys.exit(main())
