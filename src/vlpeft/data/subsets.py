"""Seeded subsets for the downstream data-size axis of a study.

`nested_subset(items, n, seed)` takes the first n items of one seeded permutation, so for a fixed
seed every smaller subset lies inside every larger one: moving along the data-size axis only adds
examples, and a curve over sizes is not confounded by which examples each size happened to draw.
`stratified_nested_subset` does the same while keeping the share of each value of a key (e.g. the
answer of a VQA question) within one example of its share in the full set, at every size.
`parse_size` reads a size as written in a config (200, 0.25, "25%") into a `DataSize`, a count or a
fraction of the task's pool; `resolve_size` turns one into a number of examples.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence, TypeVar

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


def stratified_order(strata: Sequence[Hashable], seed: int) -> np.ndarray:
    """One seeded order of range(len(strata)) whose every prefix is stratified: for each prefix
    length t and each stratum s with N_s of the N items, the prefix holds floor or ceil of t * N_s / N
    items of s (|count - t * N_s / N| < 1), so taking the first n is nested across n by construction.

    Within a stratum, items come in the order of `subset_order(N, seed)` (so with a single stratum
    this is exactly `nested_subset`'s order). Across strata, position t goes to a stratum by the
    Quota method of Balinski & Young (1975), which is house monotone and stays within quota:
    among the strata s with count_s < t * N_s / N (taking one more keeps them within upper quota),
    the one with the smallest (count_s + 1) / N_s (Jefferson/D'Hondt priority); ties go to a seeded
    rank of the strata. Cost O(N log k) for k strata, with two heaps."""
    n_items = len(strata)
    perm = subset_order(n_items, seed)
    members: dict[Hashable, list[int]] = {}
    for i in perm.tolist():
        members.setdefault(strata[i], []).append(i)
    groups = list(members.values())  # in order of first appearance in the permutation: seeded
    sizes = [len(g) for g in groups]
    tie_rank = np.random.default_rng(np.random.SeedSequence([seed, n_items, len(groups), 1])).permutation(len(groups))
    taken = [0] * len(groups)
    # waiting: (first position t at which the stratum is eligible, stratum); eligible: (priority, rank, stratum)
    waiting = [(1, s) for s in range(len(groups))]  # count 0 < t * N_s / N for every t >= 1
    eligible: list[tuple[float, int, int]] = []
    order = np.empty(n_items, dtype=np.int64)
    for t in range(1, n_items + 1):
        while waiting and waiting[0][0] <= t:
            _, s = heapq.heappop(waiting)
            # (c + 1) / N_s as a float: equal fractions round to equal floats, unequal ones
            # with numerators and denominators below 2**26 stay apart
            heapq.heappush(eligible, ((taken[s] + 1) / sizes[s], int(tie_rank[s]), s))
        if not eligible:  # pragma: no cover - excluded by the Quota method's theorem
            raise AssertionError(f"stratified order: no eligible stratum at position {t}")
        _, _, s = heapq.heappop(eligible)
        order[t - 1] = groups[s][taken[s]]
        taken[s] += 1
        if taken[s] < sizes[s]:
            # eligible again at the first t' with taken * N < t' * N_s
            heapq.heappush(waiting, (taken[s] * n_items // sizes[s] + 1, s))
    return order


def stratified_nested_subset(items: Sequence[T], n: int, seed: int, key: Callable[[T], Hashable]) -> list[T]:
    """n items chosen by `seed`, kept in their original order, with each value of key(item) (e.g.
    the answer of a VQA example) holding floor or ceil of its share n * N_s / N; nested across n
    for one seed (see `stratified_order`)."""
    if not 0 <= n <= len(items):
        raise UserError(f"data subset: asked for {n} examples but only {len(items)} are available")
    order = stratified_order([key(item) for item in items], seed)
    chosen = np.sort(order[:n])
    return [items[i] for i in chosen]


_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


@dataclass(frozen=True)
class DataSize:
    """A training-set size: `count` examples, or a `fraction` in (0, 1] of the task's training pool.
    `written` is the size as the config wrote it (200, "200", 0.25, "25%"): configs keep that value,
    which names the size (cell IDs, the results store)."""

    written: int | float | str
    count: int | None = None
    fraction: float | None = None

    def of(self, n_available: int, what: str) -> int:
        """The number of examples out of `n_available`: the count (at most `n_available`), or
        round(fraction * n_available), at least 1. `what` names the setting in the one-line UserError."""
        if n_available < 1:
            raise UserError(f"{what}: no examples are available to take {self.written!r} of")
        if self.count is not None:
            if self.count > n_available:
                raise UserError(f"{what}: asked for {self.count} examples but only {n_available} are available")
            return self.count
        return min(n_available, max(1, math.floor(self.fraction * n_available + 0.5)))


def parse_size(size: int | float | str, what: str) -> DataSize:
    """A data size as written in a config: a count (an int >= 1, or a string of one such as "200"), or
    a fraction in (0, 1]: a float ("0.25", 0.25) or a percentage string ("25%"). Floats above 1 are
    refused rather than read as counts (1.5 is most likely a typo). `what` names the setting in the
    one-line UserError, e.g. "easyvqa-vqa train size"."""
    fraction: float | None = None
    count: int | None = None
    if isinstance(size, bool):
        raise UserError(f"{what}: expected a count or a fraction, got {size!r}")
    if isinstance(size, (int, np.integer)):
        count = int(size)
    elif isinstance(size, (float, np.floating)):
        fraction = float(size)
    elif isinstance(size, str):
        text = size.strip()
        percent = _PERCENT.match(text)
        if percent:
            fraction = float(percent.group(1)) / 100
            if not 0 < fraction <= 1:
                raise UserError(f"{what}: a percentage must be in (0%, 100%], got {size!r}")
        elif re.fullmatch(r"[+-]?\d+", text):
            count = int(text)
        else:
            try:
                fraction = float(text)
            except ValueError:
                expected = "a count (200), a fraction (0.25) or a percentage (25%)"
                raise UserError(f"{what}: expected {expected}, got {size!r}") from None
    else:
        raise UserError(f"{what}: expected a count or a fraction, got {type(size).__name__} {size!r}")
    if count is not None:
        if count < 1:
            raise UserError(f"{what}: a count must be at least 1, got {count}")
        return DataSize(size, count=count)
    if not math.isfinite(fraction) or not 0 < fraction <= 1:
        hint = " (give a count as an integer, e.g. 200)" if math.isfinite(fraction) and fraction > 1 else ""
        raise UserError(f"{what}: a fraction must be in (0, 1], got {size!r}{hint}")
    return DataSize(size, fraction=fraction)


def resolve_size(size: int | float | str, n_available: int, what: str) -> int:
    """A data size as written in a config (see `parse_size`) as a number of examples out of
    `n_available` (see `DataSize.of`)."""
    return parse_size(size, what).of(n_available, what)
