"""`vlpeft tasks check`: load a task and say what was read, so a user sees their data was read
right before a study: kind, source, split sizes in examples and images, captions per image or
answers per question, the answer-list size, and the image size range (every image decoded, so a
missing or corrupt one is reported now)."""

from __future__ import annotations

import time
from typing import Any

from vlpeft.tasks import SPLIT_NAMES, get_kind, get_task, load_task, task_options
from vlpeft.tasks.splits import image_ids


def check_task(ref: str, paths: dict | None = None, scene_seed: int = 0, max_images: int = 0) -> dict[str, Any]:
    """Load `ref` and describe it; decode every image of its splits (the first `max_images` when > 0)."""
    import dataclasses

    task = get_task(ref)
    kind = get_kind(task.kind)
    t0 = time.perf_counter()
    data = load_task(ref, scene_seed=scene_seed, paths=paths)
    splits = {}
    for name in SPLIT_NAMES:
        examples = data.split(name)
        splits[name] = {"examples": len(examples), "images": len(image_ids(examples)), **kind.describe(examples)}
    ids = list(dict.fromkeys(ex.image_id for name in SPLIT_NAMES for ex in data.split(name)))
    checked = ids[:max_images] if max_images > 0 else ids
    heights, widths = [], []
    for image_id in checked:
        h, w = data.image(image_id).shape[:2]
        heights.append(h)
        widths.append(w)
    report = {
        "task": task.name, "kind": task.kind, "metric": kind.metric, "source": task.source,
        "task_file": task.file, "relation": task.relation, "description": task.description,
        "splits": splits, "split_rules": data.details.get("splits"),
        "answers": len(data.answers) if data.answers else None,
        "top_answers": list(data.answers[:10]),
        "images_checked": len(checked), "images_total": len(ids),
        "image_height": [min(heights), max(heights)], "image_width": [min(widths), max(widths)],
        "options": dataclasses.asdict(task_options(task)),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if data.submission:
        report["submission_questions"] = len(data.submission)
    return report


def format_check(r: dict[str, Any]) -> str:
    lines = [f"task {r['task']}: {r['kind']} ({r['metric']}), source {r['source']}"
             + (f", task file {r['task_file']}" if r["task_file"] else ""),
             f"relation to pre-training: {r['relation']}"]
    lines.append(f"{'split':6} {'examples':>9} {'images':>8}  {r['splits']['train']['per_example']}")
    for name, s in r["splits"].items():
        lo, hi = s["per_example_range"]
        lines.append(f"{name:6} {s['examples']:>9,} {s['images']:>8,}  {lo}" + (f"-{hi}" if hi != lo else ""))
    rules = r.get("split_rules")
    if isinstance(rules, dict):
        lines.append("splits: " + "; ".join(f"{k}: {v}" for k, v in rules.items()))
    if r["answers"] is not None:
        lines.append(f"candidate answers: {r['answers']:,} (most frequent: {', '.join(r['top_answers'][:5])})")
    (h0, h1), (w0, w1) = r["image_height"], r["image_width"]
    which = (
        "every image"
        if r["images_checked"] == r["images_total"]
        else f"{r['images_checked']:,} of {r['images_total']:,} images"
    )
    lines.append(f"images: {which} decoded; height {h0}-{h1} px, width {w0}-{w1} px")
    lines.append(f"options: {', '.join(f'{k}={v!r}' for k, v in r['options'].items())}")
    lines.append(f"read in {r['seconds']:.1f} s")
    return "\n".join(lines)
