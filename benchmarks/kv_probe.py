"""Would an exact cache of the frozen cross-attention key/value projections pay? And bf16 on this CPU?

    python benchmarks/kv_probe.py [--configs tiny,base] [--threads 1] [--model tiny]

Measured side by side (interleaved repetitions, medians, as bench.py), on the scenes-caption training
step over cached image states, for LoRA (default targets q and v: the cross-attention's value
projection trains, its key projection stays frozen) and the adapter (both frozen):

- `kv_cached_vs_not`: the step with every frozen cross-attention key (and, for the adapter, value)
  projection of the image states replaced by its precomputed output / the step as it is. This is
  the best a cache of those projections could do (no lookup, no memory traffic counted): the
  ceiling of the saving.
- `bf16_vs_fp32`: the LoRA step under bf16 autocast / in fp32 (the CPU default), with whether the
  CPU has AMX (bf16 tile instructions).
- the memory such a cache would need per training image: 2 (k, v) x layers x image tokens x width
  x 4 bytes.
Only ratios within one invocation mean anything.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


class Constant(nn.Module):
    """Returns a fixed tensor whatever its input: a projection whose output was computed beforehand."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out


def precomputed(model, states: torch.Tensor, which: tuple[str, ...]) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace `which` projections of every decoder cross-attention by their outputs on `states`;
    returns what to put back."""
    undo = []
    for block in model.text_decoder.blocks:
        attn = block.cross_attn
        for name in which:
            lin = getattr(attn, name)
            with torch.no_grad():
                out = lin(states)
            undo.append((attn, name, lin))
            setattr(attn, name, Constant(out))
    return undo


def restore(undo):
    for attn, name, lin in undo:
        setattr(attn, name, lin)


def amx() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def probe(name: str, loaded, path: str, threads: int, s: dict) -> dict:
    import dataclasses

    dev = common.device()
    out = {}
    for method, which in (("lora", ("k",)), ("adapter", ("k", "v"))):
        prep, cfg, model, encode = common.prepared(copy.deepcopy(loaded), path, method, s, 0, threads, dev)
        batch, ids = common.task_batch(prep, cfg, s["batch"], dev)
        states = encode(ids)
        step = common.vlpeft_step(prep, cfg, model, batch, ids, encode)

        def cached():
            undo = precomputed(model, states, which)
            try:
                return step()
            finally:
                restore(undo)

        from vlpeft.recipes.step import task_loss

        model.eval()  # no dropout: the two losses must agree
        with torch.no_grad():  # the precomputed projections give the same loss (exact up to float order)
            plain_loss = float(task_loss(prep, model, batch, cfg, states))
            undo = precomputed(model, states, which)
            cached_loss = float(task_loss(prep, model, batch, cfg, states))
            restore(undo)
        assert abs(plain_loss - cached_loss) <= 1e-5 * abs(plain_loss), (plain_loss, cached_loss)
        times, _ = common.interleaved({"plain": step, "cached": cached}, s["warmup"], s["reps"])
        out[f"{method}_kv_cached_vs_not"] = common.sig(common.med(times["cached"]) / common.med(times["plain"]))
        out[f"{method}_step_ms"] = common.sig(1000 * common.med(times["plain"]))
        if method == "lora":
            cfg16 = dataclasses.replace(cfg, precision="bf16")
            opt_step = common.vlpeft_step(prep, cfg16, model, batch, ids, encode)
            times, _ = common.interleaved({"fp32": step, "bf16": opt_step}, s["warmup"], s["reps"])
            out["bf16_vs_fp32"] = common.sig(common.med(times["bf16"]) / common.med(times["fp32"]))
        tcfg = model.cfg.text
        tokens = states.shape[1]
        out["cache_mb_per_image"] = common.sig(2 * tcfg.depth * tokens * tcfg.width * 4 / 2**20)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,base")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="tiny")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{common.machine()['cpu']}, AMX: {amx()}, {args.threads} thread(s), torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="vlpeft-kv-") as tmp:
        tiny, tiny_path, _ = common.tiny_model(args.model, Path(tmp))
        for name in args.configs.split(","):
            if name == "tiny":
                loaded, path = tiny, tiny_path
            else:
                loaded = common.base_model(tiny, Path(tmp))
                path = loaded.source
            print(name, probe(name, loaded, path, args.threads, common.SETTINGS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
