"""Heartbeats shared between dispatchers in batches (services/dispatcher/beats.py): both message forms read,
every beat judged, the batch bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from services.dispatcher.beats import MAX_BEATS, BeatPublisher, batch_messages, beats_from_message
from shoal.bus import MemoryBus
from shoal.bus.subjects import NODE_HEARTBEAT

NOW = 1_000_000.0


def test_single_and_batch_forms_and_each_beat_judged() -> None:
    assert beats_from_message({"node_id": "a", "at": NOW - 1}, NOW) == ([("a", NOW - 1)], [])
    heard, dropped = beats_from_message({"beats": [["a", NOW - 1], ["b", NOW + 5], ["c", float("inf")],
                                                   ["x" * 200, NOW], "junk", ["d", NOW + 3600]]}, NOW)
    assert heard == [("a", NOW - 1), ("b", NOW)]  # a time just ahead of ours is capped at now
    assert len(dropped) == 4
    assert beats_from_message({"beats": [["a", NOW]] * (MAX_BEATS + 1)}, NOW) == \
        ([], [f"beats is not a list of at most {MAX_BEATS}"])
    assert beats_from_message({"beats": "a"}, NOW)[0] == []
    assert beats_from_message(["a", NOW], NOW) == ([], ["not an object"])


def test_batches_are_bounded() -> None:
    pending = {f"n{i}": NOW for i in range(MAX_BEATS * 2 + 1)}
    msgs = batch_messages(pending)
    assert [len(m["beats"]) for m in msgs] == [MAX_BEATS, MAX_BEATS, 1]
    assert batch_messages({}) == []


async def test_beats_heard_in_an_interval_go_out_as_one_message_with_each_nodes_latest() -> None:
    bus = MemoryBus()
    got: list[dict[str, Any]] = []

    async def handler(data: dict[str, Any]) -> None:
        got.append(data)

    await bus.subscribe(NODE_HEARTBEAT, handler)
    pub = BeatPublisher(bus, interval=0.05)
    runner = asyncio.create_task(pub.run())
    for i in range(300):
        pub.note(f"n{i % 100}", NOW + i)
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(got) == 1 and pub.messages == 1
    beats = dict(tuple(b) for b in got[0]["beats"])
    assert len(beats) == 100 and beats["n7"] == NOW + 207
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


def test_beats_gather_at_most_a_quarter_of_the_heartbeat_period() -> None:
    from services.dispatcher.beats import FLUSH_INTERVAL, flush_delay

    assert flush_delay(FLUSH_INTERVAL, 5.0) == FLUSH_INTERVAL  # the default period: 0.5 s
    assert flush_delay(FLUSH_INTERVAL, 0.2) == 0.05  # the tests' period: not most of a grace
    assert flush_delay(FLUSH_INTERVAL, None) == FLUSH_INTERVAL == flush_delay(FLUSH_INTERVAL, float("nan"))
