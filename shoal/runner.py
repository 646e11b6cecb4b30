"""Process plumbing shared by every `__main__`: logging, and serving an app until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from shoal.enroll import Renewer
from shoal.limits import install_log_guard
from shoal.stalls import StallWatch, threshold_from
from shoal.transport import Authenticator, Credentials, Policy, Revocations, server_config

S = TypeVar("S")
T = TypeVar("T")

#: files a shoal process creates are private to its user (issue 16): directories 0700, files (WAL, snapshots,
#: locks, agent state, logs) 0600, whatever the umask it was started with
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """Every file and directory this process creates from now on is private to its user."""
    os.umask(PRIVATE_UMASK)


def private_opener(path: str, flags: int) -> int:
    """`open(..., opener=private_opener)`: create the file 0600 (a log opened by a process that did not set
    its own umask)."""
    return os.open(path, flags, 0o600)


def setup_logging(level: str, name: str) -> None:
    private_files()
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_guard()  # escaped, rate-limited lines (shoal.limits)


def freeze_heap() -> None:
    """Collect, then move every surviving object to the permanent generation: later full collections skip
    them. A process holding a large long-lived state (the raftstore's whole store) otherwise pays a full scan of
    it every few thousand allocations — measured 11% of the raftstore leader's CPU, 56 ms per collection, during
    which its event loop answers nothing."""
    gc.collect()
    gc.freeze()


async def refreeze_heap(interval: float = 60.0) -> None:
    """Run `freeze_heap` every `interval` seconds (the state keeps growing), until cancelled."""
    while True:
        await asyncio.sleep(interval)
        freeze_heap()


async def serve(app: FastAPI, host: str, port: int, creds: Credentials, policy: Policy, *,
                revoked: Revocations | None = None, anonymous: tuple[str, ...] = (),
                authenticate: Authenticator | None = None, login_hint: str = "",
                renew_with: Sequence[str] = (), **config: Any) -> None:
    """Serve `app` over mutual TLS (shoal.transport) in this event loop; returns after a graceful shutdown
    (lifespan exit runs first). `policy` decides, from the caller's certificate, what it may call. With
    `renew_with` (CA URLs), the process renews its own certificate at 50-80 % of its lifetime."""
    server = uvicorn.Server(server_config(app, host, port, creds, policy, revoked=revoked, anonymous=anonymous,
                                          authenticate=authenticate, login_hint=login_hint, **config))
    async with asyncio.TaskGroup() as tg:
        serving = tg.create_task(server.serve())
        background = [tg.create_task(keep_credentials_fresh(creds), name="credentials.reload")]
        if renew_with:
            background.append(tg.create_task(Renewer(creds, renew_with).run(), name="credentials.renew"))
        await serving
        for task in background:
            task.cancel()


async def keep_credentials_fresh(creds: Credentials, interval: float = 5.0) -> None:
    """Pick up a renewed certificate (written by the agent or the node supervisor) into the live SSL contexts:
    new connections use it, established ones go on (nothing is interrupted)."""
    while True:
        await asyncio.sleep(interval)
        creds.reload()


#: `SHOAL_EVENT_LOOP`: `uvloop` (libuv, and its TLS in compiled code) or `asyncio` (the standard loop)
EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop_choice(env: Mapping[str, str] | None = None) -> str:
    """The loop `run` uses: SHOAL_EVENT_LOOP (`asyncio`, the default, or `uvloop`; anything else is refused at
    start-up, as is `uvloop` when it is not installed)."""
    raw = (os.environ if env is None else env).get("SHOAL_EVENT_LOOP", "").strip().lower() or "asyncio"
    if raw not in EVENT_LOOPS:
        raise SystemExit(f"SHOAL_EVENT_LOOP={raw!r}: use one of {', '.join(EVENT_LOOPS)}")
    if raw == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise SystemExit("SHOAL_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)") from None
    return raw


async def watched(work: Awaitable[T], threshold: float) -> T:
    """`work`, with the event-loop stall watchdog (shoal/stalls.py) running beside it when `threshold` > 0."""
    watch = StallWatch(threshold) if threshold > 0 else None
    if watch is not None:
        watch.start()
    try:
        return await work
    finally:
        if watch is not None:
            watch.stop()


def run(app_factory: Callable[[], Awaitable[Any]]) -> None:
    """Run a coroutine factory on the chosen event loop (`event_loop_choice`), with the stall watchdog
    (`SHOAL_STALL_WARN`), exiting quietly on Ctrl-C."""
    threshold = threshold_from()  # a bad value stops the process before it serves anything
    try:
        if event_loop_choice() == "uvloop":
            import uvloop

            uvloop.run(watched(app_factory(), threshold))
        else:
            asyncio.run(watched(app_factory(), threshold))
    except KeyboardInterrupt:
        pass


def flag_parser(prog: str, description: str | None, port: int, *, store: bool = True) -> argparse.ArgumentParser:
    """A `__main__`'s command line with the flags every served component takes: --host, --port (default `port`)
    and, for those over the store, --store-members. Each flag overrides its SHOAL_* variable (`settings_from`)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", help="listen address (SHOAL_HOST)")
    p.add_argument("--port", type=int, help=f"listen port (SHOAL_PORT, default {port})")
    if store:
        p.add_argument("--store-members", help="comma-separated raftstore API URLs (SHOAL_STORE_MEMBERS)")
    return p


def settings_from(parser: argparse.ArgumentParser, settings_type: Callable[..., S],
                  argv: list[str] | None = None) -> S:
    """The settings from the environment, with the flags given on the command line in place of their variables."""
    a = parser.parse_args(argv)
    return settings_type(**{k: v for k, v in vars(a).items() if v is not None})
