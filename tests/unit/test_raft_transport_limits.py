"""The peer transport's bounds against a member that misbehaves on the wire (issue 16): messages over the size
limit, frames left half-sent, too many connections from one peer or in all — each closes what it must and
counts it, and a well-behaved connection still delivers afterwards."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.raftstore.codec import encode_message
from services.raftstore.raft import Message, MsgType
from services.raftstore.transport import MAX_CHUNK, MORE, PeerAddr, PeerTransport, frames
from shoal.transport import peer_client_context
from tests.integration.raftprocs import ClusterCerts, free_ports

HB = Message(MsgType.HEARTBEAT, to=2, frm=1, term=3)


@pytest.fixture
def certs(tmp_path: Path) -> ClusterCerts:
    return ClusterCerts(tmp_path)


@pytest.fixture
async def member(certs: ClusterCerts) -> AsyncIterator[tuple[PeerTransport, list[Message], int]]:
    (port,) = free_ports(1)
    got: list[Message] = []
    t = PeerTransport(2, {1: PeerAddr("127.0.0.1", 9, "node-1")}, got.append, creds=certs.member(2),
                      max_message=3 * MAX_CHUNK, frame_timeout=0.5, max_conns_per_peer=2, max_conns=4)
    await t.start("127.0.0.1", port)
    try:
        yield t, got, port
    finally:
        await t.stop()


async def dial(certs: ClusterCerts, port: int, i: int = 1) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, ssl=peer_client_context(certs.member(i)),
                                         server_hostname="")


async def closed(reader: asyncio.StreamReader, within: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except (TimeoutError, ConnectionError):
        return False


async def delivers(certs: ClusterCerts, port: int, got: list[Message]) -> None:
    """Control: a well-behaved connection is heard."""
    _, w = await dial(certs, port)
    n = len(got)
    w.write(b"".join(frames(encode_message(HB))))
    for _ in range(100):
        if len(got) > n:
            break
        await asyncio.sleep(0.02)
    w.close()
    assert got[n:] == [HB]


async def test_a_message_over_the_limit_closes_its_connection(
        certs: ClusterCerts, member: tuple[PeerTransport, list[Message], int]) -> None:
    t, got, port = member
    r, w = await dial(certs, port)
    chunk = b"\0" * MAX_CHUNK
    for _ in range(4):  # 4 MiB announced as one message, over the 3 MiB limit
        w.write(struct.pack("<I", MAX_CHUNK | MORE) + chunk)
    assert await closed(r)
    assert t.metrics.value("raft_peer_frames_refused_total") >= 1 and t.buffered == 0
    r, w = await dial(certs, port)
    w.write(struct.pack("<I", MAX_CHUNK + 1))  # one frame over the frame limit
    assert await closed(r)
    await delivers(certs, port, got)


async def test_a_half_sent_frame_is_not_waited_for(certs: ClusterCerts,
                                                   member: tuple[PeerTransport, list[Message], int]) -> None:
    t, got, port = member
    r, w = await dial(certs, port)
    w.write(struct.pack("<I", 100) + b"x" * 10)  # 10 of 100 bytes, then nothing
    assert await closed(r, 3.0)
    r2, w2 = await dial(certs, port)
    w2.write(b"\x05\x00")  # half a length
    assert await closed(r2, 3.0)
    assert t.metrics.value("raft_peer_frames_refused_total") >= 2
    r3, w3 = await dial(certs, port)  # an idle connection between messages is fine
    assert not await closed(r3, 1.0)
    w3.close()
    await delivers(certs, port, got)


async def test_connections_are_capped_per_peer_and_in_all(certs: ClusterCerts,
                                                          member: tuple[PeerTransport, list[Message], int]) -> None:
    t, got, port = member
    first = [await dial(certs, port) for _ in range(2)]
    third = await dial(certs, port)
    assert await closed(first[0][0]), "past the per-peer cap, the oldest connection goes"
    assert not await closed(third[0], 0.5)
    others = [await dial(certs, port, 3) for _ in range(2)] + [await dial(certs, port, 4) for _ in range(2)]
    assert any([await closed(r, 1.0) for r, _ in others]), "past the total cap, new connections are refused"
    for _, w in [*first, third, *others]:
        w.close()
    await asyncio.sleep(0.2)
    await delivers(certs, port, got)
    assert t.metrics.value("raft_peer_connections_refused_total") >= 2
