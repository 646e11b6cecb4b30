"""httpx requests carried by aiohttp (issue 13): the agent's session calls, the one client path every node runs
several times a period.

httpx's own stack (httpcore over anyio's TLS streams) spent ~0.85 ms of CPU on a small request over a kept-alive
mutual-TLS connection on this machine; aiohttp's connection pool and compiled HTTP parser ~0.19 ms; httpx's API
over aiohttp ~0.52 ms (`bench/http_client.py`). A process hosting hundreds of hollow nodes spent about half its
time in httpx, and its stalls made nodes miss their heartbeats. `AiohttpTransport` is an
`httpx.AsyncBaseTransport`, so every caller keeps httpx's API (and its tests their in-process transports), and
`call` is the direct path for callers that want only status, headers and body (`agent.session`).

What the transport module's clients promise holds here too: the SSL context is the caller's (the cluster root,
the node's certificate), `sni_hostname` checks the server's certificate against a name instead of the address
dialled, and the server's role is checked once per connection, when it is made and before its first request
(its peer cannot change). aiohttp's errors become httpx's, so callers catch one family."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

#: request headers aiohttp computes itself, or that describe httpx's connection: not passed on
_HOP_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


def _mapped(exc: BaseException, url: str) -> httpx.HTTPError:
    """aiohttp's (and asyncio's) errors as the httpx errors callers already tell apart: timeouts (slow, try
    again), a connection the server closed (safe to repeat once), and the rest (unreachable)."""
    msg = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(msg)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, TimeoutError)):
        return httpx.ReadTimeout(msg)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(msg)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(msg)
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return httpx.ReadError(msg)
    return httpx.TransportError(f"{url}: {msg}")


class _CheckedConnector(aiohttp.TCPConnector):
    """A connector that checks each new connection's server (`check_peer`) before any request goes out on it.
    aiohttp releases a connection as soon as a small answer is read, so the response no longer names it; the
    connection's creation is the one place that always sees the TLS object."""

    def __init__(self, check_peer: Callable[[ssl.SSLObject | None, str], None], **kw: Any) -> None:
        super().__init__(**kw)
        self._check_peer = check_peer

    async def _create_connection(self, req: Any, traces: Any, timeout: Any) -> Any:
        proto = await super()._create_connection(req, traces, timeout)
        tr = proto.transport
        try:
            self._check_peer(tr.get_extra_info("ssl_object") if tr is not None else None, str(req.url))
        except BaseException:
            proto.close()
            raise
        return proto


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (its pool: `max_connections`, idle ones kept `keepalive_expiry` seconds), made in the
    event loop of the first request. `check_peer(ssl_object, url)` raises for a server that must not be
    trusted; it runs once per connection, before the connection's first request is sent."""

    def __init__(self, ctx: ssl.SSLContext, *, keepalive_expiry: float, max_connections: int = 64,
                 check_peer: Callable[[ssl.SSLObject | None, str], None] | None = None) -> None:
        self.ctx = ctx
        self.keepalive_expiry = keepalive_expiry
        self.max_connections = max_connections
        self.check_peer = check_peer
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            kw: dict[str, Any] = {"ssl": self.ctx, "limit": self.max_connections,
                                  "keepalive_timeout": self.keepalive_expiry}
            connector = (_CheckedConnector(self.check_peer, **kw) if self.check_peer is not None
                         else aiohttp.TCPConnector(**kw))
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._session

    async def call(self, method: str, url: str, *, content: bytes | None = None,
                   headers: list[tuple[str, str]] | dict[str, str] | None = None, timeout: float | None = None,
                   connect_timeout: float | None = None,
                   sni: str | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request: (status, raw headers, body). `timeout` bounds each read (and the connect unless
        `connect_timeout` is given), like httpx's per-phase timeouts."""
        t = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout or timeout,
                                  connect=connect_timeout or timeout, sock_read=timeout)
        kw: dict[str, Any] = {"server_hostname": sni} if sni else {}
        try:
            async with self._client().request(method, url, data=content, headers=headers, timeout=t,
                                              allow_redirects=False, **kw) as resp:
                body = await resp.read()
                return resp.status, list(resp.raw_headers), body
        except httpx.HTTPError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise _mapped(e, url) from e

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or {}
        content = await request.aread()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _HOP_HEADERS]
        status, raw, body = await self.call(
            request.method, str(request.url), content=content or None,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            timeout=timeouts.get("read"), connect_timeout=timeouts.get("connect") or timeouts.get("pool"),
            sni=request.extensions.get("sni_hostname"))
        return httpx.Response(status, headers=raw, content=body, request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class SessionClient(httpx.AsyncClient):
    """An httpx client whose requests `aio` carries; callers that want only status, headers and body take
    `aio.call` directly."""

    def __init__(self, aio: AiohttpTransport, *, timeout: float) -> None:
        super().__init__(timeout=timeout, transport=aio)
        self.aio = aio
