"""PeerTransport: Raft messages between members over their own TCP port (never NATS, never the HTTP API).

Each member listens on its peer address and keeps one outgoing connection per peer. Frames are
`u32 length | part of an encoded message` (codec.py): a message larger than MAX_CHUNK (1 MiB; a snapshot, or
an append carrying a large entry) goes out as several frames, each but the last with the MORE bit set in its
length, and the receiver joins them before decoding — up to MAX_MESSAGE (a whole snapshot), with at most that
much (plus 16 MiB) partly received over all connections; a frame begun and not finished within FRAME_TIMEOUT
closes its connection, and a peer node keeps at most MAX_CONNS_PER_PEER accepted connections (MAX_CONNS in all).
What a received message claims is checked by the core (raft/sanity.py) and the driver (wirecheck.py).

Sending never blocks the driver: each peer has a bounded queue that
a writer task drains, batching whatever is queued into one write; when the queue is full the message is
dropped, which Raft tolerates (heartbeats and appends are retried). A broken connection is re-dialled with
backoff, dropping what was queued for it.

Every connection is mutual TLS (shoal.transport's peer contexts; no host name check, since fault-injecting
proxies sit between members in the tests): a peer is known by its certificate, never by its address.
- Accepting: the dialler must present a `raftstore` certificate of a manager of this cluster, or the
  connection is closed; each message it sends must come `frm` a member whose node id (the member table) is the
  certificate's CN, or it is dropped and counted (`raft_peer_messages_refused_total`).
- Dialling: the server must present the `raftstore` certificate of the node id we meant to reach; a member
  without a node id (data written before mutual TLS) is not dialled until it is re-added with one.

Each connection opens with a hello (codec.encode_hello): the dialling member's id and peer address. A member
whose table does not know the dialler yet — it has not applied the change that added it, say it was down for a
while — keeps that address as a *remote*, bound to the node id of the certificate the hello came with, and can
answer it (a vote grant to a candidate of a configuration it has not applied, dissertation §4.1); without it a
lagging member's vote could never reach the candidate that needs it, and the cluster could stay leaderless
(issue 17). The member table wins over remotes (a certificate of a known member cannot claim another id), and a
removed id is never dialled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from services.raftstore.codec import DecodeError, decode_hello, decode_message, encode_hello, encode_message
from services.raftstore.raft import Message
from shoal import pki
from shoal.metrics import Registry
from shoal.pki import Identity
from shoal.transport import Credentials, peer_client_context, peer_identity, peer_server_context

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
MORE = 1 << 31  # in a frame's length: more frames of the same message follow
MAX_CHUNK = 1 << 20  # no frame carries more than this
#: a reassembled message larger than this is refused: the largest legitimate message is a snapshot of the whole
#: store (SHOAL_RAFT_MAX_MESSAGE; the leader warns when its snapshot outgrows it, docs/operations.md)
MAX_MESSAGE = 256 << 20
#: once a frame has begun, each further read of it (and of the message's next frames) must come within this
FRAME_TIMEOUT = 10.0
#: accepted connections per peer node (the oldest is closed for a new one: a peer that restarted behind a
#: partition may have left half-open ones) and in all
MAX_CONNS_PER_PEER = 4
MAX_CONNS = 64
PEER_COMPONENT = "raftstore"
HANDSHAKE_TIMEOUT = 5.0
LOG_EVERY = 10.0  # seconds between two log lines about the same refused peer


class PeerAddr(NamedTuple):
    """Where a member listens for raft peers, and the node id its certificate must carry."""

    host: str
    port: int
    node_id: str


class LogLimiter:
    """At most one line per key every `every` seconds (refusals can come at line rate)."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.every) >= self.every:
            if len(self._last) > 1024:
                self._last.clear()
            self._last[key] = now
            log.warning(msg, *args)


