"""Helpers every data source shares: splits carved by image with a seed, candidate answers, sizes.

No image is ever in two splits of a task: whenever vlpeft carves a split it carves *images*
(with all their captions or questions), from a seeded permutation of the image ids in a fixed order,
so a rerun carves the same split.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Iterable, Sequence

import numpy as np

from vlpeft.data.records import VQAExample
from vlpeft.errors import UserError
from vlpeft.tasks.metrics import normalize_vqa_answer


def image_ids(examples: Iterable[Any]) -> set[str]:
    """The distinct image ids of `examples`."""
    return {e.image_id for e in examples}


def candidate_answers(examples: Iterable[VQAExample], limit: int | None = None) -> tuple[str, ...]:
    """Distinct normalised answers, most frequent first (every human answer counts), ties alphabetical."""
    counts = Counter(normalize_vqa_answer(a, e.keep_articles) for e in examples for a in e.answers)
    counts.pop("", None)
    ranked = sorted(counts, key=lambda a: (-counts[a], a))
    return tuple(ranked[:limit] if limit is not None else ranked)


def answer_type(answer: str) -> str:
    """VQAv2's answer types for a source without them: yes/no, number, other."""
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def split_sizes(splits: dict[str, list]) -> dict[str, dict[str, int]]:
    return {k: {"examples": len(v), "images": len({e.image_id for e in v})} for k, v in splits.items()}


def seeded_image_split(ids: Sequence[str], n_first: int, seed: int) -> tuple[set[str], set[str]]:
    """(n_first images, the rest), from a seeded permutation of `ids` (given in a fixed order)."""
    perm = np.random.default_rng(np.random.SeedSequence([seed, len(ids)])).permutation(len(ids))
    first = {ids[i] for i in perm[:n_first].tolist()}
    return first, set(ids) - first


def by_image(examples: Iterable[Any], ids: set[str]) -> list:
    return [e for e in examples if e.image_id in ids]


def numeric_first(ids: Iterable[str]) -> list[str]:
    """Image ids in a fixed order: numbers by value, then other names alphabetically."""
    return sorted(ids, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


def carve(examples: list, fractions: dict[str, float], seed: int, where: str) -> dict[str, list]:
    """Split `examples` by image into "train" and the splits named in `fractions` (e.g.
    {"val": 0.1, "test": 0.1}): each carved split gets round(fraction x images) images, at least one,
    chosen from one seeded permutation of the image ids in `numeric_first` order; train keeps the rest
    (at least one image). Examples keep their order within each split."""
    ids = numeric_first(image_ids(examples))
    wanted = {name: max(1, round(f * len(ids))) for name, f in fractions.items()}
    if sum(wanted.values()) >= len(ids):
        raise UserError(f"{where}: {len(ids)} images cannot be split into train and {', '.join(wanted)} "
                        f"({', '.join(f'{k} {v}' for k, v in wanted.items())}); give more images or splits in the data")
    perm = np.random.default_rng(np.random.SeedSequence([seed, len(ids)])).permutation(len(ids)).tolist()
    out, start = {}, 0
    for name, n in wanted.items():
        chosen = {ids[i] for i in perm[start:start + n]}
        out[name] = by_image(examples, chosen)
        start += n
    rest = {ids[i] for i in perm[start:]}
    out["train"] = by_image(examples, rest)
    return out


def check_fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1 or math.isnan(value):
        raise UserError(f"{where} must be a fraction in (0, 1), got {value!r}")
    return float(value)


def image_sources(examples: Iterable[Any], task: str) -> dict[str, str]:
    """image_id -> image_path over all splits; one id must not name two files."""
    sources: dict[str, str] = {}
    for e in examples:
        known = sources.setdefault(e.image_id, e.image_path)
        if known != e.image_path:
            raise UserError(f"task {task}: image id {e.image_id} names two files, {known} and {e.image_path}")
    return sources


def sources_digest(sources: dict[str, Any]) -> str:
    """A short digest of an image_id -> file mapping: two tasks share cached image features only
    when their ids name the same files."""
    import hashlib

    h = hashlib.sha1()
    for image_id in sorted(sources):
        source = sources[image_id]
        h.update(f"{image_id}\0{source if isinstance(source, str) else hashlib.sha1(source).hexdigest()}\n".encode())
    return h.hexdigest()[:16]
