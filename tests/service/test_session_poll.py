"""The session poll (`Dispatcher.session_poll`, services/dispatcher/polls.py) without HTTP, over LocalStore: one
long poll carries each of the three kinds — assignments, the endpoint table, log requests — as soon as one has
news, with each kind's own rules (the stream's seq and gaps, the table's content version, log requests handed
out once), and a burst of assignment changes still goes out as one message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.dispatcher.loop import Dispatcher
from services.dispatcher.settings import DispatcherSettings
from shoal.bus import MemoryBus
from shoal.clock import FakeClock
from shoal.errors import NotFound, PermissionDenied
from shoal.logs import LogQuery
from shoal.store import txn as t
from shoal.store.local import LocalStore
from tests.service.polling import until
from tests.service.test_dispatcher_loop import DESCRIPTION, task

pytestmark = pytest.mark.timeout(30)

INGRESS = {"id": "svc", "spec": {"name": "web", "endpoint": {"mode": "vip"}, "task": {}},
           "endpoint": {"ports": [{"protocol": "tcp", "target_port": 8080, "published_port": 30080,
                                   "publish_mode": "ingress"}], "virtual_ips": []}}


LONG = 60.0  # the polls' wait: a poll that answers is woken by its news, long before it would give up


async def answered(poll: asyncio.Task[dict[str, Any]]) -> dict[str, Any]:
    await until(poll.done, "the waiting poll woken by the news")
    return poll.result()


@pytest.fixture
async def store() -> AsyncIterator[LocalStore]:
    yield LocalStore()


async def started(store: LocalStore, batch_delay: float = 0.01) -> Dispatcher:
    settings = DispatcherSettings(heartbeat_period=1.0, poll_interval=0.02, status_batch_interval=0.01,
                                  assignment_batch_delay=batch_delay)
    d = Dispatcher(settings, store=store, bus=MemoryBus(), clock=FakeClock(time.time()))
    d._runner = asyncio.create_task(d.run())  # type: ignore[attr-defined]
    await until(d.ready, "dispatcher ready")
    return d


async def stop(d: Dispatcher) -> None:
    d.stop()
    await d._runner  # type: ignore[attr-defined]


async def committed(d: Dispatcher, store: LocalStore, ops: list[dict[str, Any]]) -> None:
    """Commit `ops` and wait until the dispatcher's view holds them (each commit wakes the polls on its own)."""
    result = await store.txn(ops)
    d.wake()
    await until(lambda: d.mirror.revision >= result.revision, "the view at the commit")


async def test_one_poll_carries_each_kind_as_soon_as_it_has_news(store: LocalStore) -> None:
    d = await started(store)
    reg = await d.register(None, DESCRIPTION, None)
    node_id, sid = reg["node_id"], reg["session_id"]
    await committed(d, store, [t.create("task", task("t1", node_id))])
    # a fresh session: the complete set and the table at once, in one answer; no log request yet
    first = await d.session_poll(sid, 0, "", 5.0)
    assert set(first) == {"assignments", "endpoints"}
    assert first["assignments"]["type"] == "complete" and [x["id"] for x in first["assignments"]["tasks"]] == ["t1"]
    seq, version = first["assignments"]["seq"], first["endpoints"]["version"]
    # nothing new: an empty answer after `wait`; no version asked for: no table
    assert await d.session_poll(sid, seq, version, 0.0) == {}
    assert await d.session_poll(sid, seq, None, 0.0) == {}

    # a log request wakes a waiting poll, and is handed out once
    poll = asyncio.create_task(d.session_poll(sid, seq, version, LONG))
    await asyncio.sleep(0.05)
    req = d.logs.open(node_id, LogQuery(("t1",)))
    assert await answered(poll) == {"logs": {"requests": [req.wire()]}}
    assert await d.session_poll(sid, seq, version, 0.0) == {}

    # an assignment change wakes it: the next incremental, chained to `seq`
    poll = asyncio.create_task(d.session_poll(sid, seq, version, LONG))
    await asyncio.sleep(0.05)
    await committed(d, store, [t.create("task", task("t2", node_id))])
    got = await answered(poll)
    assert set(got) == {"assignments"} and got["assignments"]["applies_to"] == seq
    assert [(c["action"], c["task"]["id"]) for c in got["assignments"]["changes"]] == [("update", "t2")]
    seq = got["assignments"]["seq"]

    # a service publishing an ingress port moves the node's table: a new version
    poll = asyncio.create_task(d.session_poll(sid, seq, version, LONG))
    await asyncio.sleep(0.05)
    await store.txn([t.create("service", INGRESS)])
    d.wake()
    got = await answered(poll)
    assert set(got) == {"endpoints"} and got["endpoints"]["version"] != version
    assert [s["id"] for s in got["endpoints"]["services"]] == ["svc"]
    # a gap (a lost answer) gets the complete set, as on the assignments' own poll
    again = await d.session_poll(sid, seq - 1, got["endpoints"]["version"], 0.0)
    assert set(again) == {"assignments"} and again["assignments"]["type"] == "complete"
    await stop(d)


async def test_a_burst_of_assignment_changes_goes_out_as_one_message(store: LocalStore) -> None:
    """Within `assignment_batch_delay` of the session's last message, the poll lingers (shoal/pacing.py): three
    commits that each woke it arrive in one message."""
    d = await started(store, batch_delay=2.0)
    reg = await d.register(None, DESCRIPTION, None)
    node_id, sid = reg["node_id"], reg["session_id"]
    first = await d.session_poll(sid, 0, None, 5.0)  # the session's first message: its pacer starts now
    seq = first["assignments"]["seq"]
    poll = asyncio.create_task(d.session_poll(sid, seq, None, 10.0))
    for i in range(3):
        await committed(d, store, [t.create("task", task(f"u{i}", node_id))])
        await asyncio.sleep(0.05)
    got = await poll
    assert set(got) == {"assignments"} and got["assignments"]["applies_to"] == seq
    assert sorted(c["task"]["id"] for c in got["assignments"]["changes"]) == ["u0", "u1", "u2"]
    await stop(d)


async def test_the_session_poll_keeps_the_sessions_identity_rules(store: LocalStore) -> None:
    d = await started(store)
    reg = await d.register(None, DESCRIPTION, None)
    with pytest.raises(PermissionDenied):
        await d.session_poll(reg["session_id"], 0, "", 0.0, caller="another-node")
    with pytest.raises(NotFound):
        await d.session_poll("nosuchsession", 0, "", 0.0)
    # a poll of a session that is replaced (the node registered again) ends: register again
    poll = asyncio.create_task(d.session_poll(reg["session_id"], 0, None, 0.0))
    await poll
    waiting = asyncio.create_task(d.session_poll(reg["session_id"], poll.result()["assignments"]["seq"], None, 10.0))
    await asyncio.sleep(0.05)
    await d.register(reg["node_id"], DESCRIPTION, None)
    with pytest.raises(NotFound):
        await waiting
    await stop(d)
