"""The per-request cost of shoal's HTTP metrics middleware (shoal.http.HttpMetrics), against the same app
without it, measured in the same run.

    python bench/http_metrics.py                 # 5 rounds of 5,000 requests per app, best round each
    python bench/http_metrics.py --requests 500 --rounds 2   # CI-sized

Both apps are the shell every shoal subsystem uses (`shoal.service.create_subsystem_app`) with one JSON route
with a path parameter (`GET /v1/things/{ref}`): one with the middleware (as shipped: `create_subsystem_app`
installs it), one with it taken off the middleware list. Requests go straight through ASGI (no sockets, no TLS),
so the figure is the framework's and the middleware's CPU alone: against a request over mutual TLS and uvicorn
the relative overhead is smaller still. The middleware is also timed around a no-op ASGI app, where its own
cost stands out of the noise of a shared machine. Rounds alternate between the apps so all see the same machine
load; the best round of each is reported, then the middleware's own cost per request and the ratios."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.types import Receive, Scope, Send

from shoal.http import HttpMetrics
from shoal.metrics import Registry
from shoal.service import create_subsystem_app


class Idle:
    def __init__(self) -> None:
        self.metrics = Registry()

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {}


def build(instrumented: bool) -> FastAPI:
    router = APIRouter()

    @router.get("/v1/things/{ref}")
    async def thing(ref: str) -> dict[str, str]:
        return {"ref": ref}

    app = create_subsystem_app("bench", Idle(), routers=[router])
    if not instrumented:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HttpMetrics]
    return app


async def bare(scope: Scope, receive: Receive, send: Send) -> None:
    """The cheapest ASGI app there is: the middleware's own cost stands out against it."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def drive(app: Any, n: int) -> float:
    """Seconds for `n` sequential GETs through the app's ASGI callable."""
    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        return None

    call: Any = app
    start = time.perf_counter()
    for i in range(n):
        path = f"/v1/things/t{i}"
        scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                        "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
                        "server": ("127.0.0.1", 80), "state": {}}
        rcv: Receive = receive
        snd: Send = send
        await call(scope, rcv, snd)
    return time.perf_counter() - start


async def main_async(requests: int, rounds: int) -> None:
    apps: dict[str, Any] = {"app with metrics": build(True), "app without": build(False),
                            "bare with metrics": HttpMetrics(bare, Registry()), "bare without": bare}
    for app in apps.values():
        await drive(app, 200)  # warm-up: builds the middleware stack
    best = {k: float("inf") for k in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            best[name] = min(best[name], await drive(app, requests))
    per = {k: v / requests * 1e6 for k, v in best.items()}
    for name, us in per.items():
        print(f"{name:>18}: {us:8.1f} µs/request (best of {rounds} x {requests})")
    own = per["bare with metrics"] - per["bare without"]
    print(f"{'middleware alone':>18}: {own:8.1f} µs/request (around a no-op ASGI app)")
    print(f"{'whole app':>18}: ratio with/without {per['app with metrics'] / per['app without']:.3f}; the "
          f"middleware alone is {own / per['app without']:.1%} of a request to the app without it")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main_async(a.requests, a.rounds))


if __name__ == "__main__":
    main()
