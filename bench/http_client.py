"""What an agent's HTTP client costs per dispatcher call (issue 13): the client's CPU per request over a kept-alive
mutual-TLS connection, for the clients the transport module builds, against the same server (set up like every
shoal server: `bench/tls_sessions.py`'s, answering `POST /v1/sessions/{sid}/heartbeat`), alternating rounds:

- **httpx** — `shoal.transport.http_client` (httpx over httpcore and anyio): what agents used before;
- **session, httpx API** — `shoal.transport.session_client` through httpx's API (`client.post`): aiohttp carries
  the request (shoal/aioclient.py);
- **session, direct** — the same client's `aio.call`, the path `agent.session.DispatcherClient` takes.

The client runs in this process and its CPU (`time.process_time`) per request is reported, the server in
another process. Best round of each; the ratios are against httpx, the peer measured in the same run.

    python bench/http_client.py                          # 5 rounds of 1,000 requests each way
    python bench/http_client.py --requests 50 --rounds 1   # CI-sized
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.tls_sessions import heartbeat_server
from shoal import pki
from shoal.aioclient import AiohttpTransport
from shoal.transport import Credentials, http_client, session_client

WAYS = ("httpx", "session_httpx_api", "session_direct")


async def per_request(creds: Credentials, url: str, n: int, way: str) -> float:
    """The client's CPU seconds per request, `n` requests on one kept-alive connection (the first, which
    pays the handshake, not counted)."""
    client = (http_client(creds, keepalive_expiry=20.0, server_role=pki.MANAGER) if way == "httpx"
              else session_client(creds, timeout=10.0))
    async with client:
        call: Callable[[], Awaitable[object]]
        if way == "session_direct":
            aio = getattr(client, "aio", None)
            assert isinstance(aio, AiohttpTransport)

            async def call() -> object:
                status, _, body = await aio.call("POST", url, timeout=10.0)
                assert status == 200, body
                return body
        else:
            async def call() -> object:
                r = await client.post(url)
                r.raise_for_status()
                return r.content
        await call()
        t0 = time.process_time()
        for _ in range(n):
            await call()
        return (time.process_time() - t0) / n


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    best: dict[str, float] = {}
    with heartbeat_server() as (url, creds, _):
        for r in range(a.rounds):
            for way in WAYS if r % 2 == 0 else tuple(reversed(WAYS)):
                per = asyncio.run(per_request(creds, url, a.requests, way))
                best[way] = min(best.get(way, per), per)
    for way in WAYS[1:]:
        best[f"{way}_ratio"] = best[way] / max(best["httpx"], 1e-9)
    print(f"client CPU per request over kept-alive mutual TLS (best of {a.rounds} rounds of {a.requests}; load "
          f"{os.getloadavg()[0]:.1f}): httpx {1e3 * best['httpx']:.3f} ms; session client through httpx's API "
          f"{1e3 * best['session_httpx_api']:.3f} ms ({best['session_httpx_api_ratio']:.2f}x httpx); its direct "
          f"path {1e3 * best['session_direct']:.3f} ms ({best['session_direct_ratio']:.2f}x httpx)")
    return best


if __name__ == "__main__":
    main()
