"""The agent-facing HTTP API of a dispatcher (JSON over HTTP; SwarmKit's gRPC Dispatcher service).

    POST /v1/sessions                          register      -> {session_id, node_id, heartbeat_period}
    POST /v1/sessions/{sid}/heartbeat          heartbeat     -> {period, role, roots}    (404: register again)
    GET  /v1/sessions/{sid}/next?after=SEQ[&version=V]&wait=S -> {assignments, endpoints, logs}  (long poll:
                                               each part only when it has news; {} after wait)
    GET  /v1/sessions/{sid}/assignments?after=SEQ&wait=S     -> complete | incremental   (long poll)
    POST /v1/sessions/{sid}/status             {updates}     -> {accepted}               (403: not your task)
    GET  /v1/sessions/{sid}/endpoints?version=V&wait=S -> the node's endpoint table       (long poll)
    GET  /v1/sessions/{sid}/logs?wait=S        log requests for the node                 (long poll)
    POST /v1/sessions/{sid}/logs/{rid}[?done=true]  an NDJSON chunk of records -> 204     (410: reader gone)
    POST /v1/logs                              {node_id, task_ids, tail, since, follow} -> NDJSON stream
                                               (gateways only; 404 no_session: not a node of this dispatcher)

The caller's node id is the CN of its certificate (`scope["shoal.identity"]`), never a field of the body:
register opens a session for that node (a differing body `node_id` is refused with 403), and a session may
be used only by the node that registered it (403 otherwise). Bodies are validated here (pydantic, at the
edge); unknown fields are ignored so agents and dispatchers of neighbouring versions understand each other."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.dispatcher.core import AGENT_STATES
from services.dispatcher.logs import NoSession
from services.dispatcher.loop import Dispatcher
from shoal import logs, pki, wire
from shoal.errors import InvalidArgument, PermissionDenied, Unauthenticated
from shoal.models.specs import MAX_ITEMS, MAX_MEMORY, MAX_NANO_CPUS, Key, Text
from shoal.models.states import TaskState
from shoal.transport import scope_identity

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_SEQ = 2**63 - 1  # assignment message numbers; anything larger is not one


class Body(BaseModel):
    """Agent bodies (issue 16): strict types, bounded sizes, no control characters in what reaches logs."""

    model_config = ConfigDict(strict=True)


class Platform(Body):
    os: Annotated[Text, Field(max_length=64)] = ""
    arch: Annotated[Text, Field(max_length=64)] = ""


class NodeResources(Body):
    nano_cpus: int = Field(default=0, ge=0, le=MAX_NANO_CPUS)
    memory_bytes: int = Field(default=0, ge=0, le=MAX_MEMORY)


class NodeDescription(Body):
    hostname: Key
    platform: Platform = Field(default_factory=Platform)
    resources: NodeResources = Field(default_factory=NodeResources)
    executors: list[Key] = Field(default_factory=list, max_length=MAX_ITEMS)


class RegisterRequest(Body):
    node_id: str | None = Field(default=None, pattern=NODE_ID_PATTERN)
    description: NodeDescription
    addr: Key | None = None


class PortState(Body):
    """One port a task can be reached on from other nodes: its `target_port` at the node's `published_port`
    (SwarmKit's PortStatus; shoal/endpoints.py)."""

    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    target_port: int = Field(ge=1, le=65535)
    published_port: int = Field(ge=1, le=65535)
    publish_mode: Literal["ingress", "host"] = "ingress"


class PortStatus(Body):
    ports: list[PortState] = Field(default_factory=list, max_length=MAX_ITEMS)


class ReportedStatus(Body):
    state: str = Field(json_schema_extra={"enum": [str(x) for x in sorted(s.value for s in AGENT_STATES)]})
    message: str = ""  # free text (an error's output may span lines); bounded by the body limit
    err: str | None = None
    timestamp: float | None = Field(default=None, allow_inf_nan=False)
    pid: int | None = Field(default=None, ge=0, le=2**32)
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**32)
    port_status: PortStatus | None = None

    @field_validator("state")
    @classmethod
    def _agent_state(cls, v: str) -> str:
        try:
            state = TaskState(v)
        except ValueError:
            raise ValueError(f"unknown task state {v!r}") from None
        if state not in AGENT_STATES:
            allowed = ", ".join(s.value for s in sorted(AGENT_STATES, key=lambda s: s.rank))
            raise ValueError(f"an agent may only report one of: {allowed}")
        return v


class StatusUpdate(Body):
    task_id: str = Field(min_length=1, max_length=128)
    status: ReportedStatus


class StatusReport(Body):
    updates: list[StatusUpdate] = Field(max_length=10_000)


def caller(request: Request) -> str:
    """The node id of the caller's verified certificate (transport puts the identity in the scope); a request
    without one never reaches here through Guard, and is refused if it does (an app served without it)."""
    ident = scope_identity(request.scope)
    if ident is None:
        raise Unauthenticated("dispatcher: the agent protocol needs the node's certificate (mutual TLS)")
    return ident.node_id


