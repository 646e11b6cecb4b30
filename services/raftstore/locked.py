"""A raftstore member whose data keys are autolocked (atrest.Locked): it serves nothing of the store until an
admin gives it the unlock key.

While locked the member's API port serves only:
- `GET /healthz`, `GET /readyz` (managers and admins): 503 `{"message", "code": "locked", "locked": true,
  "failed_unlocks": n}` — so probes say why;
- `GET /v1/status` (managers and admins): 200 `{"id", "role": "locked", "locked": true, "failed_unlocks": n}`,
  which the gateway's `GET /v1/cluster` passes on, so `shoal cluster` lists the member as `locked`;
- anything else a manager asks (the store API): 503 `{"code": "unavailable"}`, which store clients take as "try
  the next member" (a 403 would stop them);
- `POST /v1/unlock {"key": "SWMKEY-1-..."}` (admins only): the right key opens the data keys, the member is
  built from its data and this server gives way to the normal one; a malformed key is 400, a wrong one 401
  `wrong_unlock_key`, counted (`failed_unlocks`) and logged without the key.
The unlock is per member: each manager's data keys are wrapped by the key that was current when it last ran,
and the CLI (`shoal swarm unlock`) sends it to the local manager's member."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.raftstore import atrest
from services.raftstore.member import Member
from shoal import pki
from shoal.transport import Credentials, Identity, server_config

log = logging.getLogger(__name__)

UNLOCK_PATH = "/v1/unlock"
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/v1/status"})


def policy(ident: Identity, method: str, path: str) -> str | None:
    """What a locked member serves, by caller: only admins unlock; managers reach the rest (answered 503)."""
    if path == UNLOCK_PATH:
        return None if method == "POST" and ident.role == pki.ADMIN else (
            f"raftstore: only an admin unlocks a member; {ident.describe()} may not call {method} {path}")
    if ident.role == pki.MANAGER or (ident.role == pki.ADMIN and path in HEALTH_PATHS):
        return None
    return (f"raftstore: this member is locked (autolock) and serves only POST {UNLOCK_PATH} (admins) and "
            f"health until it is unlocked; {ident.describe()} may not call {method} {path}")


class Unlocker:
    """Tries unlock keys against the member's data keys; `member` is set once one opens them."""

    def __init__(self, open_member: Callable[[bytes], Member], member_id: int = 0) -> None:
        self._open = open_member
        self.member_id = member_id
        self.failed = 0
        self.member: Member | None = None
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
        except atrest.WrongKey:
            self.failed += 1
            log.warning("raftstore: a wrong unlock key was refused (%d so far)", self.failed)
            return 401, {"message": "unlock: this is not the unlock key of this member's data (if the key was "
                                    "rotated while it was down, give the previous one)",
                         "code": "wrong_unlock_key", "failed_unlocks": self.failed}
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
        return JSONResponse({"message": f"raftstore: this member is locked (autolock) and serves no store "
                                        f"requests until it is unlocked (/{path})", "code": "unavailable",
                             "locked": True}, status_code=503)

    return app


async def wait_for_unlock(host: str, port: int, creds: Credentials, open_member: Callable[[bytes], Member],
                          member_id: int = 0) -> Member:
    """Serve the locked API on the member's port until an admin unlocks it; returns the unlocked member."""
    unlocker = Unlocker(open_member, member_id)
    server = uvicorn.Server(server_config(create_app(unlocker), host, port, creds, policy))
    serving = asyncio.create_task(server.serve(), name="raftstore.locked")
    unlocked = asyncio.create_task(unlocker.unlocked.wait())
    await asyncio.wait((serving, unlocked), return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serving
    unlocked.cancel()
    if unlocker.member is None:
        raise RuntimeError("raftstore: the locked API stopped before the member was unlocked")
    return unlocker.member
