"""Synthetic scenes: determinism, disjoint splits, truthful texts, rendering, caption scoring."""

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from vlpeft.data.easyvqa import EASY_VQA_COLORS, EASY_VQA_SHAPES
from vlpeft.data.scenes import (
    SCENE_COLORS,
    SCENE_IMAGE_SIZE,
    SCENE_SHAPES,
    SPATIAL_MARGIN,
    caption_objects,
    generate_scene,
    generate_scenes,
    object_precision_recall,
    scene_objects,
    scenes_recipe,
)
from vlpeft.errors import UserError

N = 300


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(N, seed=7, split="train")


def scene_digest(scene) -> str:
    h = hashlib.sha256(scene.image.tobytes())
    h.update(json.dumps([scene.captions, [(q.question, q.answer, q.qtype) for q in scene.qa]]).encode())
    return h.hexdigest()


def test_same_seed_same_bytes_and_texts():
    a, b = generate_scenes(25, seed=3), generate_scenes(25, seed=3)
    assert [scene_digest(s) for s in a] == [scene_digest(s) for s in b]
    assert a[0].image.shape == (SCENE_IMAGE_SIZE, SCENE_IMAGE_SIZE, 3) and a[0].image.dtype == np.uint8
    c = generate_scenes(25, seed=4)
    assert sum(scene_digest(x) == scene_digest(y) for x, y in zip(a, c)) == 0


def test_same_across_processes():
    """No hidden dependence on Python's per-process hash seed."""
    code = (
        "import hashlib; from vlpeft.data.scenes import generate_scenes;"
        "s = generate_scenes(5, seed=11, split='val');"
        "h = hashlib.sha256(b''.join(x.image.tobytes() + repr((x.captions, x.qa)).encode() for x in s));"
        "print(h.hexdigest())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_scene_i_does_not_depend_on_n():
    small, big = generate_scenes(4, seed=5), generate_scenes(12, seed=5)
    assert [scene_digest(s) for s in small] == [scene_digest(s) for s in big[:4]]
    assert [scene_digest(s) for s in generate_scenes(3, seed=5, start=6)] == [scene_digest(s) for s in big[6:9]]
    assert scene_digest(generate_scene(9, seed=5)) == scene_digest(big[9])


def test_splits_are_disjoint_and_deterministic():
    digests = {
        split: [scene_digest(s) for s in generate_scenes(150, seed=0, split=split)]
        for split in ("train", "val", "test")
    }
    assert all(len(set(d)) == 150 for d in digests.values())
    assert not set(digests["train"]) & set(digests["val"])
    assert not set(digests["train"]) & set(digests["test"])
    assert not set(digests["val"]) & set(digests["test"])
    assert digests["val"] == [scene_digest(s) for s in generate_scenes(150, seed=0, split="val")]
    assert generate_scenes(1, 0, "test")[0].scene_id == "test-000000"


def test_unknown_split_is_a_user_error():
    with pytest.raises(UserError, match='did you mean "train"'):
        generate_scenes(3, seed=0, split="trian")


def test_objects_are_valid_and_apart(scenes):
    counts = Counter(len(s.objects) for s in scenes)
    assert set(counts) == {1, 2, 3, 4}
    for s in scenes:
        kinds = [(o.color, o.shape) for o in s.objects]
        assert len(set(kinds)) == len(kinds)  # (colour, shape) names each object uniquely
        for o in s.objects:
            assert o.color in SCENE_COLORS and o.shape in SCENE_SHAPES and o.size in ("small", "large")
            assert 0 <= o.x - o.radius and o.x + o.radius < SCENE_IMAGE_SIZE
            assert 0 <= o.y - o.radius and o.y + o.radius < SCENE_IMAGE_SIZE
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1 :]:
                gap = a.radius + b.radius
                assert abs(a.x - b.x) > gap or abs(a.y - b.y) > gap


def test_rendered_pixels_show_each_object_and_a_dark_background(scenes):
    for s in scenes[:100]:
        image = s.image.astype(int)  # (64, 64, 3)
        for o in s.objects:  # every shape covers its own centre
            assert np.abs(image[o.y, o.x] - np.array(o.rgb)).max() <= 15, (s.scene_id, o)
        free = np.ones(image.shape[:2], bool)
        for o in s.objects:
            free[max(0, o.y - o.radius - 1) : o.y + o.radius + 2, max(0, o.x - o.radius - 1) : o.x + o.radius + 2] = (
                False
            )
        background = image[free]  # (P, 3)
        assert np.abs(background - np.array(s.background)).max() <= 12 // 2 + 3 * 5 + 1
    backgrounds = {s.background for s in scenes}
    assert len(backgrounds) > len(scenes) // 2  # backgrounds vary scene to scene


RELATIONS = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}


