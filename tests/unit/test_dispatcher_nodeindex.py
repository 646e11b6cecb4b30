"""NodeIndex: the dispatcher's per-node index of its store view. A task change wakes the long polls of the
node it left and the node it joined, and only those; a secret or config change, or a re-list, wakes every
node; a deleted node is handed back (the dispatcher ends its session)."""

from __future__ import annotations

from services.dispatcher.nodeindex import NodeIndex
from shoal.models.kinds import Kind
from shoal.store.local import LocalStore
from shoal.store.mirror import StoreMirror
from shoal.store.txn import Action, Change


def change(kind: str, obj_id: str, action: Action = "update", **obj: object) -> Change:
    return Change(kind=kind, action=action, id=obj_id, object={"id": obj_id, **obj})


def test_a_moved_task_wakes_exactly_its_old_and_new_node() -> None:
    idx = NodeIndex(StoreMirror(LocalStore(), [Kind.TASK]))
    a, b, c = idx.event("a"), idx.event("b"), idx.event("c")
    assert idx.absorb([change(Kind.TASK, "t1", "create", node_id="a")]) == []
    assert a.is_set() and not b.is_set() and idx.tasks_of == {"a": {"t1"}}
    a = idx.event("a")
    idx.absorb([change(Kind.TASK, "t1", node_id="b")])
    assert a.is_set() and b.is_set() and not c.is_set()
    assert idx.node_of == {"t1": "b"} and idx.tasks_of["a"] == set()
    idx.absorb([change(Kind.TASK, "t1", "delete")])
    assert idx.node_of == {}


def test_payload_changes_and_relists_wake_everyone_and_deleted_nodes_are_returned() -> None:
    mirror = StoreMirror(LocalStore(), [Kind.TASK])
    mirror.objects[Kind.TASK] = {"t1": {"id": "t1", "node_id": "a"}}
    idx = NodeIndex(mirror)
    a, b = idx.event("a"), idx.event("b")
    idx.absorb([change(Kind.SECRET, "s1", "create")])
    assert a.is_set() and b.is_set()
    a = idx.event("a")
    assert idx.absorb(None) == [] and a.is_set() and idx.tasks_of == {"a": {"t1"}}
    assert idx.absorb([change(Kind.NODE, "a", "delete")]) == ["a"]


def test_changes_are_gathered_for_tracked_nodes_only_until_taken() -> None:
    mirror = StoreMirror(LocalStore(), [Kind.TASK])
    idx = NodeIndex(mirror)
    idx.track("a")
    idx.absorb([change(Kind.TASK, "t1", "create", node_id="a"), change(Kind.TASK, "t2", "create", node_id="b")])
    assert idx.take_changes("a") == {"t1"} and idx.take_changes("a") == set()
    assert idx.take_changes("b") == set() and "b" not in idx.changed  # untracked: nothing gathered
    idx.absorb([change(Kind.TASK, "t1", node_id="b")])  # moved away: the node it left must drop it
    assert idx.take_changes("a") == {"t1"}
    mirror.objects[Kind.TASK] = {"t1": {"id": "t1", "node_id": "b", "status": {"state": "assigned"}}}
    assert idx.task_for("a", "t1") is None and idx.task_for("b", "t1") is not None
    idx.absorb([change(Kind.SECRET, "s1", "create")])
    idx.absorb(None)
    assert (idx.payload_changes, idx.relists) == (1, 1)
    idx.untrack("a")
    idx.absorb([change(Kind.TASK, "t3", "create", node_id="a")])
    assert idx.take_changes("a") == set()
