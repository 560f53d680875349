"""Synthetic scenes: the pre-training data of the tiny BLIP, and a downstream task consistent with it.

A scene is a 64x64 image with 1-4 non-overlapping coloured shapes on a dark, slightly noisy
background, described by several caption phrasings and a set of question/answer pairs whose answers
follow from the objects (colour, shape, count, existence, spatial relation).

Determinism: scene `i` of split `s` is drawn from its own generator seeded by (seed, s, i), so
- the same (seed, split, i) always gives the same objects, texts and pixels, on any machine;
- scene i does not depend on how many scenes are asked for (a bigger set extends a smaller one);
- the splits are separate random streams ("train", "val", "test"), never the same draw.

The palette is deliberately not easy-VQA's: scenes have purple, orange, white, pink, squares,
diamonds, stars and crosses, which easy-VQA lacks, and lack easy-VQA's black, gray, teal, brown and
rectangle, so easy-VQA is a downstream task *inconsistent* with this pre-training (Tian et al.).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from vlpeft.errors import UserError, did_you_mean

SCENES_VERSION = 1  # bump when anything below changes what a (seed, split, index) produces
SCENE_IMAGE_SIZE = 64
SCENE_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
SCENE_COLOR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "white": (240, 240, 240),
    "pink": (245, 130, 190),
}
SCENE_COLORS = tuple(SCENE_COLOR_RGB)
SCENE_SIZES = ("small", "large")
SIZE_RADII = {"small": (5, 7), "large": (10, 12)}  # half-extent in pixels, inclusive range
MAX_OBJECTS = 4
SPLITS = {"train": 0, "val": 1, "test": 2}
QA_TYPES = ("color", "shape", "count", "existence", "spatial")

COLOR_JITTER = 15  # +- per channel on an object's colour
BACKGROUND_RANGE = (25, 95)  # per-channel base colour of the background: dark, so every palette colour shows
BACKGROUND_GRADIENT = 12  # max change of the background across the image, per axis
NOISE_STD = 3.0  # Gaussian pixel noise over the whole image
GAP = 2  # centres differ by >= r1 + r2 + GAP along x or y, so bounding boxes never touch
SPATIAL_MARGIN = 6  # centres closer than this along an axis are neither left/right (or above/below)

NUMBER_WORDS = ("zero", "one", "two", "three", "four")


@dataclass(frozen=True)
class SceneObject:
    """One shape: its names, and where it is drawn (centre x, y and half-extent in pixels)."""

    shape: str
    color: str
    size: str
    x: int
    y: int
    radius: int
    rgb: tuple[int, int, int]

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    qtype: str


@dataclass(frozen=True)
class Scene:
    """A synthetic scene. The image is rendered on access from the fields."""

    scene_id: str
    split: str
    index: int
    seed: int
    objects: tuple[SceneObject, ...]
    captions: tuple[str, ...]
    qa: tuple[QA, ...]
    background: tuple[int, int, int]
    gradient: tuple[int, int]  # background change across the image along x and along y

    @property
    def image(self) -> np.ndarray:
        """uint8 array (64, 64, 3)."""
        return render_scene(self)


# ---------------------------------------------------------------------------------------------
# Generation


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, split, scene, stream); stream 0 = layout+texts, 1 = pixels."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index, stream]))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        hint = did_you_mean(split, SPLITS)
        raise UserError(f"synthetic scenes: unknown split {split!r}{hint}; use one of {list(SPLITS)}")


def generate_scenes(n: int, seed: int, split: str = "train", start: int = 0) -> list[Scene]:
    """Scenes `start .. start+n-1` of `split` under `seed`; each depends only on (seed, split, index)."""
    _check_split(split)
    if n < 0 or start < 0 or seed < 0:
        raise UserError(f"synthetic scenes: n, start and seed must be >= 0 (got n={n}, start={start}, seed={seed})")
    return [generate_scene(i, seed, split) for i in range(start, start + n)]


def generate_scene(index: int, seed: int, split: str = "train") -> Scene:
    _check_split(split)
    rng = _rng(seed, split, index, 0)
    objects = _sample_objects(rng)
    background = tuple(int(v) for v in rng.integers(BACKGROUND_RANGE[0], BACKGROUND_RANGE[1] + 1, size=3))
    gradient = tuple(int(v) for v in rng.integers(-BACKGROUND_GRADIENT, BACKGROUND_GRADIENT + 1, size=2))
    return Scene(
        scene_id=f"{split}-{index:06d}",
        split=split,
        index=index,
        seed=seed,
        objects=objects,
        captions=_captions(objects, rng),
        qa=_questions(objects, rng),
        background=background,  # type: ignore[arg-type]
        gradient=gradient,  # type: ignore[arg-type]
    )


def _sample_objects(rng: np.random.Generator) -> tuple[SceneObject, ...]:
    """1-4 objects with distinct (colour, shape), placed so that no two bounding boxes touch."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:
        kind = (SCENE_COLORS[int(rng.integers(len(SCENE_COLORS)))], SCENE_SHAPES[int(rng.integers(len(SCENE_SHAPES)))])
        if kind not in kinds:
            kinds.append(kind)
    sizes = [SCENE_SIZES[int(rng.integers(2))] for _ in range(n)]
    radii = [int(rng.integers(SIZE_RADII[s][0], SIZE_RADII[s][1] + 1)) for s in sizes]
    for _attempt in range(1000):  # rejection sampling; 4 large objects fit easily in 64x64
        centres: list[tuple[int, int]] = []
        for r in radii:
            candidates = rng.integers(r + 1, SCENE_IMAGE_SIZE - r - 1, size=(50, 2)).tolist()  # (50, 2) x, y
            fits = (c for c in candidates if all(_boxes_apart(*c, r, *o, ro) for o, ro in zip(centres, radii)))
            fit = next(fits, None)
            if fit is None:
                break
            centres.append(tuple(fit))
        if len(centres) == n:
            break
    else:  # pragma: no cover - would need astronomically bad luck
        raise RuntimeError("synthetic scenes: could not place objects")
    objects = []
    for (color, shape), size, r, (x, y) in zip(kinds, sizes, radii, centres):
        jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3).tolist()
        rgb = tuple(min(255, max(0, c + j)) for c, j in zip(SCENE_COLOR_RGB[color], jitter))
        objects.append(SceneObject(shape, color, size, x, y, r, rgb))  # type: ignore[arg-type]
    return tuple(objects)