def _delta(a, b, relation):
    return {"left": b.x - a.x, "right": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[relation]


def _find(scene, color, shape):
    (obj,) = [o for o in scene.objects if o.color == color and o.shape == shape]
    return obj


def check_answer(scene, qa):
    """Re-derive the answer from the objects, independently of the generator's code."""
    q, objs = qa.question, scene.objects
    if m := re.fullmatch(r"what color is the (\w+)\?", q):
        (obj,) = [o for o in objs if o.shape == m[1]]
        return obj.color
    if m := re.fullmatch(r"what shape is the (\w+) object\?", q):
        (obj,) = [o for o in objs if o.color == m[1]]
        return obj.shape
    if q == "how many shapes are there?":
        return str(len(objs))
    if m := re.fullmatch(r"how many (\w+) shapes are there\?", q):
        return str(sum(o.color == m[1] for o in objs))
    if m := re.fullmatch(r"how many (\w+) are there\?", q):
        (shape,) = [x for x in SCENE_SHAPES if m[1] in (x + "s", x + "es")]
        return str(sum(o.shape == shape for o in objs))
    if m := re.fullmatch(r"is there an? (\w+) (\w+)\?", q):
        return "yes" if any(o.color == m[1] and o.shape == m[2] for o in objs) else "no"
    rel = "|".join(RELATIONS)
    if m := re.fullmatch(rf"is the (\w+) (\w+) ({rel}) the (\w+) (\w+)\?", q):
        d = _delta(_find(scene, m[1], m[2]), _find(scene, m[4], m[5]), RELATIONS[m[3]])
        assert abs(d) >= SPATIAL_MARGIN, "ambiguous spatial question"
        return "yes" if d > 0 else "no"
    if m := re.fullmatch(rf"what shape is ({rel}) the (\w+) (\w+)\?", q):
        ref = _find(scene, m[2], m[3])
        deltas = [(_delta(o, ref, RELATIONS[m[1]]), o) for o in objs if o is not ref]
        assert all(abs(d) >= SPATIAL_MARGIN for d, _ in deltas), "ambiguous spatial question"
        (hit,) = [o for d, o in deltas if d > 0]
        return hit.shape
    raise AssertionError(f"unrecognised question: {q}")


def test_every_answer_follows_from_the_objects(scenes):
    types = Counter()
    answers = {"yes/no": Counter(), "existence": Counter()}
    for s in scenes:
        for qa in s.qa:
            assert check_answer(s, qa) == qa.answer, (s.scene_id, qa)
            types[qa.qtype] += 1
            if qa.qtype == "spatial" and qa.answer in ("yes", "no"):
                answers["yes/no"][qa.answer] += 1
            if qa.qtype == "existence":
                answers["existence"][qa.answer] += 1
    assert set(types) == {"color", "shape", "count", "existence", "spatial"}
    assert answers["existence"]["yes"] == answers["existence"]["no"] == N
    spatial = answers["yes/no"]
    assert 0.3 < spatial["yes"] / (spatial["yes"] + spatial["no"]) < 0.7
    assert sum(qa.question.startswith("what shape is") and qa.qtype == "spatial" for s in scenes for qa in s.qa) > 20


def test_captions_are_distinct_and_parse_back_to_the_objects(scenes):
    for s in scenes[:200]:
        assert len(set(s.captions)) == len(s.captions) >= 3
        for caption in s.captions:
            assert caption_objects(caption) == scene_objects(s), caption
    scores = object_precision_recall([s.captions[0] for s in scenes], scenes)
    assert scores.precision == scores.recall == scores.f1 == 1.0


def test_caption_parser_on_other_phrasings():
    assert caption_objects("Two grey rectangles and a large brown circle.") == {
        ("gray", "rectangle"),
        ("brown", "circle"),
    }
    assert caption_objects("a teal triangle in the image") == {("teal", "triangle")}
    assert caption_objects("a circle next to a red shape") == frozenset()
    assert caption_objects("a red small star, three tiny white crosses") == {("red", "star"), ("white", "cross")}


def test_object_precision_recall_counts_hits_and_misses():
    s = generate_scenes(40, seed=1)
    a = next(x for x in s if len(x.objects) == 2)
    b = next(x for x in s if len(x.objects) == 1)
    o1, o2 = a.objects
    wrong = next(c for c in SCENE_COLORS if (c, o1.shape) not in scene_objects(a))
    preds = [f"a {o1.color} {o1.shape} and a {wrong} {o1.shape}", f"a {b.objects[0].color} {b.objects[0].shape}"]
    scores = object_precision_recall(preds, [a, b])
    assert (scores.n_predicted, scores.n_true) == (3, 3)
    assert scores.precision == pytest.approx(2 / 3) and scores.recall == pytest.approx(2 / 3)
    assert object_precision_recall(["nothing here", "blank"], [a, b]).precision == 0.0


def test_palette_is_not_easy_vqas(scenes):
    missing_colors = set(EASY_VQA_COLORS) - set(SCENE_COLORS)
    missing_shapes = set(EASY_VQA_SHAPES) - set(SCENE_SHAPES)
    assert {"teal", "brown", "gray", "black"} <= missing_colors and "rectangle" in missing_shapes
    words = {
        w
        for s in scenes
        for t in s.captions + tuple(q.question + " " + q.answer for q in s.qa)
        for w in re.findall(r"\w+", t)
    }
    assert not words & (missing_colors | missing_shapes)


def test_recipe_records_what_determines_the_scenes():
    recipe = scenes_recipe(seed=9, sizes={"train": 100, "val": 10})
    assert json.loads(json.dumps(recipe)) == recipe
    assert recipe["seed"] == 9 and recipe["shapes"] == list(SCENE_SHAPES) and set(recipe["colors"]) == set(SCENE_COLORS)
    assert recipe["splits"] == {"train": 100, "val": 10}


def test_general_sentences_are_deterministic_and_cover_the_basic_words():
    from vlpeft.data.english import BASIC_ENGLISH, general_sentences

    a, b = general_sentences(3000, seed=0), general_sentences(3000, seed=0)
    assert a == b and a != general_sentences(3000, seed=1)
    words = {w for s in a for w in s.replace(",", " ").split()}
    for w in ("yes", "no", "rectangle", "teal", "black", "gray", "brown", "contain", "does", "color", "shape"):
        assert w in words, w
    assert {w.rstrip("s") for w in words} <= {w.rstrip("s") for w in BASIC_ENGLISH}  # nothing beyond the list
    assert not any(s.endswith("?") for s in a)  # statements, not questions about images
