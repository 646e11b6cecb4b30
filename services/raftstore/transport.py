"""PeerTransport: Raft messages between members over their own TCP port (never NATS, never the HTTP API).

Each member listens on its peer address and keeps one outgoing connection per peer. Frames are
`u32 length | part of an encoded message` (codec.py): a message larger than MAX_CHUNK (1 MiB; a snapshot, or
an append carrying a large entry) goes out as several frames, each but the last with the MORE bit set in its
length, and the receiver joins them before decoding. Sending never blocks the driver: each peer has a bounded queue that
a writer task drains, batching whatever is queued into one write; when the queue is full the message is
dropped, which Raft tolerates (heartbeats and appends are retried). A broken connection is re-dialled with
backoff, dropping what was queued for it.

Each connection opens with a hello (codec.encode_hello): the dialling member's id and peer address. A member
whose table does not know the dialler yet — it has not applied the change that added it, say it was down for a
while — keeps that address as a *remote* and can answer it (a vote grant to a candidate of a configuration it
has not applied, dissertation §4.1); without it a lagging member's vote could never reach the candidate that
needs it, and the cluster could stay leaderless (issue 17). The member table wins over remotes, and a removed
id is never dialled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from services.raftstore.codec import DecodeError, decode_hello, decode_message, encode_hello, encode_message
from services.raftstore.raft import Message
from shoal.metrics import Registry

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
MORE = 1 << 31  # in a frame's length: more frames of the same message follow
MAX_CHUNK = 1 << 20  # no frame carries more than this
MAX_MESSAGE = 1 << 31  # a reassembled message larger than this is refused


def frames(body: bytes, max_chunk: int = MAX_CHUNK) -> list[bytes]:
    """`body` as length-prefixed frames of at most `max_chunk` bytes each."""
    if len(body) <= max_chunk:
        return [_LEN.pack(len(body)), body]
    view = memoryview(body)
    parts: list[bytes] = []
    for at in range(0, len(body), max_chunk):
        chunk = view[at:at + max_chunk]
        more = MORE if at + max_chunk < len(body) else 0
        parts.append(_LEN.pack(len(chunk) | more))
        parts.append(bytes(chunk))
    return parts


class _Peer:
    def __init__(self, peer_id: int, host: str, port: int, queue_size: int, *, remote: bool = False) -> None:
        self.id = peer_id
        self.host, self.port = host, port
        #: known from the peer's own hello, not from the member table
        self.remote = remote
        #: sent first on every connection (set by the transport once it listens)
        self.hello = b""
        self.queue: deque[Message] = deque()
        self.queue_size = queue_size
        self.ready = asyncio.Event()
        self.connected = False
        self.stopped = False

    def enqueue(self, m: Message) -> bool:
        if len(self.queue) >= self.queue_size:
            return False
        self.queue.append(m)
        self.ready.set()
        return True

    async def run(self) -> None:
        backoff = 0.05
        while not self.stopped:
            try:
                async with asyncio.timeout(2.0):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as e:
                self.queue.clear()  # stale by the time we reconnect; Raft re-sends what matters
                log.debug("transport: dial %d at %s:%d failed: %s", self.id, self.host, self.port, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            backoff = 0.05
            self.connected = True
            log.debug("transport: connected to member %d at %s:%d", self.id, self.host, self.port)
            # The peer never writes on this connection, so a read returns only when it closed or reset it (it
            # died or restarted): notice that at once and re-dial, rather than on the second write into a dead
            # socket — that first message (a vote, a grant) would be lost and cost a whole election timeout.
            if self.hello:
                writer.write(b"".join(frames(self.hello)))
            pump = asyncio.create_task(self._pump(writer))
            closed = asyncio.create_task(reader.read(1))
            try:
                done, _ = await asyncio.wait({pump, closed}, return_when=asyncio.FIRST_COMPLETED)
                if pump in done:
                    pump.result()
                else:
                    log.info("transport: member %d closed the connection", self.id)
            except (OSError, asyncio.IncompleteReadError) as e:
                log.info("transport: connection to member %d lost: %s", self.id, e)
            finally:
                for t in (pump, closed):
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
                self.connected = False
                self.queue.clear()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _pump(self, writer: asyncio.StreamWriter) -> None:
        while not self.stopped:
            if not self.queue:
                self.ready.clear()
                await self.ready.wait()
            parts: list[bytes] = []
            while self.queue:
                parts.extend(frames(encode_message(self.queue.popleft())))
            writer.write(b"".join(parts))
            await writer.drain()
            if writer.is_closing():
                raise ConnectionResetError("peer closed the connection")


class PeerTransport:
    def __init__(self, self_id: int, peers: Mapping[int, tuple[str, int]], deliver: Callable[[Message], None],
                 *, queue_size: int = 4096, metrics: Registry | None = None) -> None:
        """`peers`: every other member's (host, port); `deliver` takes each received message."""
        self.id = self_id
        self.deliver = deliver
        self.metrics = metrics or Registry()
        self.queue_size = queue_size
        self._peers = {pid: _Peer(pid, h, p, queue_size) for pid, (h, p) in peers.items() if pid != self_id}
        #: removed members: whatever they still send is dropped (their ids never come back)
        self.blocked: set[int] = set()
        #: members outside the table that dialled us: id -> the peer address of their hello
        self.remotes: dict[int, tuple[str, int]] = {}
        self._hello = b""
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self._hello = encode_hello(self.id, host, self.port)
        for p in self._peers.values():
            p.hello = self._hello
            self._tasks.append(asyncio.create_task(p.run(), name=f"raft.peer.{p.id}"))

    def set_peers(self, peers: Mapping[int, tuple[str, int]]) -> None:
        """Follow a membership change: dial new members, hang up on removed ones (and on remotes removed)."""
        for pid in [p for p, peer in self._peers.items()
                    if p not in peers and (not peer.remote or p in self.blocked)]:
            peer = self._peers.pop(pid)
            peer.stopped = True
            peer.ready.set()
        for pid, (host, port) in peers.items():
            have = self._peers.get(pid)
            self.remotes.pop(pid, None)  # the table knows it now
            if pid == self.id or (have is not None and (have.host, have.port) == (host, port)):
                if have is not None:
                    have.remote = False
                continue
            if have is not None:
                have.stopped = True
                have.ready.set()
            self._add_peer(pid, host, port, remote=False)
        for pid in [p for p in self.remotes if p in self.blocked]:
            del self.remotes[pid]

    def _add_peer(self, pid: int, host: str, port: int, *, remote: bool) -> _Peer:
        peer = _Peer(pid, host, port, self.queue_size, remote=remote)
        peer.hello = self._hello
        self._peers[pid] = peer
        if self._server is not None:
            self._tasks.append(asyncio.create_task(peer.run(), name=f"raft.peer.{pid}"))
        return peer

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def send(self, msgs: Sequence[Message]) -> None:
        dropped = 0
        for m in msgs:
            peer = self._peers.get(m.to)
            if peer is None and m.to in self.remotes and m.to not in self.blocked:
                peer = self._add_peer(m.to, *self.remotes[m.to], remote=True)
            if peer is None or not peer.enqueue(m):
                dropped += 1
        if dropped:
            self.metrics.inc("raft_messages_dropped_total", dropped, "raft messages dropped (queue full/unknown)")

    def connected(self) -> dict[int, bool]:
        """The members of the table we are connected to (remotes are not members)."""
        return {pid: p.connected for pid, p in self._peers.items() if not p.remote}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns[task] = writer
        try:
            while True:
                chunks: list[bytes] = []
                size = 0
                while True:
                    (n,) = _LEN.unpack(await reader.readexactly(_LEN.size))
                    more, n = n & MORE, n & ~MORE
                    size += n
                    if n > MAX_CHUNK or size > MAX_MESSAGE:
                        log.warning("transport: refusing an oversized frame (%d bytes, message so far %d) from "
                                    "%s", n, size, writer.get_extra_info("peername"))
                        return
                    chunks.append(await reader.readexactly(n))
                    if not more:
                        break
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                try:
                    hello = decode_hello(body)
                    if hello is not None:
                        self._heard_hello(*hello)
                        continue
                    msg = decode_message(body)
                except DecodeError as e:
                    log.warning("transport: dropping an undecodable frame: %s", e)
                    self.metrics.inc("raft_messages_undecodable_total", 1, "peer frames that did not decode")
                    continue
                if msg.to != self.id or msg.frm in self.blocked:
                    continue
                self.deliver(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):
            pass  # the peer went away, or we are stopping: either way this connection is done
        finally:
            writer.close()
            if task is not None:
                self._conns.pop(task, None)

    def _heard_hello(self, pid: int, host: str, port: int) -> None:
        if pid == self.id or pid in self.blocked:
            return
        peer = self._peers.get(pid)
        if peer is not None and not peer.remote:
            return  # the member table's address wins
        self.remotes[pid] = (host, port)
        if peer is not None and (peer.host, peer.port) != (host, port):
            peer.stopped = True  # it moved (restarted elsewhere): dial the new address on the next send
            peer.ready.set()
            del self._peers[pid]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for p in self._peers.values():
            p.stopped = True
            p.ready.set()
        for w in self._conns.values():
            w.close()  # ends each connection's reader with EOF
        tasks = [*self._tasks, *self._conns]
        while tasks:
            for t in tasks:
                t.cancel()  # again each round: a cancel racing a finishing await can be absorbed
            _, pending = await asyncio.wait(tasks, timeout=0.5)
            tasks = list(pending)
        self._tasks.clear()