def _boxes_apart(x: int, y: int, r: int, cx: int, cy: int, cr: int) -> bool:
    return abs(x - cx) >= r + cr + GAP or abs(y - cy) >= r + cr + GAP


# ---------------------------------------------------------------------------------------------
# Rendering


def render_scene(scene: Scene) -> np.ndarray:
    """Draw the scene: background with a linear gradient, the shapes, then pixel noise. -> uint8 (S, S, 3)."""
    s = SCENE_IMAGE_SIZE
    ramp = np.linspace(-0.5, 0.5, s, dtype=np.float32)  # (S,)
    gx, gy = scene.gradient
    base = np.asarray(scene.background, dtype=np.float32)  # (3,)
    shade = ramp[None, :] * gx + ramp[:, None] * gy  # (S, S): row = y, column = x
    bg = np.clip(base[None, None, :] + shade[:, :, None], 0, 255).astype(np.uint8)  # (S, S, 3)
    image = Image.fromarray(bg)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj)
    pixels = np.asarray(image).astype(np.float32)  # (S, S, 3)
    noise = _rng(scene.seed, scene.split, scene.index, 1).normal(0.0, NOISE_STD, size=pixels.shape)
    return np.clip(np.rint(pixels + noise), 0, 255).astype(np.uint8)  # (S, S, 3)


def _draw_shape(draw: ImageDraw.ImageDraw, o: SceneObject) -> None:
    x, y, r, fill = o.x, o.y, o.radius, o.rgb
    if o.shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    elif o.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    elif o.shape == "star":  # five points, inner radius 0.45 of the outer one
        points = []
        for k in range(10):
            angle = -np.pi / 2 + k * np.pi / 5
            rad = r if k % 2 == 0 else 0.45 * r
            points.append((x + rad * np.cos(angle), y + rad * np.sin(angle)))
        draw.polygon(points, fill=fill)
    elif o.shape == "cross":  # a plus sign, arms 0.7 r wide
        w = max(2, round(0.35 * r))
        draw.rectangle([x - r, y - w, x + r, y + w], fill=fill)
        draw.rectangle([x - w, y - r, x + w, y + r], fill=fill)
    else:  # pragma: no cover
        raise ValueError(f"unknown shape {o.shape!r}")


