"""Peer transport: the binary message codec (round trip, garbage refused) and PeerTransport on loopback
(delivery, never blocking on a dead peer, reconnect after a restart)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.raftstore.codec import DecodeError, decode_message, encode_message
from services.raftstore.raft import Entry, Message, MsgType
from services.raftstore.transport import PeerTransport
from tests.integration.raftprocs import free_ports

u64 = st.integers(min_value=0, max_value=2**63)
entries = st.builds(Entry, term=u64, index=u64, data=st.binary(max_size=64))
messages = st.builds(Message, type=st.sampled_from(MsgType), to=u64, frm=u64, term=u64, log_term=u64, index=u64,
                     entries=st.lists(entries, max_size=4).map(tuple), commit=u64, reject=st.booleans(),
                     reject_hint=u64, context=st.binary(max_size=16))


@given(messages)
def test_codec_round_trips_every_message(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


@given(st.binary(max_size=200))
def test_codec_refuses_garbage_cleanly(buf: bytes) -> None:
    try:
        decode_message(buf)
    except DecodeError:
        pass


def test_codec_refuses_truncated_frames() -> None:
    data = encode_message(Message(MsgType.APP, to=2, frm=1, entries=(Entry(1, 1, b"payload"),)))
    with pytest.raises(DecodeError):
        decode_message(data[:-3])


async def _wait(pred: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_messages_flow_between_members_and_survive_a_restart() -> None:
    p1, p2 = free_ports(2)
    peers = {1: ("127.0.0.1", p1), 2: ("127.0.0.1", p2)}
    got1: list[Message] = []
    got2: list[Message] = []
    t1 = PeerTransport(1, peers, got1.append)
    t2 = PeerTransport(2, peers, got2.append)
    await t1.start("127.0.0.1", p1)
    await t2.start("127.0.0.1", p2)
    try:
        m = Message(MsgType.HEARTBEAT, to=2, frm=1, term=3, commit=7, context=b"c")
        await _wait(lambda: t1.connected()[2])
        t1.send([m] * 5)
        await _wait(lambda: len(got2) == 5)
        assert got2[0] == m
        t2.send([Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=3)])
        await _wait(lambda: len(got1) == 1)

        await t2.stop()  # the peer goes away: sending must not block or raise
        t1.send([m] * 10_000)
        t2 = PeerTransport(2, peers, got2.append)
        await t2.start("127.0.0.1", p2)
        got2.clear()

        async def resend() -> None:
            while not got2:
                t1.send([m])
                await asyncio.sleep(0.05)

        await asyncio.wait_for(resend(), 10)
    finally:
        await t1.stop()
        await t2.stop()


async def test_a_full_queue_drops_instead_of_blocking() -> None:
    t = PeerTransport(1, {2: ("127.0.0.1", 9)}, lambda _m: None, queue_size=10)  # nobody listens on 9
    t.send([Message(MsgType.HEARTBEAT, to=2, frm=1)] * 50)
    assert t.metrics.value("raft_messages_dropped_total") == 40
    t.send([Message(MsgType.HEARTBEAT, to=99, frm=1)])  # unknown member
    assert t.metrics.value("raft_messages_dropped_total") == 41
