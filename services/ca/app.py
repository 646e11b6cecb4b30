"""`create_app(settings, store=...)`: the CA's FastAPI app.

    POST /v1/join            (anonymous) {token, csrs: {component: csr}, if_manager: {component: csr}, hosts,
                             hostname} -> {node_id, cluster_id, role, certificates: {component: pem}, roots,
                             managers: [addresses of the raft members' machines]}
    POST /v1/renew           (certificate) {csrs: {component: csr}} or {csr}, hosts -> same shape, same identity
    GET  /v1/ca/roots        (anonymous) -> the trusted roots, PEM (a joiner pins them by its token's digest)
    GET  /v1/tokens          (gateway only) -> {worker, manager}: the full join tokens
    POST /v1/tokens/rotate   (gateway only) {role: worker|manager} -> the tokens after rotation
    GET  /v1/unlock-key      (gateway only) -> {unlock_key}: the autolock key ("" while autolock is off)
    POST /v1/unlock-key/rotate (gateway only) -> {unlock_key}: a new one (409 while autolock is off)
    GET  /v1/ca              (gateway only) -> {root_digest, rotating, started, pending: [{node_id, component}],
                             root_cert}
    POST /v1/ca/rotate       (gateway only) -> the same, just after a new root was made (409 while one rotates)

plus /healthz, /readyz, /metrics, /v1/status. Who may call what: `core.policy` (applied by transport.Guard)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.ca.authority import CertificateAuthority
from services.ca.settings import CASettings
from shoal.clock import Clock
from shoal.errors import InvalidArgument, PermissionDenied
from shoal.service import create_subsystem_app
from shoal.store.protocol import Store
from shoal.transport import Revocations, scope_identity


class JoinRequest(BaseModel):
    token: str = Field(min_length=1, max_length=200)
    csrs: dict[str, str] = Field(default_factory=dict, max_length=16)
    #: signed only when the token is the manager token, ignored for a worker token: a machine joining with a
    #: token it cannot tell apart asks for its manager processes here, and the reply's role says what it got
    if_manager: dict[str, str] = Field(default_factory=dict, max_length=16)
    hosts: list[str] = Field(default_factory=list, max_length=16)
    hostname: str = Field(default="", max_length=255)


class RenewRequest(BaseModel):
    csrs: dict[str, str] = Field(default_factory=dict, max_length=16)
    csr: str | None = Field(default=None, max_length=16_384)
    hosts: list[str] = Field(default_factory=list, max_length=16)


class RotateRequest(BaseModel):
    role: str


def build_router(ca: CertificateAuthority) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["certificate authority"])

    @router.post("/join", summary="Join token + CSRs -> certificates of a new node")
    async def join(body: JoinRequest, request: Request) -> dict[str, Any]:
        client = request.client.host if request.client else "unknown"
        return await ca.join(body.token, body.csrs, body.hosts, body.hostname, client, if_manager=body.if_manager)

    @router.post("/renew", summary="A new certificate with the caller's own identity")
    async def renew(body: RenewRequest, request: Request) -> dict[str, Any]:
        ident = scope_identity(request.scope)
        if ident is None:  # Guard lets no certificate-less caller here; defence in depth
            raise PermissionDenied("ca: renewing needs the certificate being renewed")
        csrs = dict(body.csrs)
        if body.csr is not None:
            if csrs:
                raise InvalidArgument("ca: give either csr or csrs, not both")
            csrs = {ident.component: body.csr}
        return await ca.renew(ident, csrs, body.hosts)

    @router.get("/ca/roots", summary="The cluster's trusted root certificates (PEM)")
    async def roots() -> Response:
        return Response(await ca.roots(), media_type="application/x-pem-file")

    @router.get("/ca", summary="The current root and the progress of a root rotation (gateway only)")
    async def ca_status() -> dict[str, Any]:
        return await ca.rotation_status()

    @router.post("/ca/rotate", summary="Start a root rotation (gateway only)")
    async def ca_rotate() -> dict[str, Any]:
        return await ca.rotate_root()

    @router.get("/tokens", summary="The join tokens (gateway only)")
    async def tokens() -> dict[str, str]:
        return await ca.tokens()

    @router.post("/tokens/rotate", summary="Rotate one join token (gateway only)")
    async def rotate(body: RotateRequest) -> dict[str, str]:
        return await ca.rotate(body.role)

    @router.get("/unlock-key", summary="The autolock unlock key (gateway only)")
    async def unlock_key() -> dict[str, str]:
        return {"unlock_key": await ca.unlock_key()}

    @router.post("/unlock-key/rotate", summary="Rotate the autolock unlock key (gateway only)")
    async def rotate_unlock_key() -> dict[str, str]:
        return {"unlock_key": await ca.rotate_unlock_key()}

    return router


def create_app(settings: CASettings, *, store: Store, revocations: Revocations | None = None,
               clock: Clock | None = None, on_unlock_key: Callable[[bytes | None], None] | None = None) -> FastAPI:
    """The CA over `store` (owned by the caller). `revocations` is the list Guard checks; the CA keeps it
    current from the cluster object. `app.state.ca` is the `CertificateAuthority`."""
    ca = CertificateAuthority(settings, store=store, revocations=revocations, clock=clock,
                              on_unlock_key=on_unlock_key)
    app = create_subsystem_app("ca", ca, routers=[build_router(ca)])
    app.state.ca = ca
    return app