# ---------------------------------------------------------------------------------------------
# Texts


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(o: SceneObject, with_size: bool) -> str:
    """Noun phrase with its article: 'a large red circle', 'an orange star'."""
    words = f"{o.size} {o.color} {o.shape}" if with_size else f"{o.color} {o.shape}"
    return f"{_article(words)} {words}"


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _captions(objects: tuple[SceneObject, ...], rng: np.random.Generator) -> tuple[str, ...]:
    """Four distinct phrasings; each names every object by colour and shape."""
    left_to_right = sorted(objects, key=lambda o: (o.x, o.y))
    shuffled = [objects[i] for i in rng.permutation(len(objects))]
    n = len(objects)
    captions = [
        _join([_np(o, True) for o in shuffled]),
        "there is " + _join([_np(o, True) for o in shuffled[::-1]]),
        f"{NUMBER_WORDS[n]} shape{'s' if n > 1 else ''}: " + _join([_np(o, False) for o in left_to_right]),
    ]
    if n == 1:
        o = objects[0]
        vertical = "top" if o.y < SCENE_IMAGE_SIZE / 2 else "bottom"
        horizontal = "left" if o.x < SCENE_IMAGE_SIZE / 2 else "right"
        captions.append(f"{_np(o, True)} in the {vertical} {horizontal}")
    else:
        captions.append("from left to right: " + _join([_np(o, False) for o in left_to_right]))
    return tuple(captions)


def _relation(a: SceneObject, b: SceneObject, relation: str) -> bool | None:
    """Is a `relation` of b? None when the centres are too close along that axis to say."""
    d = {"left": b.x - a.x, "right": a.x - b.x, "above": b.y - a.y, "below": a.y - b.y}[relation]
    if abs(d) < SPATIAL_MARGIN:
        return None
    return d > 0


_RELATION_PHRASE = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


def _questions(objects: tuple[SceneObject, ...], rng: np.random.Generator) -> tuple[QA, ...]:
    """Up to 2 questions of each type whose answers follow unambiguously from the objects."""

    def pick(candidates: list, k: int) -> list:
        if len(candidates) <= k:
            return candidates
        return [candidates[i] for i in sorted(rng.choice(len(candidates), size=k, replace=False))]

    shapes = [o.shape for o in objects]
    colors = [o.color for o in objects]
    qa: list[QA] = []

    # colour: of a shape that appears once
    unique_shapes = [o for o in objects if shapes.count(o.shape) == 1]
    qa += pick([QA(f"what color is the {o.shape}?", o.color, "color") for o in unique_shapes], 2)
    # shape: of a colour that appears once
    unique_colors = [o for o in objects if colors.count(o.color) == 1]
    qa += pick([QA(f"what shape is the {o.color} object?", o.shape, "shape") for o in unique_colors], 2)
    # count: all objects, and one colour or shape (present or not)
    qa.append(QA("how many shapes are there?", str(len(objects)), "count"))
    if rng.random() < 0.5:
        c = SCENE_COLORS[int(rng.integers(len(SCENE_COLORS)))]
        qa.append(QA(f"how many {c} shapes are there?", str(colors.count(c)), "count"))
    else:
        s = SCENE_SHAPES[int(rng.integers(len(SCENE_SHAPES)))]
        qa.append(QA(f"how many {_plural(s)} are there?", str(shapes.count(s)), "count"))
    # existence: one present object, one absent one sharing its colour or its shape (no shortcut)
    present = objects[int(rng.integers(len(objects)))]
    qa.append(QA(f"is there {_np(present, False)}?", "yes", "existence"))
    kinds = {(o.color, o.shape) for o in objects}
    near_misses = sorted(
        {(present.color, s) for s in SCENE_SHAPES} | {(c, present.shape) for c in SCENE_COLORS}
    )
    absent = [k for k in near_misses if k not in kinds]
    color, shape = absent[int(rng.integers(len(absent)))]
    qa.append(QA(f"is there {_article(color)} {color} {shape}?", "no", "existence"))
    # spatial: a yes/no relation between two objects, and "what shape is <rel> the X?" when one answer fits
    # (candidates are kept as tuples and only the picked ones become text: this loop is the hot spot)
    yes_no: list[tuple[SceneObject, str, SceneObject, bool]] = []
    which: list[tuple[str, SceneObject, SceneObject]] = []
    for ref in objects:
        others = [o for o in objects if o is not ref]
        for rel in ("left", "right", "above", "below"):
            verdicts = [_relation(o, ref, rel) for o in others]
            yes_no += [(o, rel, ref, v) for o, v in zip(others, verdicts) if v is not None]
            if verdicts and None not in verdicts and verdicts.count(True) == 1:
                which.append((rel, ref, others[verdicts.index(True)]))
    for a, rel, b, holds in pick(yes_no, 1):
        qa.append(QA(f"is the {a.name} {_RELATION_PHRASE[rel]} the {b.name}?", "yes" if holds else "no", "spatial"))
    for rel, ref, hit in pick(which, 1):
        qa.append(QA(f"what shape is {_RELATION_PHRASE[rel]} the {ref.name}?", hit.shape, "spatial"))
    return tuple(qa)


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")


