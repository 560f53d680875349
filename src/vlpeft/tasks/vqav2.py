"""The built-in `vqav2` task: VQAv2 in its official files (you give them); same images as a real
BLIP's pre-training (COCO), a new task.

Splits: official train for train; the official val split in halves *by image* (seeded) for val and
test, because test-dev answers are not public. Optional test-dev questions come back in
`TaskData.submission`, for a file to send to the evaluation server. Candidate answers: the 3,128
most frequent normalised answers of train (the usual list size), counting every human answer.
"""

from __future__ import annotations

from vlpeft.data.images import ImageCache, decode_file
from vlpeft.errors import UserError
from vlpeft.tasks.base import LoadContext, TaskData, TaskDef, register_task
from vlpeft.tasks.splits import (
    by_image,
    candidate_answers,
    image_sources,
    numeric_first,
    seeded_image_split,
    sources_digest,
    split_sizes,
)

SPLIT_SEED = 0  # fixed: the val/test carve is part of the task's definition
VQAV2_ANSWER_LIST_SIZE = 3128
PATH_HELP = {
    "train_questions": "v2_OpenEnded_mscoco_train2014_questions.json",
    "train_annotations": "v2_mscoco_train2014_annotations.json",
    "val_questions": "v2_OpenEnded_mscoco_val2014_questions.json",
    "val_annotations": "v2_mscoco_val2014_annotations.json",
    "test_questions": "v2_OpenEnded_mscoco_test-dev2015_questions.json (optional)",
    "image_root": "the folder holding the COCO images (train2014/, val2014/, test2015/)",
}


def load_vqav2_task(task: TaskDef, ctx: LoadContext) -> TaskData:
    from vlpeft.data.vqav2 import load_vqav2

    paths = ctx.paths
    root = paths["image_root"]
    train = load_vqav2(paths["train_questions"], root, paths["train_annotations"])
    official_val = load_vqav2(paths["val_questions"], root, paths["val_annotations"])
    overlap = {e.image_id for e in train} & {e.image_id for e in official_val}
    if overlap:
        raise UserError(
            f"{paths['val_questions']}: {len(overlap)} images are also in {paths['train_questions']} "
            f"(e.g. {sorted(overlap)[0]}); give the official train and val files"
        )
    val_images = numeric_first({e.image_id for e in official_val})
    half, other_half = seeded_image_split(val_images, len(val_images) // 2, SPLIT_SEED)
    splits = {"train": train, "val": by_image(official_val, half), "test": by_image(official_val, other_half)}
    submission = load_vqav2(paths["test_questions"], root) if "test_questions" in paths else []
    answers = candidate_answers(train, limit=VQAV2_ANSWER_LIST_SIZE)
    sources = image_sources(splits["train"] + splits["val"] + splits["test"] + submission, task.name)
    details = {
        "task": task.name,
        "source": {k: paths[k] for k in sorted(paths)},
        "splits": {
            "train": "official train",
            "val": f"half of the official val images ({len(half)}), seeded permutation (seed {SPLIT_SEED})",
            "test": f"the other half ({len(other_half)} images): test-dev answers are not public",
            "submission": f"{len(submission)} questions without answers" if submission else "none given",
        },
        "split_seed": SPLIT_SEED,
        "sizes": split_sizes(splits),
        "answers": f"{len(answers)} most frequent normalised answers of train (at most {VQAV2_ANSWER_LIST_SIZE})",
    }
    return TaskData(task, splits["train"], splits["val"], splits["test"], answers, ImageCache(sources, decode_file),
                    f"files:{sources_digest(sources)}", details, submission)


register_task(TaskDef(
    "vqav2", "vqa", "vqav2", "same images, new task",
    "VQAv2: official train; official val halved by image into val and test.", load_vqav2_task,
    paths=("train_questions", "train_annotations", "val_questions", "val_annotations", "image_root"),
    optional_paths=("test_questions",), path_help=PATH_HELP,
))
