"""Figures 2, 4 and 4b of bench.py, measured together by `peft_vs_full`.

2. peft_step_vs_full (no goal): per method (prompt, prefix, adapter, lora, mam, bitfit, ia3) its
   step time / full fine-tuning's step time on the same batch; every one of these methods leaves the
   ViT untouched on captioning, so it uses the feature cache, as in a study.
4. flops_fraction_of_peak (goal >= 0.35, on base): achieved FLOP/s of a full fine-tuning step /
   this machine's fp32 matmul FLOP/s (best of several square torch.mm, same threads, measured
   between the step timings). The step's FLOPs are counted analytically from the config: every
   linear layer 2*in*out per token (the stem's convolutions 2*in*k*k*out per output pixel),
   attention QK^T and AV 2*2*L*S*d per head and layer, the LM head; the ViT over all patches +
   [CLS], the decoder's self- and cross-attention over the (padded) caption tokens; x3 for forward +
   backward. Norms, softmax, GELU, the optimiser are not counted.
4b. peft_step_fraction_of_peak (goal >= 0.5, on base): the same for the LoRA step over cached image
   states (figure 2's), its FLOPs counted as `step_flops` says.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from common import interleaved, med, prepared, sig, sync, task_batch, vlpeft_step


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
