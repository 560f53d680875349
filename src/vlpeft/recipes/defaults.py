"""Training defaults per PEFT method: the one place they live.

Learning rates follow the usual practice that PEFT methods take 10-100x the learning rate of full
fine-tuning (Hu et al. 2021; He et al. 2022; Lester et al. 2021 go higher still for prompts). They
are starting points measured on the tiny model here, not tuned per task; a study can sweep them
(`lr` grid, selected on validation).

Training length policy (what a data-size curve means depends on it):
- "epochs": `epochs` passes over the training subset (small subsets get few steps);
- "steps": exactly `steps` optimiser steps whatever the subset size (small subsets are revisited);
- "epochs_min_steps" (default): `epochs` passes, but at least `min_steps` steps, so the smallest
  subsets still get a fair optimisation budget while large subsets are seen `epochs` times.
"""

from __future__ import annotations

METHOD_LR = {
    "full": 1e-4,
    "frozen": 0.0,
    "bitfit": 3e-3,
    "ia3": 3e-3,
    "lora": 1e-3,
    "adapter": 1e-3,
    "prefix": 1e-3,
    "mam": 1e-3,
    "prompt": 1e-2,
}

COMMON = {
    "weight_decay": 0.01,  # not applied to biases, norms, embeddings, prompts and prefixes
    "warmup_ratio": 0.1,  # linear warm-up over this fraction of the steps, then cosine decay to 0
    "batch_size": 32,
    "epochs": 5,
    "min_steps": 300,
    "length_policy": "epochs_min_steps",
    "label_smoothing": 0.1,  # BLIP's captioning/answer loss
    "grad_clip": 1.0,
}
