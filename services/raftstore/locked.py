"""A raftstore member whose keys are autolocked (atrest.Locked): it serves nothing of the store — not even TLS:
its own TLS key is encrypted under the unlock key (shoal.keyfile) — until an admin gives it the unlock key on its
machine.

While locked the member's API and raft ports are closed (as a locked SwarmKit manager's are: to the others it is
unreachable, store clients move on to another member), and a local socket `<cert dir>/unlock.sock` (0600, in the
0700 certificate directory: only the manager's own user reaches it, as only root reaches a Docker daemon's
socket) serves only:
- `GET /healthz`, `GET /readyz`: 503 `{"message", "code": "locked", "locked": true, "failed_unlocks": n}`;
- `GET /v1/status`: 200 `{"id", "role": "locked", "locked": true, "failed_unlocks": n}`;
- `POST /v1/unlock {"key": "SWMKEY-1-..."}`: the right key opens the data keys and the TLS key, the member is
  built from its data and the socket gives way to the normal TLS server; a malformed key is 400, a wrong one 401
  `wrong_unlock_key`, counted (`failed_unlocks`) and logged without the key;
- anything else: 503 `{"code": "locked"}`.
The unlock is per member: each manager's keys are wrapped by the key that was current when it last ran, and the
CLI (`shoal swarm unlock`) sends it to the sockets of the local managers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.raftstore import atrest
from services.raftstore.member import Member
from services.raftstore.wal import WalCorrupt
from shoal.keyfile import WrongKEK

log = logging.getLogger(__name__)

UNLOCK_PATH = "/v1/unlock"
SOCKET_NAME = "unlock.sock"
#: sun_path holds 108 bytes with its terminating NUL
MAX_SOCKET_PATH = 107


def socket_path(cert_dir: Path) -> Path:
    return Path(cert_dir) / SOCKET_NAME


class Unlocker:
    """Tries unlock keys against the member's data keys; `member` is set once one opens them."""

    def __init__(self, open_member: Callable[[bytes], Member], member_id: int = 0) -> None:
        self._open = open_member
        self.member_id = member_id
        self.failed = 0
        self.member: Member | None = None
        #: why a right key still did not make a member (damaged data, a TLS key that does not open)
        self.error: Exception | None = None
        self.unlocked = asyncio.Event()

    def health(self) -> tuple[int, dict[str, Any]]:
        return 503, {"message": "raftstore: this member is locked (autolock): run `shoal swarm unlock` on its "
                                "manager", "code": "locked", "locked": True, "failed_unlocks": self.failed}

    def status(self) -> dict[str, Any]:
        return {"id": self.member_id, "role": "locked", "locked": True, "failed_unlocks": self.failed}

    def unlock(self, body: Any) -> tuple[int, dict[str, Any]]:
        if self.member is not None:
            return 200, {"unlocked": True}
        text = body.get("key") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return 400, {"message": 'unlock: the body is {"key": "SWMKEY-1-..."}', "code": "invalid_argument"}
        try:
            key = atrest.parse_unlock_key(text)
        except ValueError as e:
            return 400, {"message": f"unlock: malformed unlock key: {e}", "code": "invalid_argument"}
        try:
            self.member = self._open(key)
        except (atrest.WrongKey, WrongKEK):
            self.failed += 1
            log.warning("raftstore: a wrong unlock key was refused (%d so far)", self.failed)
            return 401, {"message": "unlock: this is not the unlock key of this member's data (if the key was "
                                    "rotated while it was down, give the previous one)",
                         "code": "wrong_unlock_key", "failed_unlocks": self.failed}
        except (atrest.KeysUnusable, WalCorrupt) as e:
            # the key was right but the data or the TLS key cannot be used: the member stops (status 2)
            self.error = e
            self.unlocked.set()
            return 500, {"message": f"unlock: the key is right, but the member cannot start: {e}",
                         "code": "internal"}
        log.info("raftstore: unlocked")
        self.unlocked.set()
        return 200, {"unlocked": True}


def create_app(unlocker: Unlocker) -> FastAPI:
    app = FastAPI(title="shoal raftstore (locked)", openapi_url=None)

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
        return JSONResponse({"message": f"raftstore: this member is locked (autolock) and serves nothing but "
                                        f"health and {UNLOCK_PATH} until it is unlocked (/{path})",
                             "code": "locked", "locked": True}, status_code=503)

    return app


def bind_socket(path: Path) -> socket.socket:
    """A listening unix socket at `path`, 0600 (a stale one from a killed run is replaced)."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise atrest.KeysUnusable(f"raftstore: the unlock socket path {path} is longer than {MAX_SOCKET_PATH} "
                                  "bytes (a unix socket limit): use a shorter certificate directory")
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


async def wait_for_unlock(cert_dir: Path, open_member: Callable[[bytes], Member], member_id: int = 0) -> Member:
    """Serve the locked API on `<cert_dir>/unlock.sock` until an admin unlocks it; returns the unlocked member."""
    unlocker = Unlocker(open_member, member_id)
    path = socket_path(cert_dir)
    sock = bind_socket(path)
    config = uvicorn.Config(create_app(unlocker), log_level="warning", access_log=False, lifespan="off",
                            limit_concurrency=16, h11_max_incomplete_event_size=16 * 1024)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="raftstore.locked")
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
    if unlocker.member is None:
        raise RuntimeError("raftstore: the locked API stopped before the member was unlocked")
    return unlocker.member
