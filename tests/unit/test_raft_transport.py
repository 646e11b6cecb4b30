"""Peer transport: the binary message codec (round trip, garbage refused) and PeerTransport on loopback
(delivery, never blocking on a dead peer, reconnect after a restart)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.raftstore.codec import DecodeError, decode_hello, decode_message, encode_hello, encode_message
from services.raftstore.raft import ConfState, Entry, EntryType, Message, MsgType, Snapshot
from services.raftstore.transport import MAX_CHUNK, MORE, PeerAddr, PeerTransport, frames
from tests.integration.raftprocs import ClusterCerts, free_ports

u64 = st.integers(min_value=0, max_value=2**63)
entries = st.builds(Entry, term=u64, index=u64, data=st.binary(max_size=64), type=st.sampled_from(EntryType))
ids = st.lists(st.integers(min_value=1, max_value=2**63), max_size=5).map(tuple)
snapshots = st.builds(Snapshot, index=u64, term=u64, data=st.binary(max_size=300),
                      conf=st.builds(ConfState, voters=ids, learners=ids))
messages = st.builds(Message, type=st.sampled_from(MsgType), to=u64, frm=u64, term=u64, log_term=u64, index=u64,
                     entries=st.lists(entries, max_size=4).map(tuple), commit=u64, reject=st.booleans(),
                     reject_hint=u64, context=st.binary(max_size=16))
# a SNAP message always carries a snapshot, and no other kind does
messages = st.tuples(messages, snapshots).map(
    lambda ms: dataclasses.replace(ms[0], snapshot=ms[1] if ms[0].type == MsgType.SNAP else None))


@given(messages)
def test_codec_round_trips_every_message(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


def test_large_messages_go_out_in_frames_of_at_most_one_mebibyte() -> None:
    body = bytes(range(256)) * (3 * MAX_CHUNK // 256 + 7)
    parts = frames(body)
    heads = [int.from_bytes(h, "little") for h in parts[0::2]]
    assert len(heads) == 4 and all(h & ~MORE <= MAX_CHUNK for h in heads)
    assert [bool(h & MORE) for h in heads] == [True, True, True, False]
    assert b"".join(parts[1::2]) == body
    assert frames(b"small") == [(5).to_bytes(4, "little"), b"small"]


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


@pytest.fixture
def certs(tmp_path: Path) -> ClusterCerts:
    return ClusterCerts(tmp_path)


async def _wait(pred: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


async def test_messages_flow_between_members_and_survive_a_restart(certs: ClusterCerts) -> None:
    p1, p2 = free_ports(2)
    peers = {1: PeerAddr("127.0.0.1", p1, "node-1"), 2: PeerAddr("127.0.0.1", p2, "node-2")}
    got1: list[Message] = []
    got2: list[Message] = []
    t1 = PeerTransport(1, peers, got1.append, creds=certs.member(1))
    t2 = PeerTransport(2, peers, got2.append, creds=certs.member(2))
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
        t2 = PeerTransport(2, peers, got2.append, creds=certs.member(2))
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


async def test_a_full_queue_drops_instead_of_blocking(certs: ClusterCerts) -> None:
    # nobody listens on 9
    t = PeerTransport(1, {2: PeerAddr("127.0.0.1", 9, "node-2")}, lambda _m: None, creds=certs.member(1),
                      queue_size=10)
    t.send([Message(MsgType.HEARTBEAT, to=2, frm=1)] * 50)
    assert t.metrics.value("raft_messages_dropped_total") == 40
    t.send([Message(MsgType.HEARTBEAT, to=99, frm=1)])  # unknown member
    assert t.metrics.value("raft_messages_dropped_total") == 41


async def test_a_snapshot_larger_than_a_frame_arrives_whole_and_new_peers_are_dialled(certs: ClusterCerts) -> None:
    p1, p2, p3 = free_ports(3)
    got2: list[Message] = []
    got3: list[Message] = []
    t1 = PeerTransport(1, {2: PeerAddr("127.0.0.1", p2, "node-2")}, lambda _m: None, creds=certs.member(1))
    one = {1: PeerAddr("127.0.0.1", p1, "node-1")}  # who may send as member 1
    t2 = PeerTransport(2, one, got2.append, creds=certs.member(2))
    t3 = PeerTransport(3, one, got3.append, creds=certs.member(3))
    for t, p in ((t1, p1), (t2, p2), (t3, p3)):
        await t.start("127.0.0.1", p)
    try:
        snap = Snapshot(9000, 4, bytes(range(256)) * (5 * MAX_CHUNK // 256), ConfState((1, 2), (3,)))
        m = Message(MsgType.SNAP, to=2, frm=1, term=4, snapshot=snap)
        hb = Message(MsgType.HEARTBEAT, to=2, frm=1, term=4)
        await _wait(lambda: t1.connected()[2])
        t1.send([m, hb])
        await _wait(lambda: len(got2) == 2)
        assert got2 == [m, hb]  # in order, the snapshot reassembled from its frames

        # a member joined
        t1.set_peers({2: PeerAddr("127.0.0.1", p2, "node-2"), 3: PeerAddr("127.0.0.1", p3, "node-3")})
        await _wait(lambda: t1.connected().get(3, False))
        t1.send([dataclasses.replace(hb, to=3)])
        await _wait(lambda: len(got3) == 1)
        t3.blocked = {1}  # member 1 was removed: what it still sends is dropped
        t1.send([dataclasses.replace(hb, to=3, commit=5)])
        t1.set_peers({2: PeerAddr("127.0.0.1", p2, "node-2")})
        assert 3 not in t1.connected()
        await asyncio.sleep(0.1)
        assert len(got3) == 1
    finally:
        for t in (t1, t2, t3):
            await t.stop()


async def test_a_restarted_peer_is_redialled_at_once_so_the_first_message_after_it_is_not_lost(
        certs: ClusterCerts) -> None:
    p1, p2 = free_ports(2)
    peers = {1: PeerAddr("127.0.0.1", p1, "node-1"), 2: PeerAddr("127.0.0.1", p2, "node-2")}
    got2: list[Message] = []
    t1 = PeerTransport(1, peers, lambda _m: None, creds=certs.member(1))
    t2 = PeerTransport(2, peers, got2.append, creds=certs.member(2))
    await t1.start("127.0.0.1", p1)
    await t2.start("127.0.0.1", p2)
    try:
        await _wait(lambda: t1.connected()[2])
        await t2.stop()
        await _wait(lambda: not t1.connected()[2])  # noticed without sending anything
        t2 = PeerTransport(2, peers, got2.append, creds=certs.member(2))
        await t2.start("127.0.0.1", p2)
        await _wait(lambda: t1.connected()[2])
        vote = Message(MsgType.PRE_VOTE, to=2, frm=1, term=5)
        t1.send([vote])  # one message, as a campaign sends: it must arrive
        await _wait(lambda: got2 == [vote])
    finally:
        await t1.stop()
        await t2.stop()


async def test_a_dialler_hangs_up_on_a_server_that_is_not_the_node_it_meant_to_reach(certs: ClusterCerts) -> None:
    p1, p2, p3 = free_ports(3)
    got2: list[Message] = []
    t2 = PeerTransport(2, {1: PeerAddr("127.0.0.1", p1, "node-1")}, got2.append, creds=certs.member(2))
    wrong = PeerTransport(1, {2: PeerAddr("127.0.0.1", p2, "node-9")}, lambda _m: None, creds=certs.member(1))
    old = PeerTransport(3, {2: PeerAddr("127.0.0.1", p2, "")}, lambda _m: None, creds=certs.member(3))
    for t, p in ((t2, p2), (wrong, p1), (old, p3)):
        await t.start("127.0.0.1", p)
    try:
        await _wait(lambda: wrong.metrics.value("raft_peer_dials_refused_total") >= 1)
        wrong.send([Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)])
        old.send([Message(MsgType.HEARTBEAT, to=2, frm=3, term=1)])
        await asyncio.sleep(0.3)
        assert not wrong.connected()[2] and not old.connected()[2] and got2 == []
        wrong.set_peers({2: PeerAddr("127.0.0.1", p2, "node-2")})  # control: the right node id connects
        await _wait(lambda: wrong.connected()[2])
        wrong.send([Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)])
        await _wait(lambda: len(got2) == 1)
    finally:
        for t in (t2, wrong, old):
            await t.stop()


async def test_4_1_a_member_answers_a_dialler_its_table_does_not_know_yet_but_never_a_removed_one(
        certs: ClusterCerts) -> None:
    """Dissertation §4.1: members apply a change at different times. Member 2 has not applied the change that
    added member 3 (its table lacks 3), yet 3's candidacy needs 2's vote: 2 answers at the address of 3's hello."""
    p2, p3 = free_ports(2)
    got2: list[Message] = []
    got3: list[Message] = []
    t2 = PeerTransport(2, {}, got2.append, creds=certs.member(2))  # a lagging member: 3 is not in its table
    t3 = PeerTransport(3, {2: PeerAddr("127.0.0.1", p2, "node-2")}, got3.append, creds=certs.member(3))
    await t2.start("127.0.0.1", p2)
    await t3.start("127.0.0.1", p3)
    try:
        await _wait(lambda: t3.connected()[2])
        t3.send([Message(MsgType.PRE_VOTE, to=2, frm=3, term=6, index=40, log_term=5)])
        await _wait(lambda: len(got2) == 1)
        assert t2.remotes == {3: PeerAddr("127.0.0.1", p3, "node-3")} and 3 not in t2.connected(), \
            "a remote is no member; it is bound to the node id of the certificate it said hello with"
        grant = Message(MsgType.PRE_VOTE_RESP, to=3, frm=2, term=6)
        t2.send([grant])
        await _wait(lambda: got3 == [grant])

        t2.set_peers({})  # another membership change leaves 3 unknown: the remote stays reachable
        t2.send([dataclasses.replace(grant, term=7)])
        await _wait(lambda: len(got3) == 2)
        t2.blocked = {3}  # then 2 applies the removal of 3: never dialled again
        t2.set_peers({})
        assert 3 not in t2.remotes
        dropped = t2.metrics.value("raft_messages_dropped_total")
        t2.send([dataclasses.replace(grant, term=8)])
        assert t2.metrics.value("raft_messages_dropped_total") == dropped + 1
    finally:
        await t2.stop()
        await t3.stop()


