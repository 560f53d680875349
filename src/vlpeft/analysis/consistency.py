"""How consistent each task is with pre-training, measured from the pre-trained checkpoint alone.

Per task:
- `zero_shot`: the frozen model's test score (from the study's `frozen` runs) divided by the task's
  best fine-tuned cell mean: 1 means pre-training already does the task, 0 nothing.
- `lm_loss`: the pre-trained model's mean loss on `n` training targets of the task, in the task's own
  set-up (caption LM loss on captions; answer-decoder loss given the image-grounded question), no
  label smoothing: low when the task's texts are what the decoder learnt to write.
- `feature_distance`: ||mean_task − mean_pretrain|| / sqrt(trace Σ_pretrain) of the ITC image
  features (normalised, after the projection) of `n` task training images vs `n` pre-training
  scenes (the recipe in pretrain.json): 0 for the pre-training distribution itself, about 1.4 for
  features as far apart as two random unit vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def measure(model_path: str, tasks: list[str], paths: dict | None = None, n: int = 256, seed: int = 0) -> dict[str, dict]:
    """lm_loss and feature_distance per task (no zero_shot: that comes from the study's runs)."""
    import vlpeft
    from vlpeft.data.images import preprocess
    from vlpeft.data.scenes import generate_scenes
    from vlpeft.recipes.finetune import FinetuneConfig, prepare, task_loss, make_batch
    from vlpeft.tasks.builtin import task_info

    loaded = vlpeft.load_model(model_path)
    model = loaded.model.eval()
    pre = loaded.pretrain or {}
    scene_seed = int(pre.get("seed", 0))
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        scenes = generate_scenes(n, seed=scene_seed, split="train")
        ref = _features(model, preprocess([s.image for s in scenes], loaded.preprocess))
    mu, spread = ref.mean(0), np.sqrt(np.trace(np.cov(ref, rowvar=False)))
    out: dict[str, dict] = {}
    for task in tasks:
        info = task_info(task)
        task_paths = {k: v for k, v in (paths or {}).items() if k in info.paths + info.optional_paths}
        cfg = FinetuneConfig(model=model_path, task=task, method="frozen", label_smoothing=0.0, paths=task_paths)
        prep = prepare(cfg, loaded)
        examples = [prep["train"][i] for i in rng.permutation(len(prep["train"]))[:n]]
        with torch.inference_mode():
            losses = []
            for i in range(0, len(examples), 64):
                batch = make_batch(prep, cfg, examples[i:i + 64], rng)
                losses.append(float(task_loss(prep, model, batch, cfg)) * len(examples[i:i + 64]))
            ids = list(dict.fromkeys(ex.image_id for ex in examples))
            feats = np.concatenate([_features(model, preprocess([prep["task"].image(x) for x in ids[i:i + 64]],
                                                                loaded.preprocess)) for i in range(0, len(ids), 64)])
        out[task] = {"lm_loss": sum(losses) / len(examples),
                     "feature_distance": float(np.linalg.norm(feats.mean(0) - mu) / spread),
                     "relation": info.relation, "n": len(examples)}
    return out


def _features(model, pixels) -> np.ndarray:
    return model.image_feature(model.encode_image(pixels)).float().numpy()  # (B, E), unit norm


def zero_shot(cells: list[dict[str, Any]]) -> dict[str, float | None]:
    """frozen score / best fine-tuned cell mean, per task (None without frozen runs)."""
    out = {}
    for task in sorted({c["task"] for c in cells}):
        mine = [c for c in cells if c["task"] == task]
        frozen = [c["mean"] for c in mine if c["method"] == "frozen"]
        trained = [c["mean"] for c in mine if c["method"] != "frozen"]
        out[task] = (float(np.mean(frozen)) / max(trained)) if frozen and trained and max(trained) else None
    return out

