"""The dashboard's routes. Who reaches them is decided before any of this runs (shoal.transport's Guard and
services/gateway/policy.py): admins with their client bundle reach everything; a browser with a live session
cookie reaches `GET /` and `GET /ui/...`; a browser with nothing reaches only `/ui/login` (the token exchange).

- `GET /` → 307 to `/ui/` (no Docker Engine API path is `/`);
- `GET /ui/` and `GET /ui/static/{app.js,style.css}`: the page, files shipped in the package;
- `GET /ui/login?token=T`: a valid token (once, within its lifetime) sets the session cookie and sends the
  browser on to `/ui/`; anything else is 401 and sets nothing;
- `GET /ui/logout`: forgets the session, clears the cookie;
- `GET /ui/stream`: Server-Sent Events, `snapshot` (the whole view, when it changed, at most once per
  `SHOAL_UI_INTERVAL`) and `events` (the feed's new events); 503 `ui_busy` past `SHOAL_UI_MAX_CLIENTS`;
- `POST /v1/ui/login`: (admins) a new login link, `{"path", "expires_at", "expires_in"}` (`shoal ui`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse

from services.gateway.context import GatewayContext
from services.gateway.ui.hub import DashboardHub
from services.gateway.ui.sessions import (
    COOKIE_NAME,
    UiSessions,
    clear_cookie_header,
    cookie_value,
    set_cookie_header,
)
from shoal import pki
from shoal.errors import NotFound, PermissionDenied, Unauthenticated
from shoal.transport import scope_identity

STATIC = Path(__file__).parent / "static"
FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
         "favicon.svg": "image/svg+xml"}
KEEPALIVE = 15.0
#: every dashboard answer: nothing inline or from elsewhere runs, no framing, the login token never leaves in a
#: Referer, nothing is cached
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url=/ui/"><link rel="icon" href="/ui/static/favicon.svg">
<title>shoal: signed in</title></head>
<body><p>Signed in. <a href="/ui/">Open the dashboard</a>.</p></body></html>
"""


def install(app: FastAPI, ctx: GatewayContext, sessions: UiSessions, hub: DashboardHub) -> None:
    router = APIRouter(tags=["dashboard"])
    settings = ctx.settings

    def enabled() -> None:
        if not settings.ui:
            raise NotFound("the dashboard is off on this gateway (SHOAL_UI=false)")

    _page_routes(router, enabled)

    @router.get("/ui/login", include_in_schema=False)
    async def login(token: str = "") -> Response:
        enabled()
        granted = sessions.redeem(token)
        if granted is None:
            ctx.metrics.inc("gateway_ui_logins_refused_total", help="dashboard login links refused")
            return JSONResponse({"message": "this login link is unknown, expired or already used: run `shoal ui` "
                                            "for a new one", "code": "unauthenticated"},
                                status_code=401, headers=HEADERS)
        ctx.metrics.inc("gateway_ui_logins_total", help="dashboard sessions opened")
        return HTMLResponse(LOGIN_PAGE, headers={**HEADERS, "Set-Cookie": set_cookie_header(granted)})

    @router.get("/ui/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        enabled()
        sessions.logout(cookie_value(request.scope, COOKIE_NAME))
        return HTMLResponse('<!doctype html><link rel="icon" href="/ui/static/favicon.svg"><title>shoal</title>'
                            "<p>Signed out.</p>",
                            headers={**HEADERS, "Set-Cookie": clear_cookie_header()})

    @router.get("/ui/stream", include_in_schema=False)
    async def stream() -> Response:
        enabled()
        browser = hub.subscribe()

        async def body() -> Any:
            try:
                yield b"retry: 2000\n\n"
                while True:
                    message = await browser.next(KEEPALIVE)
                    if message is None:
                        return
                    yield message or b": keep-alive\n\n"
            finally:
                hub.unsubscribe(browser)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={**HEADERS, "X-Accel-Buffering": "no"})

    @router.post("/v1/ui/login", summary="A one-time login link for the dashboard (`shoal ui`)",
                 responses={401: {"description": "no client certificate (admins only)", "content": {
                     "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}})
    async def new_login(request: Request) -> dict[str, Any]:
        enabled()
        who = scope_identity(request.scope)
        if who is None:
            raise Unauthenticated("a login link is issued to an admin client certificate only")
        if who.role != pki.ADMIN:
            raise PermissionDenied(f"{who.describe()} may not issue dashboard logins: admins only")
        token, expires_at = sessions.issue_token(who)
        ctx.metrics.inc("gateway_ui_login_links_total", help="dashboard login links issued")
        return {"path": f"/ui/login?token={token}", "expires_at": expires_at, "expires_in": sessions.token_ttl}

    app.include_router(router)


def _page_routes(router: APIRouter, enabled: Callable[[], None]) -> None:
    """The dashboard's page and static files (`enabled()` raises the 404 when the dashboard is off)."""

    @router.get("/", include_in_schema=False)
    async def root() -> Response:
        enabled()
        return RedirectResponse("/ui/", status_code=307, headers=HEADERS)

    @router.get("/ui", include_in_schema=False)
    async def ui_bare() -> Response:
        enabled()
        return RedirectResponse("/ui/", status_code=307, headers=HEADERS)

    @router.get("/ui/", include_in_schema=False)
    async def page() -> Response:
        enabled()
        return HTMLResponse((STATIC / "index.html").read_text(), headers=HEADERS)

    @router.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        enabled()
        if name not in FILES:
            raise NotFound(f"no dashboard file {name!r}; there are {', '.join(sorted(FILES))}")
        return Response((STATIC / name).read_bytes(), media_type=FILES[name], headers=HEADERS)
