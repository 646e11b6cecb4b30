"""agent/hollow.py's split of N hollow nodes over K processes (`--processes`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.hollow import parse, slices


def test_nodes_split_evenly_with_contiguous_indices() -> None:
    assert slices(10, 3) == [(1, 4), (5, 3), (8, 3)]
    assert slices(1000, 4) == [(1, 250), (251, 250), (501, 250), (751, 250)]
    assert slices(2, 5) == [(1, 1), (2, 1)]  # never a process without nodes
    assert slices(7, 1) == [(1, 7)]


@given(st.integers(1, 5000), st.integers(1, 64))
def test_every_node_is_in_exactly_one_slice(nodes: int, processes: int) -> None:
    parts = slices(nodes, processes)
    indices = [i for first, count in parts for i in range(first, first + count)]
    assert indices == list(range(1, nodes + 1))
    assert max(c for _, c in parts) - min(c for _, c in parts) <= 1


def test_processes_must_be_positive() -> None:
    with pytest.raises(SystemExit):
        parse(["--nodes", "3", "--state-root", "/tmp/x", "--processes", "0"])
    a = parse(["--nodes", "3", "--state-root", "/tmp/x", "--processes", "2"])
    assert (a.processes, a.first, a.join_concurrency) == (2, 1, 32)