async def test_a_known_members_certificate_cannot_say_hello_as_another_member(certs: ClusterCerts) -> None:
    """Member 1's certificate (node-1) saying hello as member 3: a stranger's id is not taken from a known node."""
    p1, p2 = free_ports(2)
    got2: list[Message] = []
    t2 = PeerTransport(2, {1: PeerAddr("127.0.0.1", p1, "node-1")}, got2.append, creds=certs.member(2))
    liar = PeerTransport(3, {2: PeerAddr("127.0.0.1", p2, "node-2")}, lambda _m: None, creds=certs.member(1))
    await t2.start("127.0.0.1", p2)
    await liar.start("127.0.0.1", p1)
    try:
        await _wait(lambda: liar.connected()[2])
        liar.send([Message(MsgType.VOTE, to=2, frm=3, term=9)])
        await _wait(lambda: t2.metrics.value("raft_peer_messages_refused_total") >= 2)
        assert got2 == [] and 3 not in t2.remotes
    finally:
        await t2.stop()
        await liar.stop()


def test_a_hello_is_told_apart_from_every_message() -> None:
    assert decode_hello(encode_hello(7, "10.0.0.7", 4317)) == (7, "10.0.0.7", 4317)
    assert decode_hello(encode_message(Message(MsgType.VOTE, to=1, frm=2))) is None
    with pytest.raises(DecodeError):
        decode_hello(encode_hello(7, "h", 1)[:-1])
