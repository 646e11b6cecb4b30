"""A follower's watch that names a revision it must reach (`upto`, from a NATS hint) gets it from the leader at
once (ReadIndex) instead of waiting for the leader's next heartbeat to tell the follower the commit index.

Three real members with a slow heartbeat (1.5 s) and nothing else written meanwhile, so the only way a follower
learns of a commit quickly is to ask. Without `upto` the same watch runs out of its wait before the heartbeat in
most trials (the control below); with it every trial's watch returns the hinted revision."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import RaftProcs, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TRIALS = 6
WAIT = 0.5  # s; the heartbeat comes every 1.5 s: a watch without `upto` sees the commit in ~1/3 of the trials


@pytest.fixture
def slow_heartbeats(tmp_path: Path) -> Iterator[RaftProcs]:
    (dead,) = free_ports(1)
    c = RaftProcs(tmp_path, 3, tick=0.05, election_ticks=60, nats_url=f"nats://127.0.0.1:{dead}",
                  extra_env={"SHOAL_RAFT_HEARTBEAT_TICKS": "30"})
    try:
        yield c.start_all()
    finally:
        c.close()


async def _trials(cluster: RaftProcs, *, upto: bool) -> list[bool]:
    """Per trial: write on the leader, then watch a follower for that revision; did the watch return it?"""
    lead = cluster.wait_leader(20)
    follower = next(i for i in cluster.ids if i != lead)
    writer = StoreClient([cluster.url(lead)], creds=cluster.certs.client())
    reader = StoreClient([cluster.url(follower)], creds=cluster.certs.client(component="scheduler"))
    seen = []
    try:
        for i in range(TRIALS):
            name = f"{upto}-{i}"
            res = await writer.txn([t.create("config", {"id": name, "spec": {"name": name, "data": ""}})])
            batch = await reader.watch(res.revision - 1, WAIT, upto=res.revision if upto else 0)
            seen.append(res.revision in [ev.revision for ev in batch.events])
            await asyncio.sleep(0.05)
    finally:
        await writer.close()
        await reader.close()
    return seen


async def test_a_follower_watch_with_upto_does_not_wait_for_the_heartbeat(slow_heartbeats: RaftProcs) -> None:
    control = await _trials(slow_heartbeats, upto=False)
    assert not all(control), "control: a follower learned every commit without asking; the heartbeat is not slow"
    assert await _trials(slow_heartbeats, upto=True) == [True] * TRIALS
