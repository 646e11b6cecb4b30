"""tests/e2e/harness.together: how the e2e tests on the session's shared cluster are ordered (one block, where the
first of them stood, every other test in its place) — so that cluster never runs beside another one."""

from __future__ import annotations

from tests.e2e.harness import together


def test_the_picked_items_move_to_the_first_ones_place_in_order() -> None:
    items = ["a1", "S1", "b1", "S2", "c1", "S3", "d1"]
    assert together(items, lambda x: x.startswith("S")) == ["a1", "S1", "S2", "S3", "b1", "c1", "d1"]


def test_nothing_picked_or_all_picked_keeps_the_order() -> None:
    items = ["b", "a", "c"]
    assert together(items, lambda _x: False) == items
    assert together(items, lambda _x: True) == items
    assert together([], lambda _x: True) == []


def test_a_picked_item_first_keeps_the_rest_after_the_block() -> None:
    assert together(["S1", "a", "S2", "b"], lambda x: x.startswith("S")) == ["S1", "S2", "a", "b"]
