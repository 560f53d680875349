"""Training defaults shared by every method (a method's own default learning rate is on its
line of the catalogue, `vlpeft.catalogue`).

Training length policy (what a data-size curve means depends on it):
- "converge" (default): train until the validation score stops improving beyond its own noise
  (`vlpeft.convergence`): a validation evaluation every `eval_every` steps (spaced out by
  `eval_growth`), step 0 included, the best weights kept, stopped once the level of the last
  `patience` evaluations is no higher than that of the ones before, but not before `min_steps`, nor
  `min_epochs` passes over the subset, nor `patience_ratio` times the step of the best evaluation so
  far (a plateau early in a run, followed by a second rise, is common on VQA; on larger subsets the
  second rise comes later in steps, hence a floor in epochs), capped at
  `max_steps` (and `max_epochs`); a run stopped by the cap while still improving is recorded as not
  converged. The learning rate is
  constant after its warm-up: a schedule tied to the run's length would depend on the cap, and a
  cosine decaying to zero at the cap flattens the validation curve by itself, which the convergence
  rule would read as converged.
- "epochs": `epochs` passes over the training subset (small subsets get few steps);
- "steps": exactly `steps` optimiser steps whatever the subset size (compute-matched: small subsets
  are revisited);
- "epochs_min_steps": `epochs` passes, but at least `min_steps` steps.
The fixed lengths are controls ("at equal compute"), not the answer to "does more data help": their
runs are diagnosed as well, and a verdict resting on one that was still improving is `confounded`.
"""

from __future__ import annotations

COMMON = {
    "weight_decay": 0.01,  # not applied to biases, norms, embeddings, prompts and prefixes
    "warmup_ratio": 0.1,  # linear warm-up over this fraction of the steps, then cosine decay to 0
    "batch_size": 32,
    "epochs": 5,
    "min_steps": 200,
    "min_epochs": 40,
    "length_policy": "converge",
    "max_steps": 4000,
    "eval_every": 50,
    "eval_growth": 1.25,
    "patience": 4,
    "patience_ratio": 2.0,
    "label_smoothing": 0.1,  # BLIP's captioning/answer loss
    "grad_clip": 1.0,
}
