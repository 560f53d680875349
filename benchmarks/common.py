"""What several of bench.py's figures share: timing, the two model configurations, the training step.

A "training step" is what `vlpeft.recipes.finetune.finetune` does per step: (cached image states)
forward with the caption LM loss (label smoothing 0.1), zero_grad, backward, gradient-norm clip
(1.0), AdamW step (`vlpeft_step`). The batch is built beforehand (it is the same on both sides of a
comparison: `task_batch`). Every figure uses the scenes-caption task (`TASK`; captioning: ViT +
image-grounded text decoder).

Used by the figure files next to it (`import common` / `from common import ...`: the scripts are run
as `python benchmarks/<file>.py`, so this folder is first on sys.path) and by `kv_probe.py` and
`cuda_smoke.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TASK = "scenes-caption"
BUDGETS = {"prompt": "16", "prefix": "16", "adapter": "16", "lora": "8", "mam": "32", "full": None,
           "bitfit": None, "ia3": None}
# Per configuration: training batch, warm-up and timed repetitions per side, memory-child steps,
# the grid's runs. The base sizes keep the whole bench within minutes on 2 CPU cores.
SETTINGS = {
    "tiny": {"batch": 32, "warmup": 3, "reps": 9, "mem_steps": 3, "data_size": 400,
             "grid": {"data_size": 96, "batch_size": 32, "epochs": 5, "val_limit": 32, "test_limit": 32}},
    "base": {"batch": 4, "warmup": 1, "reps": 3, "mem_steps": 2, "data_size": 400,
             "grid": {"data_size": 8, "batch_size": 4, "epochs": 5, "val_limit": 4, "test_limit": 4}},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(sides: dict, warmup: int, reps: int) -> tuple[dict[str, list[float]], dict]:
    """Run every side once per repetition (order rotated each repetition). -> (timed seconds per side
    after the warm-up, first return value of each side)."""
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    first: dict = {}
    for r in range(warmup + reps):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            sync()
            t0 = time.perf_counter()
            out = sides[n]()
            sync()
            dt = time.perf_counter() - t0
            first.setdefault(n, out)
            if r >= warmup:
                times[n].append(dt)
    return times, first


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def sig(x: float, n: int = 4) -> float:
    return float(f"{x:.{n}g}")


# ---- models ---------------------------------------------------------------------------------------

def tiny_model(folder: str, tmp: Path):
    """The pre-trained tiny checkpoint, or (folder missing) a random tiny model with a tokenizer
    trained on the pre-training scenes. -> (LoadedModel, path, kind)."""
    import vlpeft
    from vlpeft.model.checkpoint import checkpoint_exists, locate

    path = Path(folder)
    if not path.exists() and (ROOT / folder).exists():
        path = ROOT / folder
    if checkpoint_exists(path):  # a folder, or the name of a shipped checkpoint (`tiny`)
        return vlpeft.load_model(path), str(locate(path)), "pre-trained"
    from vlpeft.data.images import ImagePreprocess
    from vlpeft.data.scenes import generate_scenes
    from vlpeft.model.blip import Blip
    from vlpeft.model.checkpoint import save_checkpoint
    from vlpeft.model.config import PRESETS
    from vlpeft.model.vit import fold_stem_batchnorm
    from vlpeft.recipes.pretrain import build_tokenizer

    log(f"{folder} not found: tiny model with random weights")
    tok = build_tokenizer(generate_scenes(2000, seed=0, split="train"), PRESETS["tiny"].text.vocab_size)
    cfg = dataclasses.replace(PRESETS["tiny"], text=dataclasses.replace(
        PRESETS["tiny"].text, vocab_size=tok.vocab_size, pad_id=tok.pad_id, cls_id=tok.cls_id, sep_id=tok.sep_id,
        bos_id=tok.dec_id, enc_id=tok.enc_id))
    torch.manual_seed(0)
    model = Blip(cfg)
    if (
        cfg.vision.stem_batchnorm
    ):  # as pretrain saves every checkpoint: the stem's BatchNorm folded into its convolutions
        model.cfg = dataclasses.replace(cfg, vision=fold_stem_batchnorm(model.vision))
    out = save_checkpoint(tmp / "tiny", model, tok, ImagePreprocess(image_size=cfg.vision.image_size),
                          pretrain={"seed": 0, "note": "random weights (benchmarks/bench.py)"})
    return vlpeft.load_model(out), str(out), "random"


def base_config(tiny_cfg):
    """PRESETS["base"] sizes with the tiny tokenizer's vocabulary and special-token ids."""
    from vlpeft.model.config import PRESETS, TextConfig

    base = PRESETS["base"]
    ids = {f.name: getattr(tiny_cfg.text, f.name) for f in dataclasses.fields(TextConfig) if f.name.endswith("_id")}
    return dataclasses.replace(base, text=dataclasses.replace(base.text, vocab_size=tiny_cfg.text.vocab_size, **ids),
                               name="base-random")


