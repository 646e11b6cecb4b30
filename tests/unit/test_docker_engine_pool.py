"""The engine client under many running containers: each container's `wait` holds an HTTP request open for the
container's whole life, so more running containers than the client's pool allows (64) must not starve the
creates, starts and inspects of the others. A fake engine on a real unix socket (HTTP/1.1, keep-alive) holds
every wait until released; the real engine at that size is bench/converge.py's N = 200."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.executors.docker_engine import DockerEngine


class HoldingEngine:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

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
                    status, body = 200, {"Id": path.split("/")[-2], "State": {"Running": True}}
                else:
                    status, body = 404, {"message": f"no route {method} {path}"}
                data = json.dumps(body).encode()
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
        waits = [asyncio.create_task(engine.wait(f"c{i}")) for i in range(100)]
        for _ in range(200):
            if fake.waiting == 100:
                break
            await asyncio.sleep(0.02)
        assert fake.waiting == 100, f"only {fake.waiting} of 100 waits reached the engine"
        # with 100 requests held open, the engine still answers the others at once
        ct = await asyncio.wait_for(engine.inspect("c7"), 3)
        assert ct is not None and ct["Id"] == "c7"
        fake.release.set()
        assert await asyncio.wait_for(asyncio.gather(*waits), 5) == [0] * 100
    finally:
        await engine.close()
        server.close()
        await server.wait_closed()
