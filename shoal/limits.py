"""Resource limits every shoal server applies to whoever connects (issue 16), and the logging that cannot be
flooded or forged.

- `Limits`: ASGI middleware in front of the Guard. A request body over `max_body` is refused with 413 (by its
  Content-Length before anything is read, or while it streams in: the body is read at most once, bounded), and
  beyond `max_concurrency` requests in progress a clear 503 `overloaded` answers at once (ops routes always pass,
  so health checks see a busy process, not a dead one).
- `guard_connections`: the connection-level bounds of our uvicorn protocol (shoal.transport): at most
  `max_connections` open connections (more are closed on arrival, before any byte is read), and a request
  whose headers are not complete within `header_timeout` seconds is closed (slow-header floods).
- `bound_tls_connections`: a 32 KiB TLS read buffer per connection (not asyncio's 256 KiB) and the TLS
  handshake bounded by the header timeout (not asyncio's 60 s), so half-open connections are cheap and short.
- `raise_fd_limit`: the soft RLIMIT_NOFILE up to the hard limit, so the connection bound — not the kernel —
  is what refuses the excess (and the process keeps descriptors for its store, WAL and peers: `FD_HEADROOM`).
- `LogGuard`: a logging filter on the root handlers that escapes control characters in every message (a
  hostname with a newline cannot forge a line) and lets through at most `burst` records per kind (logger,
  level, message template) per `interval`, counting the ones it held back in the next line of that kind.

Every number has an environment override (`SHOAL_MAX_BODY`, `SHOAL_MAX_CONCURRENCY`, `SHOAL_MAX_CONNECTIONS`,
`SHOAL_HEADER_TIMEOUT`), documented in docs/operations.md."""

from __future__ import annotations

import asyncio
import asyncio.constants
import asyncio.sslproto
import json
import logging
import os
import re
import resource
import time
from dataclasses import dataclass, field
from typing import Any

#: requests bodies: a 1,000 KiB secret or config in base64 inside JSON is ~1.4 MB; the store's transactions are
#: at most 1.5 MiB (shoal.store.txn.MAX_TXN_BYTES)
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 2048  # long polls (agents, watches) count too
DEFAULT_MAX_CONNECTIONS = 8192
DEFAULT_HEADER_TIMEOUT = 10.0
#: descriptors kept free of client connections (WAL, snapshots, raft peers, outgoing clients, NATS)
FD_HEADROOM = 256
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


#: what this process refused since it started, whatever server or subscriber refused it; exported on every
#: app's /metrics as `shoal_refused{what=...}`-style gauges by shoal.http.instrument (docs/operations.md)
REFUSED: dict[str, int] = {"body_too_large": 0, "overloaded": 0, "connections_over_limit": 0, "slow_headers": 0,
                           "nats_messages": 0}
#: the metric name of each count (a gauge read at scrape; the counts only grow)
REFUSED_METRICS = {
    "body_too_large": ("server_bodies_refused", "requests refused with 413: body over SHOAL_MAX_BODY"),
    "overloaded": ("server_requests_shed", "requests refused with 503: over SHOAL_MAX_CONCURRENCY in progress"),
    "connections_over_limit": ("server_connections_refused", "connections aborted on arrival: over "
                               "SHOAL_MAX_CONNECTIONS open"),
    "slow_headers": ("server_slow_connections_cut", "connections cut: no complete request headers within "
                     "SHOAL_HEADER_TIMEOUT"),
    "nats_messages": ("nats_messages_dropped", "NATS messages dropped: not a JSON object, or failing their "
                      "handler"),
}


