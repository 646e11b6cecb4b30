"""shoal.lb: connections go to the backends in turn, a dead backend is skipped, and bytes flow both ways with
half-closes passed on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from shoal.lb import Balancer

pytestmark = pytest.mark.timeout(30)


def echo(tag: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read()  # until the client half-closes
        w.write(tag + b":" + data)
        await w.drain()
        w.close()

    return handle


async def ask(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(payload)
    w.write_eof()
    answer = await r.read()
    w.close()
    return answer


async def test_round_robin_over_every_address_skipping_dead_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    a = await asyncio.start_server(echo(b"a"), "127.0.0.1", 0)
    port = a.sockets[0].getsockname()[1]
    b = await asyncio.start_server(echo(b"b"), "127.0.0.2", port)  # the same port on another loopback address
    balancer = Balancer(f"gateways:{port}", connect_timeout=1)
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]  # nothing listens on .3: refused, skipped

    async def fake_addresses() -> list[str]:
        return addresses

    monkeypatch.setattr(balancer, "addresses", fake_addresses)
    front = await asyncio.start_server(balancer.handle, "127.0.0.1", 0)
    fport = front.sockets[0].getsockname()[1]
    answers = [await ask(fport, b"x%d" % i) for i in range(6)]
    assert answers[:2] == [b"a:x0", b"b:x1"]
    assert [x.split(b":")[0] for x in answers] == [b"a", b"b", b"a", b"a", b"b", b"a"]  # .3 -> its successor
    addresses = []
    try:  # no backend: the client connection is closed (reset, since its request was never read)
        assert await ask(fport, b"nobody") == b""
    except ConnectionResetError:
        pass
    assert balancer.connections == 7
    for server in (front, a, b):
        server.close()