def build_router(dispatcher: Dispatcher) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["agent protocol"])

    @router.post("", summary="Register a node and open a session")
    async def register(body: RegisterRequest, request: Request) -> dict[str, Any]:
        node_id = caller(request)
        if body.node_id is not None and body.node_id != node_id:
            raise PermissionDenied(f"dispatcher: the body names node {body.node_id} but the certificate is "
                                   f"node {node_id}'s; a node registers only as itself")
        # SwarmKit records the address the manager sees the node at, unless the node says otherwise.
        addr = body.addr or (request.client.host if request.client else None)
        ident = scope_identity(request.scope)
        role = {pki.MANAGER: "manager", pki.WORKER: "worker"}.get(ident.role) if ident else None
        return await dispatcher.register(node_id, body.description.model_dump(), addr, certified=True, role=role)

    @router.post("/{session_id}/heartbeat", summary="Heartbeat; answers the next period")
    async def heartbeat(session_id: str, request: Request) -> dict[str, Any]:
        return await dispatcher.heartbeat(session_id, caller(request))

    @router.get("/{session_id}/assignments", summary="Long poll for the next assignment message")
    async def assignments(session_id: str, request: Request, after: int = Query(0, ge=0),
                          wait: float = Query(0.0, ge=0.0)) -> Response:
        # encoded once, straight from the view's objects (no framework re-encoding of every task: issue 13)
        msg = await dispatcher.assignments(session_id, after, wait, caller(request))
        return Response(wire.dumps(msg), media_type="application/json")

    @router.get("/{session_id}/endpoints", summary="Long poll for the node's endpoint table")
    async def endpoint_table(session_id: str, request: Request,
                             version: str = Query("", max_length=64),
                             wait: float = Query(0.0, ge=0.0)) -> dict[str, Any]:
        return await dispatcher.endpoint_table(session_id, version, wait, caller(request))

    @router.get("/{session_id}/next", summary="Long poll for what is new: assignments, endpoint table, log requests")
    async def session_poll(session_id: str, request: Request, after: int = Query(0, ge=0, le=MAX_SEQ),
                           version: str | None = Query(None, max_length=64),
                           wait: float = Query(0.0, ge=0.0, allow_inf_nan=False)) -> Response:
        # `version` absent: the agent takes no endpoint table; encoded once, like the assignments' answer
        msg = await dispatcher.session_poll(session_id, after, version, wait, caller(request))
        return Response(wire.dumps(msg), media_type="application/json")

    @router.post("/{session_id}/status", summary="Report task statuses (own tasks only)")
    async def status(session_id: str, body: StatusReport, request: Request) -> dict[str, Any]:
        updates = [(u.task_id, u.status.model_dump()) for u in body.updates]
        return {"accepted": dispatcher.report_status(session_id, updates, caller(request))}

    @router.get("/{session_id}/logs", summary="Long poll for log requests of the node's tasks")
    async def log_requests(session_id: str, request: Request,
                           wait: float = Query(0.0, ge=0.0)) -> dict[str, Any]:
        sess = dispatcher.session(session_id, caller(request))
        wait = min(wait, dispatcher.settings.assignment_max_wait)
        return {"requests": await dispatcher.logs.poll(sess.node_id, wait)}

    @router.post("/{session_id}/logs/{request_id}", status_code=204, summary="Send a chunk of log records")
    async def log_chunk(session_id: str, request_id: str, request: Request, done: bool = False) -> Response:
        sess = dispatcher.session(session_id, caller(request))
        data = await read_bounded(request, logs.CHUNK_BYTES + logs.MAX_LINE)
        if data:
            logs.parse_chunk(data)  # a malformed chunk is refused here, not passed to the reader
            await dispatcher.logs.push(sess.node_id, request_id, data)
        if done:
            await dispatcher.logs.push(sess.node_id, request_id, None)
        return Response(status_code=204)

    return router


async def read_bounded(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            raise InvalidArgument(f"dispatcher: a log chunk is at most {limit} bytes")
    return bytes(buf)


class LogReadRequest(Body):
    node_id: str = Field(pattern=NODE_ID_PATTERN)
    task_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1,
                                                                              max_length=logs.MAX_TASKS)
    tail: int | None = Field(default=None, ge=0, le=logs.MAX_TAIL)
    since: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    follow: bool = False


def build_logs_router(dispatcher: Dispatcher) -> APIRouter:
    """`POST /v1/logs` for gateways: the records of a node's tasks, streamed as NDJSON once its agent picks
    the request up on its session (services/dispatcher/logs.py)."""
    router = APIRouter(tags=["logs"])

    @router.post("/v1/logs", summary="Stream the logs of tasks of a node whose session is here")
    async def read_logs(body: LogReadRequest) -> StreamingResponse:
        if body.node_id not in dispatcher.session_of:
            raise NoSession(f"dispatcher: node {body.node_id} has no session with {dispatcher.instance}")
        query = logs.LogQuery(tuple(body.task_ids), body.tail, body.since, body.follow)
        req = dispatcher.logs.open(body.node_id, query)
        return StreamingResponse(dispatcher.logs.stream(req), media_type="application/x-ndjson")

    return router
