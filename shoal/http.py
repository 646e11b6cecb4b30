"""What every shoal FastAPI app shares (servers and clients are built in shoal.transport): the error handler
mapping ShoalError (and request validation) to `{"message": ...}` with a 4xx/5xx, and the `/healthz`,
`/readyz`, `/metrics` routes every process serves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoal.errors import ShoalError
from shoal.metrics import Registry

log = logging.getLogger(__name__)

#: `code` of the errors the framework raises itself (ShoalErrors carry theirs)
HTTP_CODES = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "body_too_large", 415: "unsupported_media_type",
              503: "unavailable"}


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


def install_error_handlers(app: FastAPI) -> None:
    document_errors(app)

    @app.exception_handler(ShoalError)
    async def _shoal_error(_: Request, exc: ShoalError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # unknown routes, wrong methods, framework-raised errors: the same {message, code} as everything else
        code = HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "invalid_argument")
        return JSONResponse({"message": str(exc.detail), "code": code}, status_code=exc.status_code,
                            headers=exc.headers)

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
        return PlainTextResponse(registry.render(), media_type="text/plain; version=0.0.4")

    return router
