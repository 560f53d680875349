"""Built-in tasks over the synthetic scenes the tiny BLIP pre-trains on (`vlpeft.data.scenes`).

The tiny BLIP pre-trains on stream "train" of the generator with seed `scene_seed` (the
checkpoint's pre-training seed, from pretrain.json); the downstream splits come from the other
streams, so no downstream image was seen in pre-training:
    train = stream "val" scenes [0, 4000), val = stream "val" [4000, 4500), test = stream "test" [0, 1000).
VQA examples are every question of those scenes. Image ids are scene ids; `image_path` is ""
(pixels come from the generator).
"""

from __future__ import annotations

import functools

import numpy as np

from vlpeft.data.images import ImageCache
from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.errors import UserError
from vlpeft.tasks.base import LoadContext, TaskData, TaskDef, get_kind, register_task
from vlpeft.tasks.splits import answer_type, split_sizes

SCENES_TRAIN = 4000  # stream "val" [0, 4000)
SCENES_VAL = 500  # stream "val" [4000, 4500)
SCENES_TEST = 1000  # stream "test" [0, 1000)


def scene_captions(chunk) -> list[CaptionExample]:
    return [CaptionExample(s.scene_id, "", s.captions) for s in chunk]


def scene_questions(chunk) -> list[VQAExample]:
    return [VQAExample(question_id=f"{s.scene_id}-q{k}", image_id=s.scene_id, image_path="", question=qa.question,
                       answers=(qa.answer,), question_type=qa.qtype, answer_type=answer_type(qa.answer))
            for s in chunk for k, qa in enumerate(s.qa)]


def load_scenes(task: TaskDef, ctx: LoadContext, examples_of) -> TaskData:
    """The splits of a scenes task; `examples_of(scenes)` makes its examples (captions or questions)."""
    from vlpeft.data.scenes import generate_scenes, scenes_recipe

    seed = ctx.scene_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"task {task.name}: scene_seed must be an integer >= 0, got {seed!r}")
    val_stream = generate_scenes(SCENES_TRAIN + SCENES_VAL, seed=int(seed), split="val")
    scenes = {
        "train": val_stream[:SCENES_TRAIN],
        "val": val_stream[SCENES_TRAIN:],
        "test": generate_scenes(SCENES_TEST, seed=int(seed), split="test"),
    }
    splits = {split: examples_of(chunk) for split, chunk in scenes.items()}
    by_id = {s.scene_id: s for chunk in scenes.values() for s in chunk}
    answers = get_kind(task.kind).answer_list(splits["train"] + splits["val"])
    details = {
        "task": task.name,
        "source": "vlpeft.data.scenes (synthetic, generated on load)",
        "scene_seed": int(seed),
        "splits": {
            "train": f"stream 'val', scenes [0, {SCENES_TRAIN})",
            "val": f"stream 'val', scenes [{SCENES_TRAIN}, {SCENES_TRAIN + SCENES_VAL})",
            "test": f"stream 'test', scenes [0, {SCENES_TEST})",
            "pretraining": "stream 'train' (never used here)",
        },
        "sizes": split_sizes(splits),
        "answers": len(answers),
        "generator": scenes_recipe(int(seed), {"val": SCENES_TRAIN + SCENES_VAL, "test": SCENES_TEST}),
    }
    return TaskData(task, splits["train"], splits["val"], splits["test"], answers,
                    ImageCache(by_id, lambda scene: scene.image), f"scenes:seed={int(seed)}", details)


register_task(TaskDef(
    "scenes-caption", "caption", "scenes", "same data, same task",
    "Captioning held-out synthetic scenes, the data and task of the tiny BLIP's pre-training.",
    functools.partial(load_scenes, examples_of=scene_captions),
))
register_task(TaskDef(
    "scenes-vqa", "vqa", "scenes", "same data, new task",
    "Questions about held-out synthetic scenes (colour, shape, count, existence, spatial).",
    functools.partial(load_scenes, examples_of=scene_questions),
))
