"""Training defaults shared by every method (a method's own default learning rate is on its
`MethodSpec`, `vlpeft.peft.base`).

Training length policy (what a data-size curve means depends on it):
- "epochs": `epochs` passes over the training subset (small subsets get few steps);
- "steps": exactly `steps` optimiser steps whatever the subset size (small subsets are revisited);
- "epochs_min_steps" (default): `epochs` passes, but at least `min_steps` steps, so the smallest
  subsets still get a fair optimisation budget while large subsets are seen `epochs` times.
"""

from __future__ import annotations

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
