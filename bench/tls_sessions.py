"""What a TLS handshake costs a dispatcher per heartbeat (issue 13, item 1): a server set up like every shoal
server (`shoal.transport.server_config`: mutual TLS, the Guard checking the caller's certificate, uvicorn with
httptools) answering `POST /v1/sessions/{sid}/heartbeat`, driven by an agent's client
(`shoal.transport.http_client` with a worker's `agent` certificate) in two ways, alternating rounds:

- **new connection per heartbeat** — what agents did while their pooled connections expired after 2 s and
  heartbeats came every 5 s: a full mutual-TLS handshake (ECDHE, the server's ECDSA signature, the client's
  certificate verified) per request;
- **kept-alive connection** — the agents' dispatcher client now keeps connections 20 s
  (`transport.SESSION_KEEPALIVE_EXPIRY`), under the server's 30 s keep-alive.

The server runs in its own process; its CPU (utime + stime from /proc) per request is reported for both, with
the ratio. Best round of each.

    python bench/tls_sessions.py                     # 5 rounds of 300 requests each way
    python bench/tls_sessions.py --requests 50 --rounds 1   # CI-sized
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvicorn
from fastapi import FastAPI

from shoal import pki
from shoal.certs import LOCAL_HOSTS, Signer
from shoal.pki import Identity
from shoal.transport import Credentials, http_client, server_config


def agent_only(ident: Identity, method: str, path: str) -> str | None:
    return None if ident.component == "agent" else "only agents"


def serve(cert_dir: str, port: int) -> None:
    app = FastAPI()

    @app.post("/v1/sessions/{sid}/heartbeat")
    async def heartbeat(sid: str) -> dict[str, Any]:
        return {"period": 5.0}

    config = server_config(app, "127.0.0.1", port, Credentials(Path(cert_dir)), agent_only)
    uvicorn.Server(config).run()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def drive(creds: Credentials, url: str, n: int, reuse: bool) -> None:
    if reuse:
        async with http_client(creds, keepalive_expiry=20.0) as client:
            for _ in range(n):
                (await client.post(url)).raise_for_status()
        return
    for _ in range(n):  # a connection that does not survive until the next heartbeat: a handshake each
        async with http_client(creds) as client:
            (await client.post(url, headers={"connection": "close"})).raise_for_status()


def issue_dirs(base: Path) -> tuple[Path, Credentials]:
    """A dispatcher's certificate directory and an agent's credentials, from one new signer, under `base`."""
    signer = Signer.new()
    server_dir = base / "server"
    signer.issue_dir(server_dir, node_id="manager-1", role=pki.MANAGER, component="dispatcher", hosts=LOCAL_HOSTS)
    agent_dir = base / "agent"
    signer.issue_dir(agent_dir, node_id="node-1", role=pki.WORKER, component="agent", hosts=LOCAL_HOSTS)
    return server_dir, Credentials(agent_dir)


@contextlib.contextmanager
def heartbeat_server() -> Iterator[tuple[str, Credentials, int]]:
    """A heartbeat server in its own process, answering: (its heartbeat URL, an agent's credentials, its pid)."""
    with tempfile.TemporaryDirectory(prefix="shoal-bench-tls-") as tmp:
        server_dir, creds = issue_dirs(Path(tmp))
        port = free_port()
        proc = multiprocessing.get_context("spawn").Process(target=serve, args=(str(server_dir), port),
                                                            daemon=True)
        proc.start()
        assert proc.pid is not None
        url = f"https://127.0.0.1:{port}/v1/sessions/s1/heartbeat"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    asyncio.run(drive(creds, url, 1, True))
                    break
                except (httpx.HTTPError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield url, creds, proc.pid
        finally:
            proc.terminate()
            proc.join(10)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    best: dict[str, float] = {}
    with heartbeat_server() as (url, creds, pid):
        for r in range(a.rounds):
            for reuse in (True, False) if r % 2 == 0 else (False, True):
                c0 = cpu_seconds(pid)
                asyncio.run(drive(creds, url, a.requests, reuse))
                per = (cpu_seconds(pid) - c0) / a.requests
                key = "kept_alive" if reuse else "new_connection"
                best[key] = min(best.get(key, per), per)
    best["ratio"] = best["new_connection"] / max(best["kept_alive"], 1e-9)
    print(f"server CPU per heartbeat over mutual TLS (best of {a.rounds} rounds of {a.requests}; load "
          f"{os.getloadavg()[0]:.1f}): new connection {1e3 * best['new_connection']:.2f} ms, kept-alive "
          f"{1e3 * best['kept_alive']:.2f} ms: a handshake makes a heartbeat {best['ratio']:.1f}x dearer")
    return best


if __name__ == "__main__":
    main()
