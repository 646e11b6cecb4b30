"""The engine client under many running containers: each container's `wait` holds an HTTP request open for the
container's whole life, so more running containers than the client's pool allows (64) must not starve the
creates, starts and inspects of the others. A fake engine on a real unix socket (HTTP/1.1, keep-alive) holds
every wait until released; the real engine at that size is bench/converge.py's N = 200."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.executors.docker_engine import MAX_BULK, MAX_REQUESTS, DockerEngine


class HoldingEngine:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0
        self.hold_inspects = False  # inspects too are held until `release`
        self.inspecting = 0
        self.stopped: list[str] = []
        self.starting = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head.decode().split("\r\n")
                method, path, _ = line.split(" ", 2)
                length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")),
                              0)
                if length:
                    await reader.readexactly(length)
                if path.endswith("/wait?condition=not-running"):
                    self.waiting += 1
                    await self.release.wait()
                    status, body = 200, {"StatusCode": 0}
                elif path == "/_ping":
                    status, body = 200, "OK"
                elif path == "/version":
                    status, body = 200, {"ApiVersion": "1.41", "Version": "fake"}
                elif "/containers/" in path and path.endswith("/json"):
                    if self.hold_inspects:
                        self.inspecting += 1
                        await self.release.wait()
                    status, body = 200, {"Id": path.split("/")[-2], "State": {"Running": True}}
                elif path.endswith("/start"):
                    self.starting += 1
                    await self.release.wait()
                    status, body = 204, ""
                elif "/stop?" in path:
                    self.stopped.append(path.split("/")[-2])
                    status, body = 204, ""
                else:
                    status, body = 404, {"message": f"no route {method} {path}"}
                data = json.dumps(body).encode() if status != 204 else b""
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nAPI-Version: 1.41\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_hundred_running_containers_do_not_starve_other_requests(tmp_path: Path) -> None:
    fake = HoldingEngine()
    sock = tmp_path / "engine.sock"
    server = await asyncio.start_unix_server(fake.serve, path=str(sock))
    engine = DockerEngine(f"unix://{sock}", timeout=5.0)
    try:
        # requests held open until something happens (the exit stream, a container's wait): their own client
        waits = [asyncio.create_task(engine.call("POST", f"/containers/c{i}/wait",
                                                 params={"condition": "not-running"}, long=True))
                 for i in range(100)]
        for _ in range(200):
            if fake.waiting == 100:
                break
            await asyncio.sleep(0.02)
        assert fake.waiting == 100, f"only {fake.waiting} of 100 waits reached the engine"
        # with 100 requests held open, the engine still answers the others at once
        ct = await asyncio.wait_for(engine.inspect("c7"), 3)
        assert ct is not None and ct["Id"] == "c7"
        fake.release.set()
        assert [w["StatusCode"] for w in await asyncio.wait_for(asyncio.gather(*waits), 5)] == [0] * 100
    finally:
        await engine.close()
        server.close()
        await server.wait_closed()


async def test_requests_beyond_the_limit_wait_outside_httpcores_queue_and_long_stops_take_no_slot(
        tmp_path: Path) -> None:
    """A burst of requests (200 starts at N = 200) waits on the client's semaphores: httpcore's pool never holds
    more requests than connections, so its bookkeeping per request does not walk connections x queue; starts
    take at most MAX_BULK, so an inspect passes a burst of them. A stop with a grace period (held for seconds)
    goes on a connection of its own, past the full pool."""
    fake = HoldingEngine()
    fake.hold_inspects = True
    sock = tmp_path / "engine.sock"
    server = await asyncio.start_unix_server(fake.serve, path=str(sock))
    engine = DockerEngine(f"unix://{sock}", timeout=5.0)
    try:
        await engine.negotiate()
        starts = [asyncio.create_task(engine.start(f"s{i}")) for i in range(100)]
        for _ in range(200):
            if fake.starting == MAX_BULK:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert fake.starting == MAX_BULK
        burst = [asyncio.create_task(engine.inspect(f"c{i}")) for i in range(100)]
        for _ in range(200):
            if fake.inspecting == MAX_REQUESTS - MAX_BULK:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert fake.inspecting == MAX_REQUESTS - MAX_BULK  # the engine sees the limit, no more
        assert len(engine._http._transport._pool._requests) == MAX_REQUESTS  # type: ignore[attr-defined]
        await asyncio.wait_for(engine.stop("c1", 10), 3)  # every slot taken: it still reaches the engine
        assert fake.stopped == ["c1"]
        fake.release.set()
        assert len(await asyncio.wait_for(asyncio.gather(*burst), 5)) == 100
        await asyncio.wait_for(asyncio.gather(*starts), 5)
    finally:
        await engine.close()
        server.close()
        await server.wait_closed()
