"""The Docker Engine API's swarm subset on the gateway's port (docs/docker-api.md): `install(app)` adds the
version-prefix rewriting (`/v1.41/services` → `/services`) and the routes."""

from __future__ import annotations

import json
import re

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.docker.routes import router
from services.gateway.docker.views import API_VERSION

_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)?$")


class DockerPaths:
    """ASGI middleware: strips Docker's `/vX.Y` prefix (shoal's own `/v1/...` has no dot and is untouched);
    a version newer than 1.41 gets dockerd's 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.max = tuple(int(x) for x in API_VERSION.split("."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            m = _VERSIONED.match(scope["path"])
            if m:
                if (int(m.group(1)), int(m.group(2))) > self.max:
                    body = json.dumps({"message": f"client version {m.group(1)}.{m.group(2)} is too new. "
                                                  f"Maximum supported API version is {API_VERSION}"}).encode()
                    await send({"type": "http.response.start", "status": 400,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    return
                path = m.group(3) or "/"
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.add_middleware(DockerPaths)


__all__ = ["install"]
