"""Eight speed and memory figures of vlpeft, each a RATIO measured side by side in one invocation.

    python benchmarks/bench.py [--json] [--configs tiny,base] [--threads N] [--model tiny]

Two model configurations: `tiny` (the pre-trained checkpoint at --model, default the shipped `tiny`;
random weights of the tiny preset if --model names no checkpoint) and `base` (BLIP base sizes: ViT-B/16 at
384 px and a 12-layer BERT-base text decoder, from `PRESETS["base"]`, random weights, with the tiny
tokenizer's vocabulary and special-token ids so the same tokenizer and task data serve both). Every
figure uses the scenes-caption task (captioning: ViT + image-grounded text decoder).

A "training step" is what `vlpeft.recipes.finetune.finetune` does per step: (cached image states)
forward with the caption LM loss (label smoothing 0.1), zero_grad, backward, gradient-norm clip
(1.0), AdamW step. The batch is built beforehand (it is the same on both sides of a comparison).

1. lora_step_vs_hf_peft (goal <= 0.35 on tiny, <= 0.2 on base): vlpeft LoRA step time / transformers
   `BlipForConditionalGeneration` + Hugging Face `peft` LoRA step time. Same weights (the HF model is
   saved with `save_pretrained` and loaded by `vlpeft.load_model`), same rank, alpha and targets (q
   and v of the decoder's self- and cross-attention; the trainable-parameter counts are asserted
   equal, and so are the first losses), same batch, threads and optimiser. The headline is the
   vlpeft step as a study runs it: the frozen ViT's output comes from the feature cache
   (recipes/features.py), while HF+peft runs the ViT every step. Detail: the ratio without the cache
   (vlpeft runs the ViT too: the implementations compared like for like) and the ms of each side.
2. peft_step_vs_full (no goal): per method (prompt, prefix, adapter, lora, mam, bitfit, ia3) its
   step time / full fine-tuning's step time on the same batch; every one of these methods leaves the
   ViT untouched on captioning, so it uses the feature cache, as in a study.
3. grid_cache_speedup (goal >= 3): wall time of a small grid of real `finetune` runs (3 PEFT
   methods x 2 seeds, 5 epochs (the study default) over a small subset, evals=1, small validation
   and test sets)
   without the feature cache / with it (starting cold; on-disk cache in a fresh temporary folder when
   FinetuneConfig has `feature_cache_dir`). Each run gets a shared copy of one loaded checkpoint, as a
   study worker does. The runs of the two grids alternate. Detail: both wall times, and whether the
   test scores of the two grids are identical.
3b. grid_overhead_share (goal <= 0.1): the share of the cached grid's wall time spent outside
   training steps (validation included) and the test evaluation: giving each run its model, preparing
   the task, building the optimiser, recording.
4. flops_fraction_of_peak (goal >= 0.35, on base): achieved FLOP/s of a full fine-tuning step /
   this machine's fp32 matmul FLOP/s (best of several square torch.mm, same threads, measured
   between the step timings). The step's FLOPs are counted analytically from the config: every
   linear layer 2*in*out per token (the stem's convolutions 2*in*k*k*out per output pixel),
   attention QK^T and AV 2*2*L*S*d per head and layer, the LM head; the ViT over all patches +
   [CLS], the decoder's self- and cross-attention over the (padded) caption tokens; x3 for forward +
   backward. Norms, softmax, GELU, the optimiser are not counted.
4b. peft_step_fraction_of_peak (goal >= 0.5, on base): the same for the LoRA step over cached image
   states (figure 2's), its FLOPs counted as `step_flops` says.
5. lora_peak_mem_vs_full (goal <= 0.6): peak memory of a LoRA training run (with the feature cache,
   as a study runs it) / full fine-tuning's, each in a fresh subprocess that loads the checkpoint,
   trains a few steps and reports its peak: on CPU the process's peak RSS (so the Python + torch
   baseline and the transient of loading the weights are in), read as VmHWM from /proc/self/status
   because getrusage's ru_maxrss of a child inherits the parent's high-water mark across fork+exec
   on Linux (both children would report the parent's peak); torch.cuda.max_memory_allocated on CUDA.

6. compile_speedup (no goal yet: it decides whether `torch.compile` pays): the time of a
   COMPILE_CELL_STEPS-step LoRA cell with the kind's loss compiled (`torch.compile`, static shapes),
   its compilation included / the same cell eager, both from one fixed batch over cached image
   states as figure 1's. Detail: the compiled and eager step times, their ratio, and the compile
   (first call) seconds, which depend on whether Inductor's on-disk cache already holds the graph.

Only ratios measured in the same invocation are meaningful: the machines are shared and noisy, so
absolute times from different runs must not be compared. The two sides of each timing figure
alternate repetition by repetition (order rotated), after warm-up steps, and medians are taken.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TASK = "scenes-caption"
BUDGETS = {"prompt": "16", "prefix": "16", "adapter": "16", "lora": "8", "mam": "32", "full": None,
           "bitfit": None, "ia3": None}
GRID_METHODS = ("lora", "prefix", "adapter")
GRID_SEEDS = (0, 1)
FIGURES = ("lora_step_vs_hf_peft", "peft_step_vs_full", "grid_cache_speedup", "grid_overhead_share",
           "flops_fraction_of_peak", "peft_step_fraction_of_peak", "lora_peak_mem_vs_full", "compile_speedup")
COMPILE_CELL_STEPS = 1000  # a cell's training steps in compile_speedup (the quick preset's runs stop near it)
# figure -> {config: (op, goal)}; a config missing from a figure's goals has none
GOALS = {"lora_step_vs_hf_peft": {"tiny": ("<=", 0.35), "base": ("<=", 0.2)},
         "grid_cache_speedup": {"tiny": (">=", 3.0), "base": (">=", 3.0)},
         "grid_overhead_share": {"tiny": ("<=", 0.1), "base": ("<=", 0.1)},
         "flops_fraction_of_peak": {"base": (">=", 0.35)},
         "peft_step_fraction_of_peak": {"base": (">=", 0.5)},
         "lora_peak_mem_vs_full": {"tiny": ("<=", 0.6), "base": ("<=", 0.6)}}
# Per configuration: training batch, warm-up and timed repetitions per side, memory-child steps,
# the grid's runs. The base sizes keep the whole bench within minutes on 2 CPU cores.
SETTINGS = {
    "tiny": {"batch": 32, "warmup": 3, "reps": 9, "mem_steps": 3, "data_size": 400,
             "grid": {"data_size": 96, "batch_size": 32, "epochs": 5, "val_limit": 32, "test_limit": 32}},
    "base": {"batch": 4, "warmup": 1, "reps": 3, "mem_steps": 2, "data_size": 400,
             "grid": {"data_size": 8, "batch_size": 4, "epochs": 5, "val_limit": 4, "test_limit": 4}},
}
# transformers module names of the layers vlpeft's default LoRA targets ("q", "v") select on captioning:
# query and value of the decoder's self-attention and cross-attention in every block.
HF_LORA_TARGETS = r"text_decoder\.bert\.encoder\.layer\.\d+\.(attention|crossattention)\.self\.(query|value)"


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


def hf_blip_config(cfg):
    """transformers BlipConfig with the sizes and token ids of a vlpeft BlipConfig (no dropout,
    label smoothing 0.1 as BLIP's captioning loss)."""
    import transformers

    v, t = cfg.vision, cfg.text
    vision = {"hidden_size": v.width, "intermediate_size": v.mlp_width, "num_hidden_layers": v.depth,
              "num_attention_heads": v.heads, "image_size": v.image_size, "patch_size": v.patch_size,
              "layer_norm_eps": v.ln_eps, "attention_dropout": 0.0}
    text = {"vocab_size": t.vocab_size, "hidden_size": t.width, "intermediate_size": t.mlp_width,
            "num_hidden_layers": t.depth, "num_attention_heads": t.heads, "max_position_embeddings": t.max_positions,
            "layer_norm_eps": t.ln_eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "bos_token_id": t.bos_id, "pad_token_id": t.pad_id, "sep_token_id": t.sep_id, "eos_token_id": t.sep_id,
            "label_smoothing": 0.1, "tie_word_embeddings": cfg.tie_lm_head}
    return transformers.BlipConfig(vision_config=vision, text_config=text, image_text_hidden_size=cfg.embed_dim,
                                   label_smoothing=0.1, tie_word_embeddings=cfg.tie_lm_head)


# ---- training steps -------------------------------------------------------------------------------

def finetune_config(model_path: str, method: str, batch: int, data_size, scene_seed: int, threads: int, **kw):
    from vlpeft.recipes.finetune import FinetuneConfig

    return FinetuneConfig(model=model_path, task=TASK, method=method, budget=BUDGETS[method], data_size=data_size,
                          batch_size=batch, scene_seed=scene_seed, threads=threads, **kw)


def vlpeft_step(prep, cfg, model, batch, image_ids, encode):
    """finetune's training step (`finetune.train_step`) on a fixed batch. -> step(cached=encode is not None) -> loss."""
    from vlpeft.peft import get_method
    from vlpeft.recipes.finetune import train_step
    from vlpeft.recipes.training import adamw

    opt = adamw(model, cfg.weight_decay, get_method(cfg.method).default_lr)

    def step(cached: bool = encode is not None) -> float:
        return train_step(prep, cfg, model, opt, batch, encode(image_ids) if cached else None)

    return step


def task_batch(prep, cfg, n: int, dev):
    from vlpeft.recipes.finetune import make_batch

    examples = prep.train[:n]
    batch = make_batch(prep, cfg, examples, np.random.default_rng(0), pixels=True)
    return batch.to(dev), [e.image_id for e in examples]


def prepared(loaded, model_path, method, s, scene_seed, threads, dev):
    """(prep, cfg, model with the method applied, cached image encoder or None)."""
    from vlpeft.peft import apply_peft
    from vlpeft.recipes.finetune import frozen_image_encoder, prepare

    cfg = finetune_config(model_path, method, s["batch"], s["data_size"], scene_seed, threads)
    prep = prepare(cfg, loaded)
    model = prep.loaded.model.to(dev)
    torch.manual_seed(0)
    apply_peft(model, method, prep.method_cfg)
    return prep, cfg, model, frozen_image_encoder(prep, cfg, model)


# ---- figure 1 -------------------------------------------------------------------------------------

def lora_vs_hf_peft(ref, name, s, scene_seed, threads, dev, tmp: Path) -> tuple[float, dict]:
    import transformers

    import peft
    import vlpeft
    from vlpeft.model.tokenizer import save_tokenizer
    from vlpeft.peft import count_params, get_method

    # transformers' BLIP has only the patch stem, so both sides use it (the tiny preset's conv stem is
    # part of the ViT, which the cached headline figure does not run anyway).
    want = dataclasses.replace(ref.model.cfg, vision=dataclasses.replace(ref.model.cfg.vision, stem="patch"))
    folder = tmp / f"hf-{name}"
    torch.manual_seed(0)
    hf = transformers.BlipForConditionalGeneration(hf_blip_config(want))
    hf.save_pretrained(folder)
    save_tokenizer(ref.tokenizer, folder / "tokenizer.json")
    loaded = vlpeft.load_model(folder)
    got = loaded.model.cfg
    assert (got.vision, got.text) == (want.vision, want.text), f"HF config round trip: {got} != {want}"

    prep, cfg, model, encode = prepared(loaded, str(folder), "lora", s, scene_seed, threads, dev)
    lora = prep.method_cfg
    assert tuple(lora.targets) == ("q", "v") and tuple(lora.placement) == ("text_decoder",), lora
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                 target_modules=HF_LORA_TARGETS, bias="none")).to(dev)
    n_vl = count_params(model)["trainable"]
    n_hf = sum(p.numel() for p in hf.parameters() if p.requires_grad)
    assert n_vl == n_hf, f"trainable parameters differ: vlpeft {n_vl}, HF peft {n_hf}"

    batch, image_ids = task_batch(prep, cfg, s["batch"], dev)
    labels = batch.ids.masked_fill(batch.target_mask == 0, -100)
    hf_params = [p for p in hf.parameters() if p.requires_grad]
    hf_opt = torch.optim.AdamW(hf_params, lr=get_method("lora").default_lr, weight_decay=cfg.weight_decay, fused=True)

    def hf_step() -> float:
        hf.train()
        loss = hf(pixel_values=batch.pixels, input_ids=batch.ids, attention_mask=batch.mask, labels=labels).loss
        hf_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf_params, cfg.grad_clip)
        hf_opt.step()
        return loss.item()

    step = vlpeft_step(prep, cfg, model, batch, image_ids, encode)
    assert encode is not None, "LoRA on the decoder should use the feature cache"
    times, first = interleaved({"hf_peft": hf_step, "vlpeft_cached": lambda: step(True),
                                "vlpeft_uncached": lambda: step(False)}, s["warmup"], s["reps"])
    loss_diff = abs(first["hf_peft"] - first["vlpeft_cached"])  # both before their first update
    assert loss_diff <= 1e-3 * max(1.0, abs(first["hf_peft"])), f"first losses differ: {first}"
    ms = {k: med(v) * 1e3 for k, v in times.items()}
    detail = {
        "hf_peft_ms": sig(ms["hf_peft"]),
        "vlpeft_cached_ms": sig(ms["vlpeft_cached"]),
        "vlpeft_uncached_ms": sig(ms["vlpeft_uncached"]),
        "ratio_uncached": sig(ms["vlpeft_uncached"] / ms["hf_peft"]),
        "trainable_params": n_vl,
        "first_loss": sig(first["hf_peft"], 6),
        "first_loss_abs_diff": sig(loss_diff, 3),
        "batch": s["batch"],
        "text_len": int(batch.ids.shape[1]),
        "timed_steps": s["reps"],
    }
    return sig(ms["vlpeft_cached"] / ms["hf_peft"]), detail