def base_model(tiny, tmp: Path):
    """A random base-sized Blip saved as a vlpeft checkpoint (pretrain.json of the tiny one: same scenes)."""
    from vlpeft.model.blip import Blip
    from vlpeft.model.checkpoint import LoadedModel, save_checkpoint

    cfg = base_config(tiny.model.cfg)
    torch.manual_seed(0)
    model = Blip(cfg).eval()
    pp = dataclasses.replace(tiny.preprocess, image_size=cfg.vision.image_size)
    folder = save_checkpoint(
        tmp / "base", model, tiny.tokenizer, pp, pretrain=copy.deepcopy(tiny.pretrain) or {"seed": 0}
    )
    return LoadedModel(model, tiny.tokenizer, pp, str(folder), "vlpeft", copy.deepcopy(tiny.pretrain) or {"seed": 0})



# ---- training steps -------------------------------------------------------------------------------

def finetune_config(model_path: str, method: str, batch: int, data_size, scene_seed: int, threads: int, **kw):
    from vlpeft.recipes.finetune import FinetuneConfig

    return FinetuneConfig(model=model_path, task=TASK, method=method, budget=BUDGETS[method], data_size=data_size,
                          batch_size=batch, scene_seed=scene_seed, threads=threads, **kw)


def vlpeft_step(prep, cfg, model, batch, image_ids, encode):
    """finetune's training step (`finetune.train_step`) on a fixed batch. -> step(cached=encode is not None) -> loss."""
    from vlpeft.peft import get_method
    from vlpeft.recipes.step import train_step
    from vlpeft.recipes.training import adamw

    opt = adamw(model, cfg.weight_decay, get_method(cfg.method).default_lr)

    def step(cached: bool = encode is not None) -> float:
        return train_step(prep, cfg, model, opt, batch, encode(image_ids) if cached else None)

    return step


def task_batch(prep, cfg, n: int, dev):
    from vlpeft.recipes.step import make_batch

    examples = prep.train[:n]
    batch = make_batch(prep, cfg, examples, np.random.default_rng(0), pixels=True)
    return batch.to(dev), [e.image_id for e in examples]


def prepared(loaded, model_path, method, s, scene_seed, threads, dev):
    """(prep, cfg, model with the method applied, cached image encoder or None)."""
    from vlpeft.peft import apply_peft
    from vlpeft.recipes.prepare import prepare
    from vlpeft.recipes.step import frozen_image_encoder

    cfg = finetune_config(model_path, method, s["batch"], s["data_size"], scene_seed, threads)
    prep = prepare(cfg, loaded)
    model = prep.loaded.model.to(dev)
    torch.manual_seed(0)
    apply_peft(model, method, prep.method_cfg)
    return prep, cfg, model, frozen_image_encoder(prep, cfg, model)


# ---- the machine ----------------------------------------------------------------------------------

def machine() -> dict:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "transformers", "peft"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    out = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "device": str(device()),
           "python": platform.python_version(), "versions": versions, "loadavg_start": loadavg()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def loadavg() -> list[float] | None:
    """1/5/15-minute load averages: a load above the core count means other work shared the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
