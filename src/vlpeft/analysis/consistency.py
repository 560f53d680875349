"""How consistent each task is with pre-training, from a study's results: `zero_shot`, the frozen
model's test score (from the study's `frozen` runs) divided by the task's best fine-tuned cell mean
(1: pre-training already does the task, 0: nothing). The measures made from the checkpoint alone
(`lm_loss`, `feature_distance`) are `vlpeft.tasks.consistency`'s, stored in the study's meta."""

from __future__ import annotations

from typing import Any

import numpy as np


def zero_shot(cells: list[dict[str, Any]]) -> dict[str, float | None]:
    """frozen score / best fine-tuned cell mean, per task (None without frozen runs)."""
    out = {}
    for task in sorted({c["task"] for c in cells}):
        mine = [c for c in cells if c["task"] == task]
        frozen = [c["mean"] for c in mine if c["method"] == "frozen"]
        trained = [c["mean"] for c in mine if c["method"] != "frozen"]
        out[task] = (float(np.mean(frozen)) / max(trained)) if frozen and trained and max(trained) else None
    return out

