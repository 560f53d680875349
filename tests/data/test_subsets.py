"""Nested seeded subsets for the data-size axis."""

import pytest

from vlpeft.data.subsets import nested_subset
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
