"""What a large answer leaves behind in a TLS server (issue 13, memory per task at 1,000 nodes): a server set up
like every shoal server (`shoal.transport.server_config`: mutual TLS, uvicorn with httptools, the connection's
`CorkedTransport`) answers each of C kept-alive connections once with S bytes — an assignment message of a
node's tasks on its session poll — and the server process's RSS is read from /proc before the connections,
with them open after a small answer each, and after the large answers. asyncio encrypts each write whole into
the connection's outgoing memory BIO, which never shrinks; `shoal.limits.TLS_WRITE_PIECE` hands large answers
over in 16 KiB pieces. Both ways, each in a fresh server process, alternating:

    python bench/tls_write_pieces.py                          # 200 connections, 400 KB answers, 2 rounds
    python bench/tls_write_pieces.py --connections 20 --size 100000 --rounds 1   # CI-sized
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn

from bench.clusterbench import loadavg, rss_bytes
from bench.tls_sessions import agent_only, cpu_seconds, free_port, issue_dirs
from shoal.transport import Credentials, http_client, server_config


def serve(cert_dir: str, port: int, pieces: bool) -> None:
    from shoal import transport

    if not pieces:
        transport.TLS_WRITE_PIECE = 0  # type: ignore[misc]  # every answer in one write, as before

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        size = int(scope["query_string"].decode().partition("=")[2] or 0)
        body = b"x" * size
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        await send({"type": "http.response.body", "body": body})

    uvicorn.Server(server_config(app, "127.0.0.1", port, Credentials(Path(cert_dir)), agent_only)).run()


async def drive(creds: Credentials, url: str, connections: int, size: int, pid: int
                ) -> tuple[int, int, int, float]:
    """RSS before, with the connections open (a small answer each), after a large answer on each; the server's
    CPU seconds for the large answers."""
    before = rss_bytes(pid)
    clients = [http_client(creds, keepalive_expiry=60.0) for _ in range(connections)]
    try:
        for i in range(0, connections, 10):  # a few handshakes at a time (the server closes slow ones)
            await asyncio.gather(*(c.get(url, params={"size": 10}) for c in clients[i:i + 10]))
        await asyncio.sleep(0.5)
        opened = rss_bytes(pid)
        cpu = cpu_seconds(pid)
        for c in clients:  # one at a time: what stays is each connection's, not a burst's
            r = await c.get(url, params={"size": size})
            assert len(r.content) == size
        cpu = cpu_seconds(pid) - cpu
        await asyncio.sleep(0.5)
        return before, opened, rss_bytes(pid), cpu
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


def one(server_dir: Path, creds: Credentials, connections: int, size: int, pieces: bool) -> dict[str, float]:
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(str(server_dir), port, pieces),
                                                        daemon=True)
    proc.start()
    assert proc.pid is not None
    url = f"https://127.0.0.1:{port}/answer"
    try:
        deadline = time.monotonic() + 120  # a spawned server imports its stack first (slow on a loaded machine)
        while True:
            try:
                asyncio.run(drive(creds, url, 1, 10, proc.pid))
                break
            except (httpx.HTTPError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        before, opened, after, cpu = asyncio.run(drive(creds, url, connections, size, proc.pid))
    finally:
        proc.terminate()
        proc.join(5)
    return {"per_connection": (opened - before) / connections, "per_answer": (after - opened) / connections,
            "cpu_per_mb": cpu / (connections * size / 1e6)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--size", type=int, default=400_000, help="bytes of each large answer")
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args(argv)
    print(f"tls_write_pieces: {a.connections} connections, {a.size} B answers (load {loadavg()})", flush=True)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-pieces-") as tmp:
        server_dir, creds = issue_dirs(Path(tmp))
        for r in range(a.rounds):
            for pieces in (False, True) if r % 2 == 0 else (True, False):
                res = one(server_dir, creds, a.connections, a.size, pieces)
                key = "pieces" if pieces else "whole"
                print(f"  round {r + 1} {key:6s}: {res['per_connection'] / 1024:6.1f} KiB a connection, "
                      f"+{res['per_answer'] / 1024:6.1f} KiB a connection after its {a.size} B answer, server CPU "
                      f"{1e3 * res['cpu_per_mb']:.1f} ms per MB answered", flush=True)
                best = out.setdefault(key, res)
                out[key] = {k: min(best[k], res[k]) for k in res}
    print(f"  after the answer, per connection: whole {out['whole']['per_answer'] / 1024:.1f} KiB, pieces "
          f"{out['pieces']['per_answer'] / 1024:.1f} KiB (load {loadavg()})")
    return out


if __name__ == "__main__":
    main()
