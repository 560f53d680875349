"""Nested seeded subsets for the data-size axis: plain, stratified, and size parsing."""

import random
from collections import Counter

import pytest

from vlpeft.data.subsets import (
    DataSize,
    nested_subset,
    parse_size,
    resolve_size,
    stratified_nested_subset,
    stratified_order,
)
from vlpeft.errors import UserError


def test_smaller_subsets_lie_inside_larger_ones():
    items = list(range(1000))
    sizes = [10, 50, 200, 1000]
    subsets = [nested_subset(items, n, seed=3) for n in sizes]
    for small, big in zip(subsets, subsets[1:]):
        assert set(small) < set(big)
    assert [len(s) for s in subsets] == sizes
    assert subsets[0] == sorted(subsets[0])  # original order kept
    assert subsets[-1] == items


def test_seeded_and_varied():
    items = [f"x{i}" for i in range(500)]
    assert nested_subset(items, 40, seed=1) == nested_subset(items, 40, seed=1)
    assert nested_subset(items, 40, seed=1) != nested_subset(items, 40, seed=2)
    assert nested_subset(items, 40, seed=1) != items[:40]


def test_too_many_requested():
    with pytest.raises(UserError, match="asked for 11 examples but only 10"):
        nested_subset(list(range(10)), 11, seed=0)


# --------------------------------------------------------------------------------------------
# Stratified nested subsets

def skewed_items(n=300, seed=0):
    """(index, answer) pairs with a skewed answer distribution, answers in a random order."""
    rng = random.Random(seed)
    answers = rng.choices(["yes", "no", "red", "2", "circle", "rare"], weights=[40, 30, 15, 10, 4, 1], k=n)
    return list(enumerate(answers))


def within_quota(subset, items, key):
    """Every stratum holds floor or ceil of its share n * N_s / N."""
    full, part = Counter(key(i) for i in items), Counter(key(i) for i in subset)
    return all(abs(part[s] * len(items) - len(subset) * full[s]) < len(items) for s in full)


def test_stratified_subsets_are_nested_and_within_one_of_the_share_at_every_size():
    items = skewed_items()
    def key(item):
        return item[1]
    previous: set = set()
    for n in range(len(items) + 1):
        subset = stratified_nested_subset(items, n, seed=5, key=key)
        assert len(subset) == n and subset == sorted(subset)  # original order kept
        assert previous <= set(subset)
        assert within_quota(subset, items, key), n
        previous = set(subset)
    assert subset == items


@pytest.mark.parametrize("seed", range(20))
def test_stratified_order_stays_within_quota_on_random_distributions(seed):
    rng = random.Random(seed)
    k, n_items = rng.randint(1, 9), rng.randint(1, 120)
    weights = [rng.random() ** 3 for _ in range(k)]
    strata = rng.choices(range(k), weights=weights, k=n_items)
    order = stratified_order(strata, seed)
    assert sorted(order.tolist()) == list(range(n_items))
    sizes, counts = Counter(strata), Counter()
    for t, i in enumerate(order.tolist(), start=1):
        counts[strata[i]] += 1
        assert all(abs(counts[s] * n_items - t * sizes[s]) < n_items for s in sizes), (t, counts)


def test_stratified_subset_deterministic_and_seeded():
    items = skewed_items()
    def key(item):
        return item[1]
    assert stratified_nested_subset(items, 50, 1, key) == stratified_nested_subset(items, 50, 1, key)
    assert stratified_nested_subset(items, 50, 1, key) != stratified_nested_subset(items, 50, 2, key)


def test_one_stratum_is_the_plain_nested_subset():
    items = list(range(200))
    assert stratified_nested_subset(items, 37, 4, key=lambda _: "same") == nested_subset(items, 37, seed=4)


def test_stratified_subset_keeps_a_rare_answer_a_plain_subset_may_lose():
    items = [(i, "rare" if i == 0 else "common") for i in range(100)]
    subset = stratified_nested_subset(items, 50, 0, key=lambda item: item[1])
    assert Counter(a for _, a in subset) in (Counter(common=50), Counter(common=49, rare=1))
    with pytest.raises(UserError, match="asked for 101 examples but only 100"):
        stratified_nested_subset(items, 101, 0, key=lambda item: item[1])


# --------------------------------------------------------------------------------------------
# resolve_size


@pytest.mark.parametrize(
    "size, available, expected",
    [
        (200, 1000, 200),
        (1, 5, 1),
        (5, 5, 5),
        ("300", 1000, 300),
        (0.25, 1000, 250),
        ("0.5", 10, 5),
        (1.0, 7, 7),
        ("25%", 1000, 250),
        ("100%", 7, 7),
        ("12.5 %", 80, 10),
        (0.001, 10, 1),  # a fraction never rounds to nothing
        (0.25, 10, 3),  # 2.5 rounds half up
    ],
)
def test_resolve_size(size, available, expected):
    assert resolve_size(size, available, "train size") == expected


@pytest.mark.parametrize(
    "size, available, message",
    [
        (0, 100, "a count must be at least 1, got 0"),
        (-3, 100, "a count must be at least 1, got -3"),
        ("0", 100, "a count must be at least 1"),
        (0.0, 100, r"a fraction must be in \(0, 1\]"),
        (-0.5, 100, r"a fraction must be in \(0, 1\]"),
        (1.5, 100, r"a fraction must be in \(0, 1\], got 1.5 \(give a count as an integer"),
        (float("nan"), 100, r"a fraction must be in \(0, 1\]"),
        ("150%", 100, r"a percentage must be in \(0%, 100%\]"),
        ("0%", 100, r"a percentage must be in \(0%, 100%\]"),
        (101, 100, "asked for 101 examples but only 100 are available"),
        ("lots", 100, "expected a count .* got 'lots'"),
        (True, 100, "expected a count or a fraction, got True"),
        (None, 100, "expected a count or a fraction, got NoneType"),
        (10, 0, "no examples are available"),
    ],
)
def test_resolve_size_errors_name_the_setting(size, available, message):
    with pytest.raises(UserError, match=message) as err:
        resolve_size(size, available, "easyvqa-vqa train size")
    assert str(err.value).startswith("easyvqa-vqa train size: ") and "\n" not in str(err.value)


def test_a_size_is_parsed_once_into_a_count_or_a_fraction_and_keeps_how_it_was_written():
    assert parse_size("25%", "size") == DataSize("25%", fraction=0.25)
    assert parse_size(" 200 ", "size") == DataSize(" 200 ", count=200)
    assert parse_size(0.5, "size").of(7, "size") == 4 and parse_size("200", "size").of(1000, "size") == 200
    with pytest.raises(UserError, match="size: asked for 200 examples but only 100 are available"):
        parse_size(200, "size").of(100, "size")
