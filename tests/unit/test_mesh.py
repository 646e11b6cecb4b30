"""agent/mesh.py over real loopback sockets: the routing mesh spreads connections over the table's backends,
skips one that refuses, is closed while a port has no backend or leaves the table, reopens from the saved
table after a restart; service listeners and discovery files follow the table."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.mesh import Mesh
from shoal import endpoints

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """A TCP server answering each connection with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Backend:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(self.name.encode())
            await w.drain()
            w.close()
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def table(published: int, backends: list[int], *, mode: str = "vip", version: str = "v") -> dict[str, Any]:
    return {"version": version, "node_addr": "127.0.0.1", "services": [{
        "id": "svc1", "name": "web", "mode": mode, "networks": ["n1"], "vips": [],
        "ports": [{"protocol": "tcp", "target_port": 8080, "published_port": published, "publish_mode": "ingress"}],
        "backends": [{"task_id": f"t{i}", "node_id": "n", "node_addr": "127.0.0.1", "addresses": {"n1": f"10.0.0.{i}"},
                      "ports": {"8080/tcp": p}} for i, p in enumerate(backends)],
        "backends_truncated": False}]}


async def ask(port: int, host: str = "127.0.0.1") -> str:
    r, w = await asyncio.open_connection(host, port)
    data = await r.read()
    w.close()
    return data.decode()


async def refused(port: int, host: str = "127.0.0.1") -> bool:
    try:
        _, w = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    w.close()
    return False


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    m = Mesh(tmp_path, connect_timeout=1.0)
    yield m
    await m.close()


async def test_spreads_over_backends_and_skips_a_refusing_one(mesh: Mesh) -> None:
    a, b = await Backend("a").start(), await Backend("b").start()
    dead = free_port()
    published = free_port()
    await mesh.apply(table(published, [a.port, dead, b.port]))
    answers = [await ask(published) for _ in range(12)]
    assert set(answers) == {"a", "b"} and abs(answers.count("a") - answers.count("b")) <= 2, answers
    await a.stop()
    assert {await ask(published) for _ in range(6)} == {"b"}  # refused backends are skipped, no failure
    await b.stop()


async def test_closed_without_backends_and_when_the_port_leaves(mesh: Mesh) -> None:
    a = await Backend("a").start()
    published = free_port()
    await mesh.apply(table(published, []))
    assert await refused(published)  # scaled to 0: connection refused
    await mesh.apply(table(published, [a.port], version="v2"))
    assert await ask(published) == "a"
    await mesh.apply({"version": "v3", "node_addr": "127.0.0.1", "services": []})
    assert await refused(published)  # service (or port) removed: closed
    assert mesh.listeners == {}
    await a.stop()


async def test_restart_reopens_from_the_saved_table(tmp_path: Path) -> None:
    a = await Backend("a").start()
    published = free_port()
    first = Mesh(tmp_path)
    await first.apply(table(published, [a.port]))
    await first.close()
    assert await refused(published)
    second = Mesh(tmp_path)
    await second.restore()
    try:
        assert second.version == "v" and await ask(published) == "a"
    finally:
        await second.close()
        await a.stop()


async def test_service_listener_and_discovery_files(mesh: Mesh) -> None:
    a = await Backend("a").start()
    await mesh.apply(table(free_port(), [a.port]))
    vip = endpoints.local_vip("svc1")
    assert await ask(8080, vip) == "a"  # VIP-style access: <local VIP>:<target port>
    hosts = Path(mesh.task_env()["SHOAL_HOSTS_FILE"]).read_text().splitlines()
    assert f"{vip}\tweb" in hosts and "127.0.0.1\ttasks.web" in hosts
    found = json.loads(Path(mesh.task_env()["SHOAL_ENDPOINTS_FILE"]).read_text())
    assert found["web"]["tasks"]["8080/tcp"] == [f"127.0.0.1:{a.port}"]
    await a.stop()


async def test_a_backend_closing_before_answering_is_replayed_elsewhere_but_uploads_are_not(mesh: Mesh) -> None:
    """A backend that accepts and closes without a byte (killed between accept and answer) costs the client
    nothing: its request goes to the next backend. A client that half-closed (an upload) is never replayed."""
    got: dict[str, list[bytes]] = {"dead": [], "good": []}
    uploads = False

    async def dead(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got["dead"].append(await (r.read() if uploads else r.read(100)))  # an upload: consumed to its end
        w.transport.abort()  # reset, nothing answered

    async def good(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = await r.read(100)
        got["good"].append(data)
        w.write(b"answer:" + data)
        await w.drain()
        w.close()

    servers = [await asyncio.start_server(dead, "127.0.0.1", 0), await asyncio.start_server(good, "127.0.0.1", 0)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    published = free_port()
    await mesh.apply(table(published, ports))
    for i in range(6):
        r, w = await asyncio.open_connection("127.0.0.1", published)
        w.write(b"req%d" % i)
        assert await r.read() == b"answer:req%d" % i  # never a failure, whichever backend came first
        w.close()
    assert got["dead"] and len(got["good"]) == 6
    # an upload (the client half-closes): the dead backend's close is the end, no second delivery
    got = {"dead": [], "good": []}
    uploads = True
    outcomes = []
    for i in range(4):
        r, w = await asyncio.open_connection("127.0.0.1", published)
        w.write(b"up%d" % i)
        w.write_eof()
        outcomes.append(await r.read())
        w.close()
    assert len(got["dead"]) + len(got["good"]) == 4 and outcomes.count(b"") == len(got["dead"])
    for s in servers:
        s.close()