def refuse_peer(ident: Identity | None, cluster_id: str) -> str | None:
    """Why a connection's certificate may not speak raft to us (None: it may)."""
    if ident is None:
        return "it presented no certificate"
    if ident.cluster_id != cluster_id:
        return f"its certificate belongs to cluster {ident.cluster_id!r}"
    if ident.role != pki.MANAGER or ident.component != PEER_COMPONENT:
        return f"it is the {ident.describe()}, not a raftstore member"
    return None


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
    def __init__(self, peer_id: int, addr: PeerAddr, queue_size: int, creds: Credentials, metrics: Registry,
                 limiter: LogLimiter, *, remote: bool = False) -> None:
        self.id = peer_id
        self.addr = addr
        self.host, self.port = addr.host, addr.port
        self.creds, self.metrics, self.limiter = creds, metrics, limiter
        #: known from the peer's own hello, not from the member table
        self.remote = remote
        #: sent first on every connection (set by the transport once it listens)
        self.hello = b""
        self.queue: deque[Message] = deque()
        self.queue_size = queue_size
        self.max_message = MAX_MESSAGE
        self.ready = asyncio.Event()
        self.connected = False
        self.stopped = False
        #: the connection's writer while the pump waits for messages with nothing buffered: `kick` may then
        #: write in the caller's turn instead of waking the pump (one event-loop hop less per message batch)
        self._idle_writer: asyncio.StreamWriter | None = None

    def enqueue(self, m: Message) -> bool:
        """Queue `m`; `kick` sends what is queued."""
        if len(self.queue) >= self.queue_size:
            return False
        self.queue.append(m)
        return True

    def kick(self) -> None:
        """Send the queued messages: at once when the connection is idle (the pump is waiting and the socket's
        buffer is empty), else by waking the pump. Order is kept: an idle pump has nothing queued before."""
        writer = self._idle_writer
        if writer is not None and not writer.is_closing() and writer.transport.get_write_buffer_size() == 0:
            data = self._encode_queued()
            if data:
                writer.write(data)
            return
        self.ready.set()

    def _encode_queued(self) -> bytes:
        parts: list[bytes] = []
        while self.queue:
            m = self.queue.popleft()
            body = encode_message(m)
            if len(body) > self.max_message:
                self.metrics.inc("raft_messages_too_large_total", 1, "raft messages over the peer size limit")
                self.limiter.warning(f"too-large:{self.id}", "transport: a %s of %d bytes to member %d is over "
                                     "the %d-byte limit (SHOAL_RAFT_MAX_MESSAGE) and was not sent; raise the "
                                     "limit on every member", m.type.name, len(body), self.id, self.max_message)
                continue
            parts.extend(frames(body))
        return b"".join(parts)

    def _refuse_server(self, writer: asyncio.StreamWriter) -> str | None:
        ident = peer_identity(writer.get_extra_info("ssl_object"))
        why = refuse_peer(ident, self.creds.identity.cluster_id)
        if why is None and ident is not None and ident.node_id != self.addr.node_id:
            why = f"its certificate names node {ident.node_id!r}, not member {self.id}'s node {self.addr.node_id!r}"
        return why

    async def run(self) -> None:
        backoff = 0.05
        while not self.stopped:
            if not self.addr.node_id:
                self.queue.clear()
                self.limiter.warning(f"no-node-id:{self.id}", "transport: member %d has no node id (it was added "
                                     "before mutual TLS): it cannot be peered with; remove it and add it again "
                                     "with its node_id", self.id)
                await asyncio.sleep(0.5)
                continue
            try:
                async with asyncio.timeout(2.0):
                    reader, writer = await asyncio.open_connection(
                        self.host, self.port, ssl=peer_client_context(self.creds), server_hostname="")
            except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
                self.queue.clear()  # stale by the time we reconnect; Raft re-sends what matters
                log.debug("transport: dial %d at %s:%d failed: %s", self.id, self.host, self.port, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            why = self._refuse_server(writer)
            if why is not None:
                self.queue.clear()
                self.metrics.inc("raft_peer_dials_refused_total", 1, "peer connections we hung up on (wrong server)")
                self.limiter.warning(f"dial:{self.id}", "transport: hanging up on %s:%d (member %d): %s",
                                     self.host, self.port, self.id, why)
                writer.close()
                await asyncio.sleep(0.5)
                continue
            backoff = 0.05
            self.connected = True
            log.debug("transport: connected to member %d at %s:%d", self.id, self.host, self.port)
            if self.hello:
                writer.write(b"".join(frames(self.hello)))
            # The peer never writes on this connection, so a read returns only when it closed or reset it (it
            # died or restarted): notice that at once and re-dial, rather than on the second write into a dead
            # socket — that first message (a vote, a grant) would be lost and cost a whole election timeout.
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
        try:
            while not self.stopped:
                if not self.queue:
                    self.ready.clear()
                    self._idle_writer = writer
                    try:
                        await self.ready.wait()
                    finally:
                        self._idle_writer = None
                data = self._encode_queued()
                if data:
                    writer.write(data)
                await writer.drain()  # also what `kick` wrote meanwhile
                if writer.is_closing():
                    raise ConnectionResetError("peer closed the connection")
        finally:
            self._idle_writer = None


class PeerTransport:
    def __init__(self, self_id: int, peers: Mapping[int, PeerAddr], deliver: Callable[[Message], None],
                 *, creds: Credentials, queue_size: int = 4096, metrics: Registry | None = None,
                 max_message: int = MAX_MESSAGE, frame_timeout: float = FRAME_TIMEOUT,
                 max_conns_per_peer: int = MAX_CONNS_PER_PEER, max_conns: int = MAX_CONNS) -> None:
        """`peers`: every member's address and node id; `deliver` takes each received message; `creds`: this
        member's raftstore certificate; the rest bound what a connection may hold (module doc)."""
        self.id = self_id
        self.max_message, self.frame_timeout = max_message, frame_timeout
        self.max_conns_per_peer, self.max_conns = max_conns_per_peer, max_conns
        #: bytes of partly received messages, over every connection (bounded by max_message + 16 MiB)
        self.buffered = 0
        #: accepted connections of each peer node, oldest first
        self._conns_of: dict[str, list[asyncio.StreamWriter]] = {}
        self.deliver = deliver
        self.creds = creds
        self.metrics = metrics or Registry()
        self.queue_size = queue_size
        self.limiter = LogLimiter()
        self._peers: dict[int, _Peer] = {}
        #: certificate CN -> the member ids it may send as
        self._ids_of_node: dict[str, frozenset[int]] = {}
        #: removed members: whatever they still send is dropped (their ids never come back)
        self.blocked: set[int] = set()
        #: members outside the table that dialled us: id -> the address of their hello and their certificate's CN
        self.remotes: dict[int, PeerAddr] = {}
        self._hello = b""
        self._stopping = False
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.set_peers(peers)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=peer_server_context(self.creds),
                                                  ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self._hello = encode_hello(self.id, host, self.port)
        for p in self._peers.values():
            p.hello = self._hello
            self._tasks.append(asyncio.create_task(p.run(), name=f"raft.peer.{p.id}"))

    def set_peers(self, peers: Mapping[int, PeerAddr]) -> None:
        """Follow a membership change: dial new members, hang up on removed ones (and on remotes removed)."""
        ids: dict[str, set[int]] = {}
        for pid, addr in peers.items():
            if addr.node_id and pid != self.id:
                ids.setdefault(addr.node_id, set()).add(pid)
        self._ids_of_node = {n: frozenset(v) for n, v in ids.items()}
        for pid in [p for p, peer in self._peers.items()
                    if p not in peers and (not peer.remote or p in self.blocked)]:
            peer = self._peers.pop(pid)
            peer.stopped = True
            peer.ready.set()
        for pid, addr in peers.items():
            have = self._peers.get(pid)
            self.remotes.pop(pid, None)  # the table knows it now
            if pid == self.id or (have is not None and have.addr == addr):
                if have is not None:
                    have.remote = False
                continue
            if have is not None:
                have.stopped = True
                have.ready.set()
            self._add_peer(pid, addr, remote=False)
        for pid in [p for p in self.remotes if p in self.blocked]:
            del self.remotes[pid]

    def _add_peer(self, pid: int, addr: PeerAddr, *, remote: bool) -> _Peer:
        peer = _Peer(pid, addr, self.queue_size, self.creds, self.metrics, self.limiter, remote=remote)
        peer.hello = self._hello
        peer.max_message = self.max_message
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
        touched: dict[int, _Peer] = {}
        for m in msgs:
            peer = self._peers.get(m.to)
            if peer is None and m.to in self.remotes and m.to not in self.blocked:
                peer = self._add_peer(m.to, self.remotes[m.to], remote=True)
            if peer is None or not peer.enqueue(m):
                dropped += 1
            else:
                touched[m.to] = peer
        for peer in touched.values():
            peer.kick()
        if dropped:
            self.metrics.inc("raft_messages_dropped_total", dropped, "raft messages dropped (queue full/unknown)")

    def connected(self) -> dict[int, bool]:
        """The members of the table we are connected to (remotes are not members)."""
        return {pid: p.connected for pid, p in self._peers.items() if not p.remote}

    def _refused(self, name: str, key: str, msg: str, *args: object) -> None:
        self.metrics.inc(name, 1, "raft peer connections, frames or messages refused (certificate, limits)")
        self.limiter.warning(key, msg, *args)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._stopping:
            # accepted while stopping (the TLS handshake ended after stop() closed the others): close it too,
            # or the dialler would wait on a connection nobody reads
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._conns[task] = writer
        ident = peer_identity(writer.get_extra_info("ssl_object"))
        why = refuse_peer(ident, self.creds.identity.cluster_id)
        if why is not None or ident is None:
            self._refused("raft_peer_connections_refused_total", f"conn:{why}", "transport: refusing a raft peer "
                          "connection from %s: %s", writer.get_extra_info("peername"), why)
            writer.close()
            if task is not None:
                self._conns.pop(task, None)
            return
        node_id = ident.node_id
        if not self._admit(node_id, writer):
            if task is not None:
                self._conns.pop(task, None)
            return
        try:
            while True:
                body = await self._read_message(reader, writer)
                if body is None:
                    return
                hello = decode_hello(body)
                if hello is not None:
                    self._heard_hello(*hello, node_id=node_id)
                    continue
                try:
                    msg = decode_message(body)
                except DecodeError as e:
                    self.metrics.inc("raft_messages_undecodable_total", 1, "peer frames that did not decode")
                    self.limiter.warning(f"undecodable:{node_id}", "transport: dropping an undecodable frame from "
                                         "node %s: %s", node_id, e)
                    continue
                if msg.to != self.id or msg.frm in self.blocked:
                    continue
                remote = self.remotes.get(msg.frm)
                if msg.frm not in self._ids_of_node.get(node_id, ()) and (remote is None or remote.node_id != node_id):
                    self._refused("raft_peer_messages_refused_total", f"frm:{node_id}:{msg.frm}",
                                  "transport: dropping raft messages from member %d sent with the certificate of "
                                  "node %s, which is not that member's", msg.frm, node_id)
                    continue
                self.deliver(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, asyncio.CancelledError):  # incl. SSLError
            pass  # the peer went away, or we are stopping: either way this connection is done
        finally:
            writer.close()
            if task is not None:
                self._conns.pop(task, None)
            conns = self._conns_of.get(node_id, [])
            if writer in conns:
                conns.remove(writer)
            if not conns:
                self._conns_of.pop(node_id, None)

    def _admit(self, node_id: str, writer: asyncio.StreamWriter) -> bool:
        """Count a new connection of `node_id`: past the per-peer cap its oldest connection is closed, past the
        total cap the new one is refused."""
        conns = self._conns_of.setdefault(node_id, [])
        if len(self._conns) > self.max_conns:
            if not conns:
                self._conns_of.pop(node_id, None)
            self._refused("raft_peer_connections_refused_total", "conn:total", "transport: refusing a raft peer "
                          "connection from node %s: %d connections are open already", node_id, len(self._conns) - 1)
            writer.close()
            return False
        while len(conns) >= self.max_conns_per_peer:
            self._refused("raft_peer_connections_refused_total", f"conn:per-peer:{node_id}", "transport: node %s "
                          "opened more than %d raft connections: closing its oldest", node_id,
                          self.max_conns_per_peer)
            conns.pop(0).close()
        conns.append(writer)
        return True

    async def _read_message(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """The next whole message (its frames joined), or None when the connection must be closed: a frame or
        message over the limits, or a frame left half-sent for `frame_timeout`. Between messages a connection
        may stay idle (a follower may have nothing to say to a follower)."""
        chunks: list[bytes] = []
        size = held = 0
        first = await reader.readexactly(1)  # idle until a message begins
        try:
            while True:
                async with asyncio.timeout(self.frame_timeout):
                    (n,) = _LEN.unpack(first + await reader.readexactly(_LEN.size - len(first)))
                first = b""
                more, n = n & MORE, n & ~MORE
                size += n
                if n > MAX_CHUNK or size > self.max_message or self.buffered + n > self.max_message + (16 << 20):
                    self._refused("raft_peer_frames_refused_total", f"size:{writer.get_extra_info('peername')}",
                                  "transport: refusing an oversized frame (%d bytes, message so far %d, limit %d) "
                                  "from %s", n, size, self.max_message, writer.get_extra_info("peername"))
                    return None
                self.buffered += n
                held += n
                async with asyncio.timeout(self.frame_timeout):
                    chunks.append(await reader.readexactly(n))
                if not more:
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except TimeoutError:
            self._refused("raft_peer_frames_refused_total", f"slow:{writer.get_extra_info('peername')}",
                          "transport: closing a raft peer connection from %s: a frame was left half-sent for %.0fs",
                          writer.get_extra_info("peername"), self.frame_timeout)
            return None
        finally:
            self.buffered -= held

    def _heard_hello(self, pid: int, host: str, port: int, *, node_id: str) -> None:
        """A dialler's hello: remember a member our table lacks as a remote (bound to its certificate's node)."""
        if pid == self.id or pid in self.blocked:
            return
        peer = self._peers.get(pid)
        if peer is not None and not peer.remote:
            return  # the member table's address wins
        known = self._ids_of_node.get(node_id)
        if known is not None and pid not in known:
            self._refused("raft_peer_messages_refused_total", f"hello:{node_id}:{pid}", "transport: node %s, a "
                          "member under ids %s, said hello as member %d: ignored", node_id, sorted(known), pid)
            return
        addr = PeerAddr(host, port, node_id)
        self.remotes[pid] = addr
        if peer is not None and peer.addr != addr:
            peer.stopped = True  # it moved (restarted elsewhere): dial the new address on the next send
            peer.ready.set()
            del self._peers[pid]

    async def stop(self) -> None:
        self._stopping = True
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
