"""The agent-facing HTTP API of a dispatcher (JSON over HTTP; SwarmKit's gRPC Dispatcher service).

    POST /v1/sessions                          register      -> {session_id, node_id, heartbeat_period}
    POST /v1/sessions/{sid}/heartbeat          heartbeat     -> {period}                 (404: register again)
    GET  /v1/sessions/{sid}/assignments?after=SEQ&wait=S     -> complete | incremental   (long poll)
    POST /v1/sessions/{sid}/status             {updates}     -> {accepted}               (403: not your task)

Bodies are validated here (pydantic, at the edge); unknown fields are ignored so agents and dispatchers of
neighbouring versions still understand each other."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, field_validator

from services.dispatcher.core import AGENT_STATES
from services.dispatcher.loop import Dispatcher
from shoal.models.states import TaskState

NODE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Platform(BaseModel):
    os: str = ""
    arch: str = ""


class NodeResources(BaseModel):
    nano_cpus: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)


class NodeDescription(BaseModel):
    hostname: str = Field(min_length=1, max_length=255)
    platform: Platform = Field(default_factory=Platform)
    resources: NodeResources = Field(default_factory=NodeResources)
    executors: list[str] = Field(default_factory=list)


class RegisterRequest(BaseModel):
    node_id: str | None = Field(default=None, pattern=NODE_ID_PATTERN)
    description: NodeDescription
    addr: str | None = None


class ReportedStatus(BaseModel):
    state: str
    message: str = ""
    err: str | None = None
    timestamp: float | None = None
    pid: int | None = None
    exit_code: int | None = None

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


class StatusUpdate(BaseModel):
    task_id: str = Field(min_length=1)
    status: ReportedStatus


class StatusReport(BaseModel):
    updates: list[StatusUpdate] = Field(max_length=10_000)


def build_router(dispatcher: Dispatcher) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["agent protocol"])

    @router.post("", summary="Register a node and open a session")
    async def register(body: RegisterRequest, request: Request) -> dict[str, Any]:
        # SwarmKit records the address the manager sees the node at, unless the node says otherwise.
        addr = body.addr or (request.client.host if request.client else None)
        return await dispatcher.register(body.node_id, body.description.model_dump(), addr)

    @router.post("/{session_id}/heartbeat", summary="Heartbeat; answers the next period")
    async def heartbeat(session_id: str) -> dict[str, Any]:
        return await dispatcher.heartbeat(session_id)

    @router.get("/{session_id}/assignments", summary="Long poll for the next assignment message")
    async def assignments(session_id: str, after: int = Query(0, ge=0),
                          wait: float = Query(0.0, ge=0.0)) -> dict[str, Any]:
        return await dispatcher.assignments(session_id, after, wait)

    @router.post("/{session_id}/status", summary="Report task statuses (own tasks only)")
    async def status(session_id: str, body: StatusReport) -> dict[str, Any]:
        updates = [(u.task_id, u.status.model_dump()) for u in body.updates]
        return {"accepted": dispatcher.report_status(session_id, updates)}

    return router
