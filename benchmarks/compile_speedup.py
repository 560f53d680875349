"""Figure 6 of bench.py: compile_speedup (no goal yet: it decides whether `torch.compile` pays).

The time of a COMPILE_CELL_STEPS-step LoRA cell with the kind's loss compiled (`torch.compile`,
static shapes), its compilation included / the same cell eager, both from one fixed batch over
cached image states as figure 1's. Detail: the compiled and eager step times, their ratio, and the
compile (first call) seconds, which depend on whether Inductor's on-disk cache already holds the
graph.
"""

from __future__ import annotations

import time

import torch

from common import interleaved, med, prepared, sig, sync, task_batch

COMPILE_CELL_STEPS = 1000  # a cell's training steps in compile_speedup (the quick preset's runs stop near it)


def compile_speedup(pristine, path, s, scene_seed, threads, dev) -> tuple[float, dict]:
    """(whole-cell time compiled / eager, detail): see the module docstring."""
    from vlpeft.recipes.step import task_loss
    from vlpeft.recipes.training import adamw, optimizer_step

    prep, cfg, model, encode = prepared(pristine, path, "lora", s, scene_seed, threads, dev)
    batch, image_ids = task_batch(prep, cfg, s["batch"], dev)
    states = encode(image_ids) if encode is not None else None
    opt = adamw(model, cfg.weight_decay, 1e-3)
    params = [p for g in opt.param_groups for p in g["params"]]

    def loss(batch, states):
        return task_loss(prep, model, batch, cfg, states)

    compiled = torch.compile(loss, dynamic=False)

    def step(fn) -> float:
        model.train()
        return optimizer_step(fn(batch, states), opt, params, cfg.grad_clip, 0)

    sync()
    t0 = time.perf_counter()
    step(compiled)  # compiles
    sync()
    compile_s = time.perf_counter() - t0
    times, first = interleaved({"eager": lambda: step(loss), "compiled": lambda: step(compiled)},
                               s["warmup"], s["reps"])
    eager, comp = med(times["eager"]), med(times["compiled"])
    cell = (compile_s + COMPILE_CELL_STEPS * comp) / (COMPILE_CELL_STEPS * eager)
    return sig(cell), {"eager_step_ms": sig(eager * 1e3), "compiled_step_ms": sig(comp * 1e3),
                       "step_ratio": sig(comp / eager), "compile_s": sig(compile_s, 3),
                       "cell_steps": COMPILE_CELL_STEPS, "batch": s["batch"], "timed_steps": s["reps"]}
