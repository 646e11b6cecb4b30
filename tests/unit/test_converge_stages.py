"""bench/stages.py (bench/converge.py --stages): engine timestamps, store events → per-stage p50/max."""

from __future__ import annotations

import pytest

from bench import stages as stg

T0 = 1_800_000_000.0


def test_engine_time_takes_nanoseconds_zones_and_the_zero_time() -> None:
    assert stg.engine_time("2027-01-15T08:00:00.123456789Z") == pytest.approx(1_800_000_000.123456, abs=1e-6)
    assert stg.engine_time("2027-01-15T08:00:00Z") == 1_800_000_000.0
    assert stg.engine_time("2027-01-15T09:00:00.5+01:00") == pytest.approx(1_800_000_000.5)
    assert stg.engine_time("0001-01-01T00:00:00Z") is None and stg.engine_time(None) is None


def ct(task_id: str, created: float, started: float | None) -> dict[str, object]:
    def iso(x: float) -> str:
        return f"2027-01-15T08:00:{x:09.6f}Z"

    return {"Id": f"c-{task_id}", "Created": iso(created), "Config": {"Labels": {"shoal.task.id": task_id}},
            "State": {"StartedAt": iso(started) if started is not None else "0001-01-01T00:00:00Z"}}


def test_shoal_marks_from_the_engine_and_the_stores_writers() -> None:
    marks = stg.engine_marks([ct("a", 1.0, 2.0), ct("b", 1.5, 3.0), ct("c", 1.2, None)], key="shoal.task.id")
    events = [
        {"time": T0 + 0.1, "kind": "task", "action": "create", "id": t, "actor": "orchestrator@n1"} for t in "abc"
    ] + [
        {"time": T0 + 0.2, "kind": "task", "action": "update", "id": t, "actor": "allocator@n1"} for t in "abc"
    ] + [
        {"time": T0 + 0.3, "kind": "task", "action": "update", "id": t, "actor": "scheduler@n1"} for t in "abc"
    ] + [
        {"time": T0 + 0.9, "kind": "task", "action": "update", "id": "a", "actor": "scheduler@n1"},  # not first
        {"time": T0 + 2.1, "kind": "task", "action": "update", "id": "a", "actor": "dispatcher@n1"},
        {"time": T0 + 2.5, "kind": "task", "action": "update", "id": "a", "actor": "dispatcher@n1"},  # the last
        {"time": T0 + 3.2, "kind": "task", "action": "update", "id": "b", "actor": "dispatcher@n1"},
        {"time": T0 + 9.0, "kind": "service", "action": "update", "id": "a", "actor": "gateway@n1"},  # not a task
        {"time": T0 + 9.0, "kind": "task", "action": "delete", "id": "b", "actor": "reaper@n1"},  # not a mark
    ]
    stg.add_store_marks(marks, events)
    rows = {s.name: s for s in stg.stages(T0, marks, stg.SHOAL_MARKS)}
    assert list(rows) == ["start -> task created", "task created -> pending", "pending -> assigned",
                          "assigned -> container created", "container created -> container started",
                          "container started -> reported"]
    assert rows["start -> task created"].took == pytest.approx([0.1] * 3)
    assert rows["assigned -> container created"].took == pytest.approx([0.7, 1.2, 0.9])
    # c never started: it counts for the stages it reached, not for the ones it did not
    assert rows["container created -> container started"].took == pytest.approx([1.0, 1.5])
    assert rows["container started -> reported"].took == pytest.approx([0.5, 0.2])
    assert rows["container started -> reported"].since_start == pytest.approx([2.5, 3.2])
    text = stg.table("shoal", 3, list(rows.values()))
    assert "| container created -> container started | 2 | 1.250 | 1.500 | 2.500 | 3.000 |" in text


def test_floor_and_swarm_have_the_engine_marks_only() -> None:
    marks = stg.engine_marks([ct("x", 0.5, 1.0), ct("y", 0.7, 2.0)])  # no key: by container id
    assert set(marks) == {"c-x", "c-y"}
    rows = stg.stages(T0, marks, stg.ENGINE_MARKS)
    assert [r.took for r in rows] == [pytest.approx([0.5, 0.7]), pytest.approx([0.5, 1.3])]
    assert "| start -> container created | 2 | 0.600 | 0.700 |" in stg.table("floor", 2, rows)
    empty = stg.table("floor", 0, stg.stages(T0, {}, stg.ENGINE_MARKS))
    assert "| start -> container created | 0 | - | - | - | - |" in empty