# ---------------------------------------------------------------------------------------------
# Recipe (recorded in pretrain.json) and caption scoring


def scenes_recipe(seed: int, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Everything that determines the scenes, for recording beside a checkpoint or a result."""
    return {
        "generator": "vlpeft.data.scenes",
        "version": SCENES_VERSION,
        "seed": seed,
        "splits": dict(sizes or {}),
        "split_streams": dict(SPLITS),
        "image_size": SCENE_IMAGE_SIZE,
        "colors": {k: list(v) for k, v in SCENE_COLOR_RGB.items()},
        "shapes": list(SCENE_SHAPES),
        "sizes": {k: list(v) for k, v in SIZE_RADII.items()},
        "objects_per_scene": [1, MAX_OBJECTS],
        "color_jitter": COLOR_JITTER,
        "background_range": list(BACKGROUND_RANGE),
        "background_gradient": BACKGROUND_GRADIENT,
        "noise_std": NOISE_STD,
        "spatial_margin": SPATIAL_MARGIN,
        "qa_types": list(QA_TYPES),
        "captions_per_scene": 4,
    }


# Words the parser knows: scene palette plus easy-VQA's, so it also scores captions of easy-VQA images.
_EXTRA_COLORS = ("black", "gray", "teal", "brown")
_COLOR_ALIASES = {"grey": "gray"}
_EXTRA_SHAPES = ("rectangle",)
_SIZE_WORDS = {"small", "large", "big", "little", "tiny", "huge"}


def _shape_forms() -> dict[str, str]:
    forms = {}
    for s in SCENE_SHAPES + _EXTRA_SHAPES:
        forms[s] = s
        forms[_plural(s)] = s
    return forms


_SHAPE_FORMS = _shape_forms()
_COLOR_WORDS = {c: c for c in SCENE_COLORS + _EXTRA_COLORS} | _COLOR_ALIASES


def caption_objects(caption: str) -> frozenset[tuple[str, str]]:
    """The (colour, shape) pairs a caption names: 'a large red circle and two blue stars' ->
    {('red', 'circle'), ('blue', 'star')}. A shape word takes the colour word just before it
    (size words may sit between); a shape without a colour, or a colour without a shape, names no pair."""
    words = re.findall(r"[a-z]+", caption.lower())
    found = set()
    for i, w in enumerate(words):
        shape = _SHAPE_FORMS.get(w)
        if shape is None:
            continue
        j = i - 1
        while j >= 0 and words[j] in _SIZE_WORDS:
            j -= 1
        if j >= 0 and words[j] in _COLOR_WORDS:
            found.add((_COLOR_WORDS[words[j]], shape))
    return frozenset(found)


def scene_objects(scene: Scene) -> frozenset[tuple[str, str]]:
    return frozenset((o.color, o.shape) for o in scene.objects)


@dataclass(frozen=True)
class ObjectScores:
    """Micro-averaged object-level scores of generated captions against the true objects."""

    precision: float  # named pairs that are in the image / all named pairs (0 when none named)
    recall: float  # true objects named / all true objects
    f1: float
    n_predicted: int
    n_true: int


def set_precision_recall(
    predicted: Iterable[Iterable[tuple[str, str]]], true: Iterable[Iterable[tuple[str, str]]]
) -> ObjectScores:
    """Micro precision/recall of predicted (colour, shape) sets against true sets, example by example."""
    tp = n_pred = n_true = 0
    predicted, true = list(predicted), list(true)
    if len(predicted) != len(true):
        raise ValueError(f"{len(predicted)} predictions for {len(true)} examples")
    for p, t in zip(predicted, true):
        p, t = set(p), set(t)
        tp += len(p & t)
        n_pred += len(p)
        n_true += len(t)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ObjectScores(precision, recall, f1, n_pred, n_true)


def object_precision_recall(pred_captions: Sequence[str], scenes: Sequence[Scene]) -> ObjectScores:
    """Score one generated caption per scene by the objects it names."""
    return set_precision_recall([caption_objects(c) for c in pred_captions], [scene_objects(s) for s in scenes])
