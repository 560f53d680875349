"""easy-VQA from the installed package: exact sizes, and label-derived objects that match the pixels."""

import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlpeft.data.easyvqa import (
    EASY_VQA_COLORS,
    easy_vqa_answers,
    easy_vqa_captions,
    easy_vqa_image_paths,
    easy_vqa_objects,
    load_easy_vqa,
    object_captions,
)
from vlpeft.data.scenes import caption_objects
from vlpeft.errors import UserError

# The RGB value easy-VQA's generator paints each colour with (read off its images).
EASY_VQA_RGB = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
    "teal": (0, 128, 128),
    "brown": (165, 42, 42),
}


@pytest.fixture(scope="module")
def test_objects():
    return easy_vqa_objects("test")


def test_exact_sizes():
    train, test = load_easy_vqa("train"), load_easy_vqa("test")
    assert (len(train), len(test)) == (38575, 9673)
    assert len(easy_vqa_image_paths("train")) == 4000 and len(easy_vqa_image_paths("test")) == 1000
    assert len({e.image_id for e in train}) == 4000 and len({e.image_id for e in test}) == 1000
    answers = easy_vqa_answers()
    assert len(answers) == 13 and {"yes", "no", "teal", "rectangle"} <= set(answers)
    # the package README's stats
    assert sum(e.answers[0] in ("yes", "no") for e in train) == 28407
    assert sum(e.question_type == "yes/no" for e in test) == 7136
    assert all(len(e.answers) == 1 and e.answers[0] in answers for e in train + test)
    assert len({e.question_id for e in train}) == len(train)


def test_records_point_at_real_images():
    test = load_easy_vqa("test")
    assert all(os.path.isfile(p) for p in {e.image_path for e in test})
    first = test[0]
    assert first.question == "what is the red shape?" and first.answers == ("triangle",) and first.image_id == "0"
    assert Image.open(first.image_path).size == (64, 64)


def test_unknown_split():
    with pytest.raises(UserError, match='did you mean "train"'):
        load_easy_vqa("trains")


def _foreground(path):
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)  # (64, 64, 3)
    background = a[0, 0]
    mask = np.abs(a - background).sum(-1) > 60  # (64, 64)
    colors = Counter(map(tuple, a[mask]))
    return mask, colors.most_common(1)[0][0]


def test_derived_objects_agree_with_the_pixels(test_objects):
    paths = easy_vqa_image_paths("test")
    known = Counter()
    for image_id, (color, shape) in test_objects.items():
        mask, rgb = _foreground(paths[image_id])
        if color is not None:
            assert rgb == EASY_VQA_RGB[color], image_id
            known["color"] += 1
        if shape is not None:
            ys, xs = np.nonzero(mask)
            fill = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))  # share of the bounding box covered
            expected = "triangle" if fill < 0.71 else "circle" if fill < 0.92 else "rectangle"
            assert shape == expected, (image_id, fill)
            known["shape"] += 1
    assert known["color"] > 900 and known["shape"] > 900


def test_captions_name_the_derived_object(test_objects):
    captions = easy_vqa_captions("test")
    assert len(captions) == sum(c is not None or s is not None for c, s in test_objects.values())
    for example in captions:
        color, shape = test_objects[example.image_id]
        assert len(set(example.captions)) == len(example.captions) >= 2
        assert all((color in c if color else True) and (shape in c if shape else True) for c in example.captions)
        if color and shape:
            assert all(caption_objects(c) == {(color, shape)} for c in example.captions)
    assert object_captions(None, None) == ()
    assert object_captions("teal", None) == ("a teal shape", "there is a teal shape in the image")
    assert set(EASY_VQA_COLORS) >= {c for c, _ in test_objects.values() if c}
