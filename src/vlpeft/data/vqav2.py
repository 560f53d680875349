"""VQAv2 in its official format (visualqa.org):

- questions, e.g. `v2_OpenEnded_mscoco_val2014_questions.json`:
  {"data_subtype": "val2014", "questions": [{"image_id": 42, "question": "...", "question_id": 420}, ...]}
- annotations (absent for test-dev/test), e.g. `v2_mscoco_val2014_annotations.json`:
  {"annotations": [{"question_id": 420, "image_id": 42, "answers": [{"answer": "...", "answer_confidence":
   "yes", "answer_id": 1}, ... 10 ...], "multiple_choice_answer": "...", "answer_type": "...", "question_type": "..."}]}
- COCO images named `COCO_<subset>_<image_id:012d>.jpg`, in `image_root` or in `image_root/<subset>`.

The subset comes from the questions file's "data_subtype" unless given; test-dev2015 questions use
the test2015 images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlpeft.data.images import check_images_exist
from vlpeft.data.records import VQAExample, require_keys
from vlpeft.errors import UserError
from vlpeft.io import read_json

_IMAGE_SUBSET = {"test-dev2015": "test2015"}  # question subsets whose images live under another name


def vqav2_image_path(image_root: str | os.PathLike, subset: str, image_id: int) -> Path:
    """Where a COCO image is: `image_root/<subset>/` when that folder exists, else `image_root/`."""
    image_root = Path(image_root)
    name = f"COCO_{subset}_{int(image_id):012d}.jpg"
    folder = image_root / subset if (image_root / subset).is_dir() else image_root
    return folder / name


def load_vqav2(
    questions_path: str | os.PathLike,
    image_root: str | os.PathLike,
    annotations_path: str | os.PathLike | None = None,
    subset: str | None = None,
    check_images: bool = True,
) -> list[VQAExample]:
    """One VQAExample per question, in file order, with all 10 human answers (empty without annotations)."""
    questions_path = Path(questions_path)
    qdata = read_json(questions_path, "VQAv2 questions file")
    questions = _list_under(qdata, "questions", questions_path)
    if subset is None:
        subset = qdata.get("data_subtype")
        if not isinstance(subset, str) or not subset:
            raise UserError(f"{questions_path}: no 'data_subtype' to name the image subset; give it (e.g. val2014)")
    image_subset = _IMAGE_SUBSET.get(subset, subset)

    annotations: dict[int, dict[str, Any]] | None = None
    if annotations_path is not None:
        annotations_path = Path(annotations_path)
        adata = read_json(annotations_path, "VQAv2 annotations file")
        annotations = {}
        for k, ann in enumerate(_list_under(adata, "annotations", annotations_path)):
            require_keys(ann, ("question_id", "image_id", "answers"), f"annotations[{k}]", annotations_path)
            annotations[ann["question_id"]] = ann

    folder = vqav2_image_path(image_root, image_subset, 0).parent
    examples, seen = [], {}
    for k, q in enumerate(questions):
        require_keys(q, ("image_id", "question", "question_id"), f"questions[{k}]", questions_path)
        if q["question_id"] in seen:
            raise UserError(f"{questions_path}: questions[{k}]: question_id {q['question_id']} appears twice "
                            f"(also questions[{seen[q['question_id']]}])")
        seen[q["question_id"]] = k
        if not isinstance(q["question"], str) or not q["question"].strip():
            raise UserError(f"{questions_path}: questions[{k}] (question_id {q['question_id']}): empty question")
        answers: tuple[str, ...] = ()
        question_type = answer_type = ""
        if annotations is not None:
            ann = annotations.get(q["question_id"])
            if ann is None:
                raise UserError(f"question {q['question_id']} has no answers in {annotations_path}")
            if ann["image_id"] != q["image_id"]:
                raise UserError(
                    f"{annotations_path}: question {q['question_id']} is about image {ann['image_id']} here "
                    f"but image {q['image_id']} in {questions_path}"
                )
            answers = tuple(_answer_text(a, q["question_id"], annotations_path) for a in ann["answers"])
            if not answers:
                raise UserError(f"{annotations_path}: question {q['question_id']} has an empty 'answers' list")
            question_type = str(ann.get("question_type", ""))
            answer_type = str(ann.get("answer_type", ""))
        examples.append(
            VQAExample(
                question_id=str(q["question_id"]),
                image_id=str(q["image_id"]),
                image_path=str(folder / f"COCO_{image_subset}_{int(q['image_id']):012d}.jpg"),
                question=q["question"],
                answers=answers,
                question_type=question_type,
                answer_type=answer_type,
            )
        )
    if check_images:
        check_images_exist(sorted({e.image_path for e in examples}), questions_path)
    return examples


def _list_under(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or key not in data:
        raise UserError(f"{path}: expected key '{key}'")
    items = data[key]
    if not isinstance(items, list):
        raise UserError(f"{path}: '{key}' must be a list, found {type(items).__name__}")
    if not items:
        raise UserError(f"{path}: '{key}' is empty")
    return items


def _answer_text(answer: Any, question_id: Any, path: Path) -> str:
    if isinstance(answer, dict) and isinstance(answer.get("answer"), str):
        return answer["answer"]
    raise UserError(f"{path}: question {question_id} has an answer without 'answer' text")
