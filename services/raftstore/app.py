"""The raftstore member's HTTP API (the contract in shoal/store/client.py), plus /healthz, /readyz, /metrics.

`create_app` wires the routes (services/raftstore/routes/: writes, reads, members) to one member. Writes: the
leader stamps, validates, proposes and answers once applied; a follower forwards the write to the leader's API
(SwarmKit's raft proxy) or answers 503 NotLeader when there is none. Reads are linearizable through ReadIndex
unless `stale=true`; watches long-poll this member's applied events. Every error is a ShoalError, so
StoreClient rebuilds the same type on its side. Who may call what: services/raftstore/access.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI

from services.raftstore.access import ON_BEHALF_HEADER_RAW, ON_BEHALF_NODE_HEADER_RAW
from services.raftstore.hints import HintPublisher
from services.raftstore.member import Member
from services.raftstore.routes import members, reads, writes
from services.raftstore.routes.context import FORWARDED_HEADER_RAW, Context
from services.raftstore.settings import RaftstoreSettings
from shoal.bus.base import Bus
from shoal.bus.nats import NatsBus
from shoal.clock import Clock, SystemClock
from shoal.errors import ShoalError
from shoal.http import (
    HttpMetrics,
    install_error_handlers,
    instrument,
    observe_request,
    ops_router,
    read_body,
    send_json,
)
from shoal.metrics import Registry
from shoal.pki import Identity
from shoal.runner import refreeze_heap
from shoal.transport import Credentials, scope_identity

log = logging.getLogger(__name__)

WriteHandler = Callable[[bytes, "Identity | None", "str | None", "str | None", "str | None"],
                        Awaitable[tuple[int, bytes]]]


class RaftstoreApp(FastAPI):
    """FastAPI, plus a fast path for `POST /v1/txn`, the write every control-plane change goes through: it is
    answered straight from the ASGI call, skipping the middleware stack, routing and request objects (measured
    on the leader at 64 clients: the framework layers cost more CPU than Raft, WAL and apply together). The
    caller's identity (from the Guard's scope) goes to the handler, which applies the kind-`ca` rule itself."""

    write_handler: WriteHandler | None = None
    http_metrics: HttpMetrics | None = None
    metrics: Registry | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self.write_handler
        if handler is None or scope["type"] != "http" or scope["path"] != "/v1/txn" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        payload = await read_body(receive)
        if payload is None:
            return
        start = time.perf_counter()
        forwarded_by = on_behalf_of = on_behalf_node = None
        for k, v in scope["headers"]:
            if k == FORWARDED_HEADER_RAW:
                forwarded_by = v.decode()
            elif k == ON_BEHALF_HEADER_RAW:
                on_behalf_of = v.decode()
            elif k == ON_BEHALF_NODE_HEADER_RAW:
                on_behalf_node = v.decode()
        try:
            status, body = await handler(payload, scope_identity(scope), forwarded_by, on_behalf_of,
                                         on_behalf_node)
        except ShoalError as e:
            status, body = e.status, json.dumps(e.to_json(), separators=(",", ":")).encode()
        except Exception as e:  # the same answer the framework's error middleware would give, logged
            log.exception("raftstore: POST /v1/txn failed")
            status = 500
            body = json.dumps({"message": f"store: internal error: {e!r}", "code": "internal"}).encode()
        await send_json(send, status, body, scope)
        elapsed = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.observe("store_txn_duration_seconds", elapsed,
                                 "POST /v1/txn on this member, received to answered (forwarding, raft commit "
                                 "and apply included)", labels={"outcome": "ok" if status < 400 else "error"})
        if self.http_metrics is not None:
            observe_request(self.http_metrics, "POST", "/v1/txn", status, elapsed)


def create_app(settings: RaftstoreSettings, member: Member, bus: Bus | None = None, *,
               http: httpx.AsyncClient | None = None, clock: Clock | None = None,
               creds: Credentials | None = None) -> FastAPI:
    """`creds`: this member's credentials, for forwarding to the leader (None: in-process tests, with `http`)."""
    driver = member.driver
    metrics = member.metrics
    ctx = Context(settings, member, clock or SystemClock(), creds, http)
    hints = HintPublisher(bus, metrics=metrics)
    driver.on_leader_commit = hints.offer

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await member.start()
        if isinstance(bus, NatsBus):
            bus.start()
        publisher = asyncio.create_task(hints.run(), name="raftstore.hints")
        promoter = asyncio.create_task(members.promote_learners(ctx), name="raftstore.promoter")
        refreezer = asyncio.create_task(refreeze_heap(), name="raftstore.gc")
        try:
            yield
        finally:
            publisher.cancel()
            promoter.cancel()
            refreezer.cancel()
            await members.hand_over(ctx)
            await member.stop()
            if bus is not None:
                await bus.close()
            await ctx.close()

    app = RaftstoreApp(title=f"shoal raftstore {member.me.id}", lifespan=lifespan)
    install_error_handlers(app)
    app.http_metrics = instrument(app, metrics)
    app.metrics = metrics
    metrics.gauge("raft_term", lambda: driver.term, "current raft term")
    metrics.gauge("raft_commit_index", lambda: driver.commit_index, "raft commit index")
    metrics.gauge("raft_applied_index", lambda: driver.applied_index, "last applied raft index")
    metrics.gauge("raft_is_leader", lambda: float(driver.is_leader), "1 if this member leads")
    app.include_router(ops_router(metrics, driver.ready, lambda: {"id": member.me.id, "role": driver.role.label}))

    async def write(raw: bytes, ident: Identity | None, forwarded_by: str | None,
                    on_behalf_of: str | None, on_behalf_node: str | None) -> tuple[int, bytes]:
        return await writes.write(ctx, raw, ident, forwarded_by, on_behalf_of, on_behalf_node)

    app.write_handler = write
    app.include_router(reads.router(ctx))
    app.include_router(members.router(ctx))
    return app
