"""easy-VQA (github.com/vzhou842/easy-VQA): a real, small VQA dataset shipped inside the `easy-vqa`
pip package, so it needs no download.

4,000 train / 1,000 test 64x64 PNG images, each with one shape on a light background;
38,575 / 9,673 questions; 13 answers (8 colours, 3 shapes, yes, no). Each question comes with a
single answer. The package has no validation split; carve one from train if needed.

Captions are derived from the labels only: what the questions and answers of an image say about its
shape's colour and kind (nothing about size or position, which the package does not record).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from vlpeft.data.records import CaptionExample, VQAExample
from vlpeft.errors import UserError, did_you_mean

EASY_VQA_COLORS = ("red", "green", "blue", "black", "gray", "yellow", "teal", "brown")
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")
EASY_VQA_SPLITS = ("train", "test")


def _package():
    try:
        import easy_vqa
    except ImportError as e:
        raise UserError("easy-VQA: the `easy-vqa` package is not installed (pip install easy-vqa==1.0)") from e
    return easy_vqa


def _check_split(split: str) -> None:
    if split not in EASY_VQA_SPLITS:
        raise UserError(
            f"easy-VQA: unknown split {split!r}{did_you_mean(split, EASY_VQA_SPLITS)}; it has {list(EASY_VQA_SPLITS)}"
        )


def easy_vqa_answers() -> tuple[str, ...]:
    """The 13 answers, in the package's order."""
    return tuple(a for a in _package().get_answers() if a)


def easy_vqa_image_paths(split: str) -> dict[str, str]:
    """image_id -> PNG path, sorted by numeric id."""
    _check_split(split)
    ev = _package()
    paths = ev.get_train_image_paths() if split == "train" else ev.get_test_image_paths()
    return {str(i): str(Path(paths[i])) for i in sorted(paths)}


def question_type(question: str, answer: str) -> str:
    """'yes/no', 'color' or 'shape', from the answer (every easy-VQA question has one of these kinds)."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "color" if answer in EASY_VQA_COLORS else "shape"


def load_easy_vqa(split: str) -> list[VQAExample]:
    """All questions of `split`, in the package's order; question ids are '<split>-<position>'."""
    _check_split(split)
    ev = _package()
    texts, answers, image_ids = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    paths = easy_vqa_image_paths(split)
    examples = []
    for k, (q, a, i) in enumerate(zip(texts, answers, image_ids)):
        image_id = str(i)
        if image_id not in paths:
            raise UserError(f"easy-VQA {split}: question {k} refers to image {image_id}, which the package lacks")
        examples.append(
            VQAExample(
                question_id=f"{split}-{k}",
                image_id=image_id,
                image_path=paths[image_id],
                question=q,
                answers=(a,),
                question_type=question_type(q, a),
                answer_type="yes/no" if a in ("yes", "no") else "other",
            )
        )
    return examples


_COLOR_RE = "|".join(EASY_VQA_COLORS)
_SHAPE_RE = "|".join(EASY_VQA_SHAPES)


def _facts(question: str, answer: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What one question/answer pair says: ({'color': {...}, 'shape': {...}} present, same absent)."""
    present: dict[str, set[str]] = {"color": set(), "shape": set()}
    absent: dict[str, set[str]] = {"color": set(), "shape": set()}
    if answer in ("yes", "no"):
        # "is there (not|no) a <word> ..." / "does the image (not) contain ..." / "is (no) <word> present?"
        words = re.findall(r"[a-z]+", question)
        negated = "not" in words or "no" in words
        holds = (answer == "yes") != negated
        for w in words:
            kind = "color" if w in EASY_VQA_COLORS else "shape" if w in EASY_VQA_SHAPES else None
            if kind:
                (present if holds else absent)[kind].add(w)
        return present, absent
    kind = "color" if answer in EASY_VQA_COLORS else "shape"
    present[kind].add(answer)
    # the question may name the other attribute: "what is the blue shape?", "what color is the circle?"
    for m in re.finditer(rf"\b({_COLOR_RE})\b", question):
        present["color"].add(m.group(1))
    for m in re.finditer(rf"\b({_SHAPE_RE})\b", question):
        present["shape"].add(m.group(1))
    return present, absent


def easy_vqa_objects(split: str) -> dict[str, tuple[str | None, str | None]]:
    """image_id -> (colour, shape) as far as its questions tell; None where they do not.

    Stated facts come first; an attribute no question states is inferred only when the questions
    rule out every other value (e.g. "is there a circle?" no, "is there a triangle?" no -> rectangle)."""
    _check_split(split)
    ev = _package()
    texts, answers, image_ids = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    present = defaultdict(lambda: {"color": set(), "shape": set()})
    absent = defaultdict(lambda: {"color": set(), "shape": set()})
    for q, a, i in zip(texts, answers, image_ids):
        p, n = _facts(q, a)
        for kind in ("color", "shape"):
            present[str(i)][kind] |= p[kind]
            absent[str(i)][kind] |= n[kind]
    objects: dict[str, tuple[str | None, str | None]] = {}
    for image_id in easy_vqa_image_paths(split):
        values = []
        for kind, palette in (("color", EASY_VQA_COLORS), ("shape", EASY_VQA_SHAPES)):
            stated = present[image_id][kind]
            if len(stated) > 1 or stated & absent[image_id][kind]:
                raise UserError(
                    f"easy-VQA {split}: image {image_id}'s questions contradict each other about its {kind}"
                )
            remaining = [v for v in palette if v not in absent[image_id][kind]]
            values.append(next(iter(stated)) if stated else remaining[0] if len(remaining) == 1 else None)
        objects[image_id] = (values[0], values[1])
    return objects


def object_captions(color: str | None, shape: str | None) -> tuple[str, ...]:
    """Caption phrasings for one easy-VQA shape; fewer words when an attribute is unknown."""
    if color and shape:
        return (f"a {color} {shape}", f"there is a {color} {shape} in the image", f"the image shows a {color} {shape}")
    if color:
        return (f"a {color} shape", f"there is a {color} shape in the image")
    if shape:
        return (f"a {shape}", f"there is a {shape} in the image")
    return ()


def easy_vqa_captions(split: str) -> list[CaptionExample]:
    """Label-derived captions for every image of `split` whose colour or shape the questions reveal."""
    paths = easy_vqa_image_paths(split)
    examples = []
    for image_id, (color, shape) in easy_vqa_objects(split).items():
        captions = object_captions(color, shape)
        if captions:
            examples.append(CaptionExample(image_id=image_id, image_path=paths[image_id], captions=captions))
    return examples