# ---- figure 6 -------------------------------------------------------------------------------------

def compile_speedup(pristine, path, s, scene_seed, threads, dev) -> tuple[float, dict]:
    """(whole-cell time compiled / eager, detail): see the module docstring, figure 6."""
    from vlpeft.recipes.finetune import task_loss
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


# ---- figures 2 and 4 ------------------------------------------------------------------------------

def stem_flops(v) -> int:
    """Forward FLOPs of the ViT stem for one image: 2 x in x k x k x out x output pixels per convolution
    (max-pooling halves the side between the pool stem's convolutions; its own cost is not counted)."""
    from vlpeft.model.vit import make_stem

    flops, side = 0, v.image_size
    for m in make_stem(v).modules():
        if isinstance(m, torch.nn.Conv2d):
            side = (side + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
            flops += 2 * m.in_channels * m.kernel_size[0] * m.kernel_size[1] * m.out_channels * side * side
        elif isinstance(m, torch.nn.MaxPool2d):
            side = (side - m.kernel_size) // m.stride + 1
    return flops


def step_flops(cfg, batch: int, text_len: int) -> dict[str, int]:
    """Analytic FLOPs of one captioning step (see module doc): full fine-tuning, forward x3; and
    `lora_cached`, a LoRA step over cached image states: the decoder's forward, then a backward that
    computes input gradients only (the weights are frozen): once more every linear layer but the
    cross-attention key/value projections (their input, the image states, needs no gradient), and
    twice the attention products (both operands need one). LoRA's own rank-r products are left out
    (under 1 % at rank 8 on base), and so is block 0's input gradient, which autograd skips: an
    upper bound by about 1/depth of the backward."""
    v, t = cfg.vision, cfg.text
    def lin(i, o, n):
        return 2 * i * o * n  # a linear layer over n tokens
    T = v.num_patches + 1
    vit = stem_flops(v) + v.depth * (
        4 * lin(v.width, v.width, T) + lin(v.width, v.mlp_width, T) + lin(v.mlp_width, v.width, T)
        + 2 * 2 * T * T * v.width)
    L, D = text_len, t.width
    block = (4 * lin(D, D, L) + 2 * 2 * L * L * D  # self-attention
             + 2 * lin(D, D, L) + 2 * lin(t.cross_width, D, T) + 2 * 2 * L * T * D  # cross-attention to T states
             + lin(D, t.mlp_width, L) + lin(t.mlp_width, D, L))
    decoder = t.depth * block + lin(D, D, L) + lin(D, t.vocab_size, L)  # + LM head
    cross_kv, attention = 2 * lin(t.cross_width, D, T), 2 * 2 * L * L * D + 2 * 2 * L * T * D
    lora = decoder + (decoder - t.depth * cross_kv + t.depth * attention)  # forward + input-gradient backward
    return {"vision": 3 * batch * vit, "decoder": 3 * batch * decoder, "total": 3 * batch * (vit + decoder),
            "lora_cached": batch * lora}


def matmul_probe(dev):
    n = 8192 if dev.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    return n, lambda: torch.mm(a, b)


def peft_vs_full(pristine, model_path, s, scene_seed, threads, dev) -> tuple[dict, dict, float, dict, float, dict]:
    from vlpeft import catalogue
    from vlpeft.peft import count_params, shared_copy

    methods = ("full", *catalogue.compared(), "bitfit", "ia3")
    steps, params, batch = {}, {}, None
    originals = {p.data_ptr() for p in pristine.model.parameters()}
    for m in methods:
        model = shared_copy(pristine.model)  # as a study worker does: what the method trains is cloned
        prep, cfg, model, encode = prepared(dataclasses.replace(pristine, model=model), model_path, m, s, scene_seed,
                                            threads, dev)
        assert not any(p.data_ptr() in originals for p in model.parameters() if p.requires_grad), m
        if m != "full":
            assert encode is not None, f"{m} on captioning should use the feature cache"
        if batch is None:
            batch, image_ids = task_batch(prep, cfg, s["batch"], dev)
        steps[m] = vlpeft_step(prep, cfg, model, batch, image_ids, encode)
        params[m] = count_params(model)["trainable"]
    n, mm = matmul_probe(dev)
    times, _ = interleaved({**steps, "matmul": mm}, s["warmup"], s["reps"])
    for _ in range(3):  # a few more matmuls: the peak is the best of them
        sync()
        t0 = time.perf_counter()
        mm()
        sync()
        times["matmul"].append(time.perf_counter() - t0)
    full = med(times["full"])
    ratios = {m: sig(med(times[m]) / full) for m in methods if m != "full"}
    peak = 2 * n ** 3 / min(times["matmul"])
    flops = step_flops(pristine.model.cfg, s["batch"], int(batch.ids.shape[1]))
    achieved = flops["total"] / full
    lora_achieved = flops["lora_cached"] / med(times["lora"])
    detail = {"step_ms": {m: sig(med(times[m]) * 1e3) for m in methods}, "trainable_params": params,
              "batch": s["batch"], "text_len": int(batch.ids.shape[1]), "timed_steps": s["reps"]}
    fl = {"step_flops": flops["total"], "step_flops_vision": flops["vision"], "step_flops_decoder": flops["decoder"],
          "full_step_ms": sig(full * 1e3), "achieved_gflops": sig(achieved / 1e9),
          "matmul_peak_gflops": sig(peak / 1e9), "matmul_size": n, "matmul_samples": len(times["matmul"])}
    lora_fl = {"step_flops": flops["lora_cached"], "lora_step_ms": sig(med(times["lora"]) * 1e3),
               "achieved_gflops": sig(lora_achieved / 1e9), "matmul_peak_gflops": sig(peak / 1e9)}
    return ratios, detail, sig(achieved / peak), fl, sig(lora_achieved / peak), lora_fl


# ---- figure 3 -------------------------------------------------------------------------------------

def grid_speedup(pristine, model_path, s, scene_seed, threads, tmp: Path) -> tuple[float, dict, float]:
    from vlpeft.peft import shared_copy
    from vlpeft.recipes import features
    from vlpeft.recipes.finetune import FinetuneConfig, finetune

    has_dir = "feature_cache_dir" in {f.name for f in dataclasses.fields(FinetuneConfig)}
    cache_dir = tempfile.mkdtemp(prefix="features-", dir=tmp)
    features.clear()  # the cached grid starts cold
    g = s["grid"]
    seconds = {False: 0.0, True: 0.0}
    inside = {False: 0.0, True: 0.0}  # training steps (validation included) and the test evaluation
    scores: dict[bool, list[float]] = {False: [], True: []}
    cells = [(m, seed) for m in GRID_METHODS for seed in GRID_SEEDS]
    for i, (method, seed) in enumerate(cells):
        for cached in ((False, True) if i % 2 == 0 else (True, False)):
            extra = {"feature_cache_dir": cache_dir} if cached and has_dir else {}
            cfg = finetune_config(model_path, method, g["batch_size"], g["data_size"], scene_seed, threads,
                                  seed=seed, length_policy="epochs", epochs=g["epochs"], evals=1,
                                  val_limit=g["val_limit"], test_limit=g["test_limit"], feature_cache=cached, **extra)
            t0 = time.perf_counter()
            loaded = dataclasses.replace(pristine, model=shared_copy(pristine.model))  # as a study worker does
            metrics = finetune(cfg, out=None, progress=False, loaded=loaded, log=lambda *a, **k: None)
            seconds[cached] += time.perf_counter() - t0
            inside[cached] += metrics["train_seconds"] + metrics["eval_seconds"]
            scores[cached].append(metrics["test_score"])
            del loaded
    diff = max(abs(a - b) for a, b in zip(scores[False], scores[True]))
    detail = {"runs_per_grid": len(cells), "methods": list(GRID_METHODS), "seeds": list(GRID_SEEDS), **g,
              "uncached_s": sig(seconds[False]), "cached_s": sig(seconds[True]),
              "disk_cache": has_dir, "test_scores_identical": scores[False] == scores[True],
              "test_scores_max_abs_diff": diff, "test_scores_uncached": [sig(x, 6) for x in scores[False]],
              "test_scores_cached": [sig(x, 6) for x in scores[True]],
              "cached_outside_s": sig(seconds[True] - inside[True])}
    return sig(seconds[False] / seconds[True]), detail, sig(1 - inside[True] / seconds[True])


# ---- figure 5 -------------------------------------------------------------------------------------

def peak_rss_kib() -> int:
    """This process's peak resident set (KiB): VmHWM, which starts afresh at exec, unlike ru_maxrss."""
    from vlpeft.recipes.finetune import peak_memory_mb

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
        r = subprocess.run([sys.executable, __file__, "--_memory-child", json.dumps(spec)], check=False,
                           capture_output=True,
                           text=True, cwd=str(ROOT))
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


# ---- driver ---------------------------------------------------------------------------------------

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
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return 0
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
