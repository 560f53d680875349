"""Seeded subsets for the downstream data-size axis of a study.

`nested_subset(items, n, seed)` takes the first n items of one seeded permutation, so for a fixed
seed every smaller subset lies inside every larger one: moving along the data-size axis only adds
examples, and a curve over sizes is not confounded by which examples each size happened to draw.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from vlpeft.errors import UserError

T = TypeVar("T")


def subset_order(n_items: int, seed: int) -> np.ndarray:
    """The seeded permutation of range(n_items) that every subset size draws from."""
    return np.random.default_rng(np.random.SeedSequence([seed, n_items])).permutation(n_items)


def nested_subset(items: Sequence[T], n: int, seed: int) -> list[T]:
    """n items chosen by `seed`, kept in their original order; nested across n for one seed."""
    if not 0 <= n <= len(items):
        raise UserError(f"data subset: asked for {n} examples but only {len(items)} are available")
    chosen = np.sort(subset_order(len(items), seed)[:n])
    return [items[i] for i in chosen]
