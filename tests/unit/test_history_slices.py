"""shoal/store/history.py `since_bounded`: a watcher far behind is answered in slices, whether the events are
still decoded or already packed, and the slices add up to `since` exactly."""

from __future__ import annotations

import pytest

from shoal.store.history import History
from shoal.store.txn import Change, Event


def event(rev: int, n: int) -> Event:
    return Event(rev, tuple(Change("create", "config", f"c{rev}-{i}", {"id": f"c{rev}-{i}", "v": i})
                            for i in range(n)))


@pytest.mark.parametrize("hot", [1, 3, 10_000])  # mostly packed, mixed, all decoded
@pytest.mark.parametrize("budget", [1, 4, 7, 1_000])
def test_slices_add_up_to_since(hot: int, budget: int) -> None:
    h = History(hot_changes=hot)
    for rev in range(1, 21):
        h.append(event(rev, 1 + rev % 3))
    for start in (0, 5, 19, 20):
        whole = [e.revision for e in h if e.revision > start]  # every retained event, read another way
        assert [e.revision for e in h.since(start)] == whole
        got: list[int] = []
        after = start
        while True:
            part, cut = h.since_bounded(after, budget)
            got += [e.revision for e in part]
            if not cut:
                break
            assert part and sum(len(e.changes) for e in part) >= budget
            assert sum(len(e.changes) for e in part[:-1]) < budget  # cut right after the budget was reached
            after = part[-1].revision
        assert got == whole


def test_one_event_larger_than_the_budget_is_still_answered() -> None:
    h = History()
    h.append(event(1, 50))
    h.append(event(2, 1))
    part, cut = h.since_bounded(0, 10)
    assert [e.revision for e in part] == [1] and cut
    assert [e.revision for e in h.since_bounded(1, 10)[0]] == [2]