def count_refused(what: str, n: int = 1) -> None:
    REFUSED[what] += n


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class ServerLimits:
    max_body: int = DEFAULT_MAX_BODY
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    @classmethod
    def from_env(cls) -> ServerLimits:
        return cls(max_body=int(_env_number("SHOAL_MAX_BODY", DEFAULT_MAX_BODY)),
                   max_concurrency=int(_env_number("SHOAL_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY)),
                   max_connections=int(_env_number("SHOAL_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)),
                   header_timeout=_env_number("SHOAL_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT))


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


#: the TLS read buffer of each connection. asyncio allocates 256 KiB per TLS connection (SSLProtocol.max_size),
#: before the handshake even completes: 500 half-open connections cost 150 MB (measured,
#: tests/e2e/test_hostile_floods.py). A TLS record is at most 16 KiB plus overhead, so 32 KiB reads lose nothing.
TLS_READ_BUFFER = 32 * 1024
#: the largest piece a server hands its TLS transport at once. asyncio encrypts each write whole into the
#: connection's outgoing memory BIO before sending, and an OpenSSL memory BIO never gives back what it grew to:
#: a connection that once sent a 1 MB answer kept ~1 MB for its life (issue 13: at 1,000 nodes the dispatcher's
#: session polls, each connection as large as the largest assignment message it carried). In pieces of one TLS
#: record (16 KiB of plaintext) each BIO stays at ~17 KiB, at the cost of one send per 16 KiB of a large answer.
TLS_WRITE_PIECE = 16 * 1024


def bound_tls_connections(handshake_timeout: float) -> None:
    """What a connection costs before it is a request: a 32 KiB TLS read buffer instead of 256 KiB, and a TLS
    handshake that must finish within `handshake_timeout` (asyncio's default is 60 s; a slowloris client that
    never finishes its hello holds a descriptor that long). Process-wide: asyncio reads both at each new
    connection (asyncio.sslproto), and no shoal connection needs more."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    asyncio.constants.SSL_HANDSHAKE_TIMEOUT = handshake_timeout


def connection_budget(limits: ServerLimits, fd_soft: int) -> int:
    """How many client connections a server accepts: its bound, within the descriptors left after headroom."""
    return max(16, min(limits.max_connections, fd_soft - FD_HEADROOM))


# ---- ASGI: bodies and concurrency -------------------------------------------------------------------------------
async def _answer(send: Any, status: int, message: str, code: str, extra: tuple[tuple[bytes, bytes], ...] = ()
                  ) -> None:
    body = json.dumps({"message": message, "code": code}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Limits:
    """ASGI middleware: 413 over `max_body`, 503 over `max_concurrency` (module doc)."""

    app: Any
    limits: ServerLimits = field(default_factory=ServerLimits)
    active: int = 0
    refused_body: int = 0
    refused_busy: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body = self.limits.max_body
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await _answer(send, 400, "invalid Content-Length", "invalid_argument")
                    return
                if declared > max_body:
                    self.refused_body += 1
                    count_refused("body_too_large")
                    await _answer(send, 413, f"request body of {declared} bytes is over the limit of {max_body}",
                                  "body_too_large")
                    return
        if self.active >= self.limits.max_concurrency and scope["path"] not in OPS_PATHS:
            self.refused_busy += 1
            count_refused("overloaded")
            await _answer(send, 503, f"server busy: {self.active} requests in progress; retry shortly",
                          "overloaded", ((b"retry-after", b"1"),))
            return
        self.active += 1
        try:
            replay = await self._read_body(receive, max_body)
            if replay is None:
                self.refused_body += 1
                count_refused("body_too_large")
                await _answer(send, 413, f"request body is over the limit of {max_body} bytes", "body_too_large")
                return
            await self.app(scope, replay, send)
        finally:
            self.active -= 1

    @staticmethod
    async def _read_body(receive: Any, max_body: int) -> Any:
        """A `receive` replaying the whole (bounded) body as one message, or None when it is over the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first: dict[str, Any] | None = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = None
                break
        pending: list[dict[str, Any]] = [first] if first is not None else [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Any:
            if pending:
                return pending.pop()
            return await receive()

        return replay


# ---- logging ----------------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def escape(text: str) -> str:
    """Control characters as visible escapes (`\\n`, `\\x00`): one record, one line."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclass
class _Kind:
    window_start: float
    passed: int = 0
    held: int = 0


class LogGuard(logging.Filter):
    """Escape every message; at most `burst` records per kind per `interval`, the count held back added to the
    next line of that kind (module doc). A kind is (logger, level, message template): the same error from
    20,000 connections is a few lines a minute, while distinct events keep their own lines."""

    def __init__(self, interval: float = 60.0, burst: int = 20, clock: Any = time.monotonic,
                 max_kinds: int = 4096) -> None:
        super().__init__()
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self.max_kinds = max_kinds
        self.kinds: dict[tuple[str, int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        key = (record.name, record.levelno, template[:120])
        now = self.clock()
        kind = self.kinds.get(key)
        if kind is None or now - kind.window_start >= self.interval:
            if kind is None and len(self.kinds) >= self.max_kinds:
                self.kinds.clear()  # bounded: kinds built from remote input cannot grow the table forever
            held = kind.held if kind is not None else 0
            kind = self.kinds[key] = _Kind(now)
        else:
            held = 0
            if kind.passed >= self.burst:
                kind.held += 1
                return False
        kind.passed += 1
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = template
        if held:
            message += f" [{held} more like this in the last {self.interval:g}s not logged]"
        record.msg, record.args = escape(message), ()
        return True


def install_log_guard(interval: float = 60.0) -> LogGuard:
    """Put one LogGuard on every handler of the root logger (after logging is configured)."""
    guard = LogGuard(interval)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, LogGuard) for f in handler.filters):
            handler.addFilter(guard)
    return guard
