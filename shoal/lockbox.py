"""A manager process that is locked (autolock): its TLS key is encrypted under the unlock key (shoal.keyfile),
so it cannot speak TLS — it waits, serving only a local unix socket, until an admin on its machine gives it the
key (`shoal swarm unlock`). Used by every process whose key is under the KEK: raftstore members
(services/raftstore/locked.py) and the CA (services/ca/__main__.py).

`<cert dir>/unlock.sock` (0600, in the 0700 certificate directory: only the manager's own user reaches it, as
only root reaches a Docker daemon's socket) serves only:
- `GET /healthz`, `GET /readyz`: 503 `{"message", "code": "locked", "locked": true, "failed_unlocks": n}`;
- `GET /v1/status`: 200 `{"id", "role": "locked", "locked": true, "failed_unlocks": n}`;
- `POST /v1/unlock {"key": "SWMKEY-1-..."}`: the right key opens what the process needs and the socket gives way
  to the normal TLS server; a malformed key is 400, a wrong one 401 `wrong_unlock_key`, counted
  (`failed_unlocks`) and logged without the key;
- anything else: 503 `{"code": "locked"}`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shoal import unlockkey

log = logging.getLogger(__name__)

T = TypeVar("T")

UNLOCK_PATH = "/v1/unlock"
SOCKET_NAME = "unlock.sock"
#: sun_path holds 108 bytes with its terminating NUL
MAX_SOCKET_PATH = 107


class SocketUnusable(RuntimeError):
    """The unlock socket cannot be made (its path is too long for a unix socket)."""


def socket_path(cert_dir: Path) -> Path:
    return Path(cert_dir) / SOCKET_NAME


class Unlocker(Generic[T]):
    """Tries unlock keys with `open_with`: an exception in `wrong` is a wrong key (401, counted); one in `fatal`
    means the key was right but the process cannot go on (it is kept in `error` and the wait ends). `opened`
    is set once a key opens."""

    def __init__(self, open_with: Callable[[bytes], T], *, name: str, status_id: int | str = 0,
                 wrong: tuple[type[Exception], ...] = (), fatal: tuple[type[Exception], ...] = ()) -> None:
        self._open = open_with
        self.name = name
        self.status_id = status_id
        self.wrong, self.fatal = wrong, fatal
        self.failed = 0
        self.opened: T | None = None
        #: why a right key still did not open the process (damaged data, a key file that does not open)
        self.error: Exception | None = None
        self.unlocked = asyncio.Event()

    def health(self) -> tuple[int, dict[str, Any]]:
        return 503, {"message": f"{self.name}: locked (autolock): run `shoal swarm unlock` on its manager",
                     "code": "locked", "locked": True, "failed_unlocks": self.failed}

    def status(self) -> dict[str, Any]:
        return {"id": self.status_id, "role": "locked", "locked": True, "failed_unlocks": self.failed}

    def unlock(self, body: Any) -> tuple[int, dict[str, Any]]:
        if self.opened is not None:
            return 200, {"unlocked": True}
        text = body.get("key") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return 400, {"message": 'unlock: the body is {"key": "SWMKEY-1-..."}', "code": "invalid_argument"}
        try:
            key = unlockkey.parse(text)
        except ValueError as e:
            return 400, {"message": f"unlock: malformed unlock key: {e}", "code": "invalid_argument"}
        try:
            self.opened = self._open(key)
        except self.wrong:
            self.failed += 1
            log.warning("%s: a wrong unlock key was refused (%d so far)", self.name, self.failed)
            return 401, {"message": f"unlock: this is not the unlock key of this {self.name} (if the key was "
                                    "rotated while it was down, give the previous one)",
                         "code": "wrong_unlock_key", "failed_unlocks": self.failed}
        except self.fatal as e:
            self.error = e
            self.unlocked.set()
            return 500, {"message": f"unlock: the key is right, but the {self.name} cannot start: {e}",
                         "code": "internal"}
        log.info("%s: unlocked", self.name)
        self.unlocked.set()
        return 200, {"unlocked": True}


def create_app(unlocker: Unlocker[Any]) -> FastAPI:
    app = FastAPI(title=f"shoal {unlocker.name} (locked)", openapi_url=None)

    @app.get("/healthz")
    @app.get("/readyz")
    async def health() -> JSONResponse:
        status, body = unlocker.health()
        return JSONResponse(body, status_code=status)

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return unlocker.status()

    @app.post(UNLOCK_PATH)
    async def unlock(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        status, answer = unlocker.unlock(body)
        return JSONResponse(answer, status_code=status)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def elsewhere(path: str) -> JSONResponse:
        return JSONResponse({"message": f"{unlocker.name}: locked (autolock): serves nothing but health and "
                                        f"{UNLOCK_PATH} until it is unlocked (/{path})",
                             "code": "locked", "locked": True}, status_code=503)

    return app


def bind_socket(path: Path) -> socket.socket:
    """A listening unix socket at `path`, 0600 (a stale one from a killed run is replaced)."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise SocketUnusable(f"the unlock socket path {path} is longer than {MAX_SOCKET_PATH} bytes (a unix "
                             "socket limit): use a shorter certificate directory")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


async def wait_for_unlock(cert_dir: Path, unlocker: Unlocker[T]) -> T:
    """Serve the locked API on `<cert_dir>/unlock.sock` until a key opens; returns what `open_with` made."""
    path = socket_path(cert_dir)
    sock = bind_socket(path)
    config = uvicorn.Config(create_app(unlocker), log_level="warning", access_log=False, lifespan="off",
                            limit_concurrency=16, h11_max_incomplete_event_size=16 * 1024)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{unlocker.name}.locked")
    unlocked = asyncio.create_task(unlocker.unlocked.wait())
    try:
        await asyncio.wait((serving, unlocked), return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
    finally:
        unlocked.cancel()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if unlocker.error is not None:
        raise unlocker.error
    if unlocker.opened is None:
        raise RuntimeError(f"{unlocker.name}: the locked API stopped before it was unlocked")
    return unlocker.opened
