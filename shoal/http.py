"""What every shoal FastAPI app shares (servers and clients are built in shoal.transport): the error handler
mapping ShoalError (and request validation) to `{"message": ...}` with a 4xx/5xx, and the `/healthz`,
`/readyz`, `/metrics` routes every process serves."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shoal import limits
from shoal.errors import ShoalError
from shoal.metrics import CONTENT_TYPE, Registry
from shoal.transport import CORK_SCOPE_KEY

log = logging.getLogger(__name__)

#: `code` of the errors the framework raises itself (ShoalErrors carry theirs)
HTTP_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
              429: "rate_limited", 503: "unavailable"}


def format_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "invalid request: " + "; ".join(parts)


#: the error answers every route may give (docs/api.md): what the OpenAPI schema documents for each operation
ERROR_RESPONSES = {
    "400": "invalid input (a field, a body that is not JSON, a version missing)",
    "403": "the caller's certificate may not do this (docs/security.md)",
    "404": "no such object or route",
    "409": "a name taken or a stale version",
    "413": "body over the server's limit",
    "429": "the caller is doing this too often (a node registering over and over); retry after a pause",
    "503": "the store is unavailable, or the server is overloaded",
}
_ERROR_SCHEMA = {"type": "object", "required": ["message", "code"],
                 "properties": {"message": {"type": "string"}, "code": {"type": "string"}}}


def document_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI schema say what its routes really answer: the `{message, code}` errors above on
    every operation, and no FastAPI 422 (validation errors are 400 here), so schema checkers (schemathesis)
    find the documented codes."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                responses = op["responses"]
                responses.pop("422", None)
                for status, why in ERROR_RESPONSES.items():
                    responses.setdefault(status, {"description": why, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(request: Request) -> list[str]:
    """Every method served on this request's path. Starlette's 405 names only the methods of the first route
    whose path matched; a path served by several routes (`GET` and `POST` on `/v1/services`) must list them all
    (RFC 9110 `Allow`). A documented path answers what its OpenAPI entry documents (the most literal template
    that matches: `/v1/services/plan`, not `/v1/services/{ref}`); another is asked of the routes themselves,
    one method at a time (included routers do not expose their methods)."""
    path = request.scope["path"]
    best: tuple[int, dict[str, Any]] | None = None
    for template, ops in request.app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template)), path):
            params = template.count("{")
            if best is None or params < best[0]:
                best = (params, ops)
    if best is not None:
        return sorted(m.upper() for m in best[1] if m.upper() in HTTP_METHODS)
    allowed = []
    for method in sorted(HTTP_METHODS - {"HEAD", "OPTIONS"}):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    document_errors(app)

    @app.exception_handler(ShoalError)
    async def _shoal_error(_: Request, exc: ShoalError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # unknown routes, wrong methods, framework-raised errors: the same {message, code} as everything else
        code = HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse({"message": str(exc.detail), "code": code}, status_code=exc.status_code,
                            headers=headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse({"message": f"internal error: {type(exc).__name__}", "code": "internal"},
                            status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"message": format_validation_error(exc), "code": "invalid_argument"},
                            status_code=400)


def ops_router(registry: Registry, ready: Callable[[], bool] = lambda: True,
               health: Callable[[], dict[str, Any]] | None = None) -> APIRouter:
    """`/healthz` (process alive), `/readyz` (able to do its job), `/metrics` (Prometheus text)."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", **(health() if health else {})}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @router.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(registry.render(), media_type=CONTENT_TYPE)

    return router


#: the route label of a request no route matched (404s, scanners): one series, whatever the path
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: dict[str, Any]) -> str:
    """The template of the route that answered (`/v1/services/{ref}`), never the raw path: label values stay
    bounded whatever clients send."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(path) if path else UNMATCHED_ROUTE


class HttpMetrics:
    """ASGI middleware every shoal app installs (`instrument`): `shoal_http_requests_total{method,route,status}`
    and `shoal_http_request_duration_seconds{method,route}`, labelled by route template. A plain ASGI class
    rather than `@app.middleware("http")`: no request object, no extra task per request (docs/performance.md
    has its measured cost)."""

    def __init__(self, app: Any, registry: Registry) -> None:
        self.app = app
        self.requests = registry.counter("http_requests_total", "HTTP requests answered, by route template and "
                                         "status", labels=("method", "route", "status"))
        self.latency = registry.histogram("http_request_duration_seconds", "HTTP request latency (to the end of "
                                          "the response body), by route template", labels=("method", "route"))
        #: (method, route, status) -> its counter and histogram children; bounded like the labels themselves
        self.children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            observe_request(self, scope["method"], route_template(scope), status, time.perf_counter() - start)


#: methods labelled as themselves; any other (a client may send any token) is labelled OTHER
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# ---- fast paths: a route answered straight from the ASGI call (raftstore /v1/txn, dispatcher heartbeats) ----------
async def read_body(receive: Any) -> bytes | None:
    """The whole request body (the server's Limits bound it); None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Any, status: int, body: bytes, scope: Any = None) -> None:
    """Answer with `body`, already encoded JSON. With the request's `scope`, head and body leave as one write
    (one TLS record, one send) through the connection's `CorkedTransport` (shoal.transport)."""
    cork = scope.get(CORK_SCOPE_KEY) if scope is not None else None
    if cork is not None:
        cork.hold()
    try:
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    finally:
        if cork is not None:
            cork.release()


def observe_request(m: HttpMetrics, method: str, route: str, status: int, seconds: float) -> None:
    key = (method if method in HTTP_METHODS else "OTHER", route, status)
    children = m.children.get(key)
    if children is None:  # labels() validates and locks: once per series, not once per request
        children = m.children[key] = (m.requests.labels(key[0], route, str(status)), m.latency.labels(key[0], route))
    children[0].inc()
    children[1].observe(seconds)


def instrument(app: FastAPI, registry: Registry) -> HttpMetrics:
    """Install the HTTP request metrics on `app` (counted into `registry`). Returns the middleware's metrics for
    an app that answers some requests outside the middleware stack (the raftstore's `/v1/txn` fast path)."""
    app.add_middleware(HttpMetrics, registry=registry)
    for what, (name, help_text) in limits.REFUSED_METRICS.items():
        registry.gauge(name, lambda what=what: limits.REFUSED[what], help_text)  # type: ignore[misc]
    return HttpMetrics(lambda *_: None, registry)
