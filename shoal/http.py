"""What every shoal FastAPI app shares (servers and clients are built in shoal.transport): the error handler
mapping ShoalError (and request validation) to `{"message": ...}` with a 4xx/5xx, and the `/healthz`,
`/readyz`, `/metrics` routes every process serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from shoal.errors import ShoalError
from shoal.metrics import Registry


def format_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShoalError)
    async def _shoal_error(_: Request, exc: ShoalError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status)

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

    @router.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(registry.render(), media_type="text/plain; version=0.0.4")

    return router
