"""How consistent a task is with a checkpoint's pre-training, measured from the checkpoint alone
(the study records these beside its results; `analysis.consistency.zero_shot` adds the one measure
that needs the study's runs):

- `lm_loss`: the pre-trained model's mean loss on `n` training targets of the task, in the task's own
  set-up (the kind's batch and loss: caption LM loss on captions; answer-decoder loss given the
  image-grounded question), no label smoothing: low when the task's texts are what the decoder
  learnt to write.
- `feature_distance`: ||mean_task - mean_pretrain|| / sqrt(trace Sigma_pretrain) of the ITC image
  features (normalised, after the projection) of `n` task training images vs `n` pre-training
  scenes (the recipe in pretrain.json): 0 for the pre-training distribution itself, about 1.4 for
  features as far apart as two random unit vectors.
"""

from __future__ import annotations

import numpy as np
import torch


def measure(model_path: str, tasks: list[tuple[str, dict]], *, max_text_len: int, n: int = 256, seed: int = 0,
            scene_seed: int | None = None) -> dict[str, dict]:
    """lm_loss and feature_distance per task (no zero_shot: that comes from the study's runs).
    `tasks`: (task name or task file, the task's data paths) pairs; results are keyed by task name.
    `max_text_len`: tokens kept per text, as the fine-tuning runs keep them."""
    import vlpeft
    from vlpeft.data.images import preprocess
    from vlpeft.data.scenes import generate_scenes
    from vlpeft.model.checkpoint import scene_seed_of
    from vlpeft.tasks import cached_task, get_kind, get_task, task_options

    loaded = vlpeft.load_model(model_path)
    model = loaded.model.eval()
    device = next(model.parameters()).device
    scene_seed = scene_seed_of(loaded.pretrain, scene_seed)
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        scenes = generate_scenes(n, seed=scene_seed, split="train")
        ref = _features(model, preprocess([s.image for s in scenes], loaded.preprocess).to(device))
    mu, spread = ref.mean(0), np.sqrt(np.trace(np.cov(ref, rowvar=False)))
    out: dict[str, dict] = {}
    for task_ref, paths in tasks:
        task = get_task(task_ref)
        kind = get_kind(task.kind)
        data = cached_task(task.ref, scene_seed=scene_seed, paths=paths)
        options = task_options(task)
        examples = [data.train[i] for i in rng.permutation(len(data.train))[:n]]
        with torch.inference_mode():
            losses = []
            for i in range(0, len(examples), 64):
                chunk = examples[i:i + 64]
                batch = kind.batch(chunk, data, loaded, options, max_text_len, rng).to(device)
                losses.append(float(kind.loss(model, batch, 0.0)) * len(chunk))
            ids = list(dict.fromkeys(ex.image_id for ex in examples))
            feats = np.concatenate([_features(model, preprocess([data.image(x) for x in ids[i:i + 64]],
                                                                loaded.preprocess).to(device))
                                    for i in range(0, len(ids), 64)])
        out[task.name] = {"lm_loss": sum(losses) / len(examples),
                          "feature_distance": float(np.linalg.norm(feats.mean(0) - mu) / spread),
                          "relation": task.relation, "n": len(examples)}
    return out


def _features(model, pixels) -> np.ndarray:
    return model.image_feature(model.encode_image(pixels)).float().cpu().numpy()  # (B, E), unit norm


