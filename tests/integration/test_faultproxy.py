"""tests/tools/faultproxy.py on loopback with a tiny echo server: pass, delay (ordered), drop (held, reset when
healed), stall (delivered late), reject, half-close, a dead target; in-thread and as a subprocess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.tools.faultproxy import FaultProxy, Mode, ProxyControl, ProxyProcess

pytestmark = pytest.mark.timeout(60)


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.write(b"<eof>")  # the client's half-close reached us
        await w.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass  # reset by the proxy, or the test's loop is closing
    finally:
        w.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@pytest.fixture(params=["thread", "process"])
def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProxyControl]:
    p: ProxyControl = FaultProxy() if request.param == "thread" else ProxyProcess(log=tmp_path / "proxy.log")
    try:
        yield p
    finally:
        p.close()


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _roundtrip(r: asyncio.StreamReader, w: asyncio.StreamWriter, payload: bytes, timeout: float = 5) -> bytes:
    w.write(payload)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(len(payload)), timeout)


async def _is_reset(r: asyncio.StreamReader, timeout: float = 5) -> bool:
    """The connection ends (EOF or reset) within `timeout`."""
    try:
        return await asyncio.wait_for(r.read(100), timeout) == b""
    except ConnectionError:
        return True


async def _linked(proxy: ProxyControl, echo_port: int) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """Link "a" to the echo server, and a connection through it that has made one round trip."""
    port = proxy.add_link("a", "127.0.0.1", echo_port)
    r, w = await _connect(port)
    await _roundtrip(r, w, b"before")
    return port, r, w


async def _unanswered(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes, wait: float) -> None:
    """Send `data`; nothing comes back within `wait` seconds, and the connection stays open."""
    w.write(data)
    await w.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.read(100), wait)


async def test_pass_forwards_both_ways_and_counts(proxy: ProxyControl, echo_port: int) -> None:
    port = proxy.add_link("a", "127.0.0.1", echo_port)
    r, w = await _connect(port)
    for i in range(5):
        assert await _roundtrip(r, w, b"hello %d" % i) == b"hello %d" % i
    big = bytes(range(256)) * 4096  # 1 MiB through in many chunks
    assert await _roundtrip(r, w, big, 10) == big
    w.write_eof()
    assert await asyncio.wait_for(r.read(), 5) == b"<eof>"  # the half-close was passed on, the answer came back
    w.close()
    st = proxy.state()["a"]
    assert st["mode"] == "pass" and st["port"] == port and st["target"] == ["127.0.0.1", echo_port]
    assert st["stats"]["accepted"] == 1 and st["stats"]["forwarded_bytes"] >= 2 * len(big)


async def test_delay_holds_each_chunk_and_keeps_order(proxy: ProxyControl, echo_port: int) -> None:
    port = proxy.add_link("a", "127.0.0.1", echo_port)
    r, w = await _connect(port)
    t0 = time.monotonic()
    await _roundtrip(r, w, b"x")
    fast = time.monotonic() - t0
    proxy.set(["a"], delay_ms=150)
    t0 = time.monotonic()
    assert await _roundtrip(r, w, b"y") == b"y"
    slow = time.monotonic() - t0
    assert slow >= 0.29 and slow > fast, (fast, slow)  # delayed there and back
    proxy.set(["a"], delay_ms=30, jitter_ms=25)  # jitter never reorders a stream
    for i in range(20):
        w.write(b"<%02d>" % i)
        await w.drain()
        await asyncio.sleep(0.003)
    got = await asyncio.wait_for(r.readexactly(4 * 20), 10)
    assert got == b"".join(b"<%02d>" % i for i in range(20))
    proxy.heal()
    t0 = time.monotonic()
    await _roundtrip(r, w, b"z")
    assert time.monotonic() - t0 < 0.25
    w.close()


async def test_drop_holds_the_connection_and_resets_it_when_healed(proxy: ProxyControl, echo_port: int) -> None:
    port, r, w = await _linked(proxy, echo_port)
    proxy.set(["a"], Mode.DROP)
    await _unanswered(r, w, b"lost", 0.4)  # nothing back, and the connection is still open
    r2, w2 = await _connect(port)  # new connections are accepted and held too
    await _unanswered(r2, w2, b"also lost", 0.3)
    assert proxy.state()["a"]["stats"]["dropped_bytes"] >= len(b"lost") + len(b"also lost")
    proxy.heal()
    # a stream that lost bytes is broken for good: both held connections are reset
    assert await _is_reset(r) and await _is_reset(r2)
    r3, w3 = await _connect(port)
    assert await _roundtrip(r3, w3, b"after") == b"after"
    for x in (w, w2, w3):
        x.close()
    assert proxy.state()["a"]["stats"]["reset"] == 2


async def test_stall_delivers_late_without_loss(proxy: ProxyControl, echo_port: int) -> None:
    _, r, w = await _linked(proxy, echo_port)
    proxy.set(["a"], Mode.STALL)
    await _unanswered(r, w, b"held", 0.4)
    proxy.heal()
    assert await asyncio.wait_for(r.readexactly(4), 5) == b"held"
    w.close()


async def test_reject_resets_existing_and_new_connections(proxy: ProxyControl, echo_port: int) -> None:
    port, r, w = await _linked(proxy, echo_port)
    proxy.set(["a"], Mode.REJECT)
    assert await _is_reset(r)
    r2, w2 = await _connect(port)  # accepted by the kernel, then reset by the proxy
    assert await _is_reset(r2)
    proxy.heal(["a"])
    r3, w3 = await _connect(port)
    assert await _roundtrip(r3, w3, b"after") == b"after"
    for x in (w, w2, w3):
        x.close()
    assert proxy.state()["a"]["stats"]["rejected"] >= 1


async def test_links_are_independent_and_a_dead_target_closes_the_client(proxy: ProxyControl,
                                                                         echo_port: int) -> None:
    a = proxy.add_link("a", "127.0.0.1", echo_port)
    b = proxy.add_link("b", "127.0.0.1", echo_port)
    dead_server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    dead_port = dead_server.sockets[0].getsockname()[1]
    dead_server.close()
    await dead_server.wait_closed()
    c = proxy.add_link("c", "127.0.0.1", dead_port)
    proxy.set(["a"], Mode.DROP)
    rb, wb = await _connect(b)
    assert await _roundtrip(rb, wb, b"b works") == b"b works"
    ra, wa = await _connect(a)
    wa.write(b"a drops")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ra.read(100), 0.3)
    rc, wc = await _connect(c)
    assert await _is_reset(rc)
    with pytest.raises(KeyError if isinstance(proxy, FaultProxy) else RuntimeError):
        proxy.set(["nope"], Mode.DROP)
    with pytest.raises(ValueError if isinstance(proxy, FaultProxy) else RuntimeError):
        proxy.add_link("a", "127.0.0.1", echo_port)
    for x in (wa, wb, wc):
        x.close()


async def test_a_target_that_goes_away_resets_the_client_even_while_it_only_sends(proxy: ProxyControl) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(5)
        accepted.append(w)

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = proxy.add_link("a", "127.0.0.1", server.sockets[0].getsockname()[1])
    _, w = await _connect(port)
    w.write(b"hello")
    await w.drain()
    while not accepted:
        await asyncio.sleep(0.01)
    accepted[0].close()  # the target dies with nothing unread: its kernel ends the connection with a FIN
    server.close()

    async def keep_sending() -> None:
        while True:  # a sender that never reads (a raft peer link): it must see the failure in its writes
            w.write(b"x" * 65536)
            await w.drain()

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(keep_sending(), 10)
    w.close()


def test_the_proxy_process_exits_with_its_stdin(tmp_path: Path) -> None:
    p = ProxyProcess(log=tmp_path / "proxy.log")
    p.add_link("a", "127.0.0.1", 9)
    assert p.proc.stdin is not None
    p.proc.stdin.close()  # what the parent's death does
    assert p.proc.wait(5) == 0
    p.close()
