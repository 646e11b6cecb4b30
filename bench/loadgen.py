"""The load both data-plane benchmarks drive (bench/mesh.py, bench/overlay.py), run in a child process of theirs:
short HTTP/1.0 requests from `clients` concurrent connections, and one bulk TCP stream, against `host:port`.

HANDLERS is the backends' side, Python source for `python -c`: an HTTP answer of `ok` and a sink."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

HANDLERS = r"""
import asyncio, sys
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
async def http(r, w):
    try:
        await r.readuntil(b"\r\n\r\n")
        w.write(ANSWER)
        await w.drain()
    except Exception:
        pass
    w.close()
async def sink(r, w):
    while await r.read(1 << 16):
        pass
    w.close()
"""


async def requests(host: str, port: int, clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def client() -> None:
        nonlocal errors
        while loop.time() < end:
            t0 = loop.time()
            try:
                r, w = await asyncio.open_connection(host, port)
                w.write(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
                data = await r.read()
                w.close()
                if not data.endswith(b"ok"):
                    errors += 1
                    continue
            except OSError:
                errors += 1
                continue
            latencies.append(loop.time() - t0)

    await asyncio.gather(*(client() for _ in range(clients)))
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
    return {"requests": len(latencies), "rps": len(latencies) / seconds, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "errors": errors}


async def bulk(host: str, port: int, seconds: float) -> dict[str, Any]:
    _, w = await asyncio.open_connection(host, port)
    chunk = b"x" * (1 << 16)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    sent = 0
    while loop.time() < end:
        w.write(chunk)
        await w.drain()
        sent += len(chunk)
    w.close()
    return {"mb_per_s": sent / seconds / 1e6}


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line both benchmarks share: how long and how hard each measurement is, how many rounds, and
    `--generate`, which makes the process the load generator of one measurement (a child of the benchmark)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--generate", choices=["requests", "bulk"])
    return p


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds."""
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = sorted(r[key] for r in rows)
        out[key] = values[len(values) // 2]
    return out
