"""Eight speed and memory figures of vlpeft, each a RATIO measured side by side in one invocation.

    python benchmarks/bench.py [--json] [--configs tiny,base] [--threads N] [--model tiny]

Two model configurations: `tiny` (the pre-trained checkpoint at --model, default the shipped `tiny`;
random weights of the tiny preset if --model names no checkpoint) and `base` (BLIP base sizes: ViT-B/16 at
384 px and a 12-layer BERT-base text decoder, from `PRESETS["base"]`, random weights, with the tiny
tokenizer's vocabulary and special-token ids so the same tokenizer and task data serve both). Every
figure uses the scenes-caption task (captioning: ViT + image-grounded text decoder); what a
"training step" is, and the helpers every figure shares, are in `common.py`.

This file is the driver (the figures in order, their goals, the table and `--json`); each figure is
described and measured in its own file:

1.  lora_step_vs_hf_peft: `lora_vs_hf_peft.py`
2.  peft_step_vs_full: `peft_vs_full.py`
3.  grid_cache_speedup: `grid_speedup.py`
3b. grid_overhead_share: `grid_speedup.py`
4.  flops_fraction_of_peak: `peft_vs_full.py`
4b. peft_step_fraction_of_peak: `peft_vs_full.py`
5.  lora_peak_mem_vs_full: `peak_memory.py` (each side in a fresh process: that file run as a script)
6.  compile_speedup: `compile_speedup.py`

Only ratios measured in the same invocation are meaningful: the machines are shared and noisy, so
absolute times from different runs must not be compared. The two sides of each timing figure
alternate repetition by repetition (order rotated), after warm-up steps, and medians are taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import SETTINGS, base_model, device, loadavg, log, machine, tiny_model
from compile_speedup import compile_speedup
from grid_speedup import grid_speedup
from lora_vs_hf_peft import lora_vs_hf_peft
from peak_memory import peak_memory
from peft_vs_full import peft_vs_full

FIGURES = ("lora_step_vs_hf_peft", "peft_step_vs_full", "grid_cache_speedup", "grid_overhead_share",
           "flops_fraction_of_peak", "peft_step_fraction_of_peak", "lora_peak_mem_vs_full", "compile_speedup")
# figure -> {config: (op, goal)}; a config missing from a figure's goals has none
GOALS = {"lora_step_vs_hf_peft": {"tiny": ("<=", 0.35), "base": ("<=", 0.2)},
         "grid_cache_speedup": {"tiny": (">=", 3.0), "base": (">=", 3.0)},
         "grid_overhead_share": {"tiny": ("<=", 0.1), "base": ("<=", 0.1)},
         "flops_fraction_of_peak": {"base": (">=", 0.35)},
         "peft_step_fraction_of_peak": {"base": (">=", 0.5)},
         "lora_peak_mem_vs_full": {"tiny": ("<=", 0.6), "base": ("<=", 0.6)}}


def run_config(name: str, tiny, tiny_path: str, tiny_kind: str, threads: int, tmp: Path) -> tuple[dict, dict]:
    dev = device()
    s = SETTINGS[name]
    scene_seed = int((tiny.pretrain or {}).get("seed", 0))
    started = time.perf_counter()
    if name == "tiny":
        pristine, path = tiny, tiny_path
    else:
        log("base: building the random base-sized checkpoint")
        pristine = base_model(tiny, tmp)
        path = pristine.source
    c = pristine.model.cfg
    detail: dict = {
        "model": {
            "source": path if name == "tiny" else "random weights",
            "weights": tiny_kind if name == "tiny" else "random",
            "vision": f"{c.vision.image_size}px/{c.vision.patch_size} width {c.vision.width} depth {c.vision.depth} "
            f"heads {c.vision.heads} mlp {c.vision.mlp_width}",
            "text": f"width {c.text.width} depth {c.text.depth} heads {c.text.heads} mlp {c.text.mlp_width} "
            f"vocab {c.text.vocab_size}",
        }
    }
    values: dict = {}
    seconds: dict = {}

    def figure(label: str, fn):
        log(f"{name}: {label}")
        t0 = time.perf_counter()
        out = fn()
        seconds[label] = round(time.perf_counter() - t0, 1)
        return out

    values["lora_step_vs_hf_peft"], detail["lora_step_vs_hf_peft"] = figure(
        "lora_step_vs_hf_peft", lambda: lora_vs_hf_peft(pristine, name, s, scene_seed, threads, dev, tmp))
    (values["peft_step_vs_full"], detail["peft_step_vs_full"], values["flops_fraction_of_peak"],
     detail["flops_fraction_of_peak"], values["peft_step_fraction_of_peak"],
     detail["peft_step_fraction_of_peak"]) = figure("peft_step_vs_full+flops_fraction_of_peak",
                                                    lambda: peft_vs_full(pristine, path, s, scene_seed, threads, dev))
    values["grid_cache_speedup"], detail["grid_cache_speedup"], values["grid_overhead_share"] = figure(
        "grid_cache_speedup+grid_overhead_share", lambda: grid_speedup(pristine, path, s, scene_seed, threads, tmp))
    g = detail["grid_cache_speedup"]
    detail["grid_overhead_share"] = {"of": "the cached grid", "outside_s": g["cached_outside_s"],
                                     "wall_s": g["cached_s"]}
    values["lora_peak_mem_vs_full"], detail["lora_peak_mem_vs_full"] = figure(
        "lora_peak_mem_vs_full", lambda: peak_memory(path, s, scene_seed, threads))
    values["compile_speedup"], detail["compile_speedup"] = figure(
        "compile_speedup", lambda: compile_speedup(pristine, path, s, scene_seed, threads, dev))
    detail["figure_seconds"] = seconds
    detail["seconds"] = round(time.perf_counter() - started, 1)
    return values, detail



def met(figure: str, config: str, value) -> str:
    if config not in GOALS.get(figure, {}):
        return "-"
    op, goal = GOALS[figure][config]
    return "yes" if (value <= goal if op == "<=" else value >= goal) else "NO"


def table(results: dict, details: dict) -> str:
    lines = []
    for config in details["configs"]:
        lines.append(f"\n{config}  ({details[config]['seconds']} s)")
        lines.append(f"  {'figure':<32} {'value':>8}  {'goal':<14} met")
        for fig in FIGURES:
            value = results[fig][config]
            op, goal = GOALS.get(fig, {}).get(config, ("", None))
            goal_txt = f"{op} {goal}" if goal else "-"
            if isinstance(value, dict):
                lines.append(f"  {fig:<32} {'':>8}  {goal_txt:<14} -")
                for m, r in value.items():
                    lines.append(f"    {m:<30} {r:>8.3f}")
            else:
                lines.append(f"  {fig:<32} {value:>8.3f}  {goal_txt:<14} {met(fig, config, value)}")
        d = details[config]
        f1, f4, f5 = d["lora_step_vs_hf_peft"], d["flops_fraction_of_peak"], d["lora_peak_mem_vs_full"]
        g = d["grid_cache_speedup"]
        lines.append(
            f"  step ms: HF+peft {f1['hf_peft_ms']}, vlpeft LoRA cached {f1['vlpeft_cached_ms']} / uncached "
            f"{f1['vlpeft_uncached_ms']} (ratio uncached {f1['ratio_uncached']}); full FT {f4['full_step_ms']}"
        )
        lines.append(f"  grid: {g['uncached_s']} s uncached, {g['cached_s']} s cached, test scores identical: "
                     f"{g['test_scores_identical']}")
        lines.append(f"  FLOP/s: full step {f4['achieved_gflops']} GFLOP/s ({f4['step_flops'] / 1e9:.1f} GFLOP/step), "
                     f"LoRA step (cached) {d['peft_step_fraction_of_peak']['achieved_gflops']} GFLOP/s "
                     f"({d['peft_step_fraction_of_peak']['step_flops'] / 1e9:.2f} GFLOP/step), "
                     f"matmul peak {f4['matmul_peak_gflops']} GFLOP/s")
        lines.append(f"  peak memory: LoRA {f5['lora_mib']} MiB, full {f5['full_mib']} MiB ({f5['measure']})")
        f6 = d["compile_speedup"]
        lines.append(f"  compile: step {f6['compiled_step_ms']} ms compiled / {f6['eager_step_ms']} ms eager "
                     f"(ratio {f6['step_ratio']}), compile {f6['compile_s']} s, cell of {f6['cell_steps']} steps")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--configs", default="tiny,base", help="comma-separated: tiny, base")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--model", default="tiny", help="the tiny checkpoint folder")
    args = p.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in SETTINGS]
    if unknown or not configs:
        p.error(f"--configs: unknown {unknown}; known: {', '.join(SETTINGS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    started = time.perf_counter()
    results: dict = {f: {} for f in FIGURES}
    details: dict = {"machine": machine(), "configs": configs}
    with tempfile.TemporaryDirectory(prefix="vlpeft-bench-") as tmp:
        tiny, tiny_path, tiny_kind = tiny_model(args.model, Path(tmp))
        for name in configs:
            values, details[name] = run_config(name, tiny, tiny_path, tiny_kind, threads, Path(tmp))
            for f in FIGURES:
                results[f][name] = values[f]
    details["wall_seconds"] = round(time.perf_counter() - started, 1)
    details["machine"]["loadavg_end"] = loadavg()
    if args.json:
        print(json.dumps({**results, "detail": details}, indent=1))
    else:
        m = details["machine"]
        print(f"{m['cpu']}, {m['cores']} cores, torch {m['versions'].get('torch')}, {threads} threads, {m['device']}; "
              f"{details['wall_seconds']} s. Ratios only: compare nothing across invocations.")
        print(table(results, details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
