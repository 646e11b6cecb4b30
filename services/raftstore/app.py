"""The raftstore member's HTTP API (the contract in shoal/store/client.py), plus /healthz, /readyz, /metrics.

Writes: the leader stamps the transaction's `time`, validates it, proposes it and answers once it is applied;
a follower forwards the write to the leader's API (SwarmKit's raft proxy) or answers 503 NotLeader when there
is none. Reads are linearizable through ReadIndex unless `stale=true`; watches long-poll this member's applied
events. Every error is a ShoalError, so StoreClient rebuilds the same type on its side."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Query, Request, Response

from services.raftstore.fsm import encode_txn
from services.raftstore.hints import HintPublisher
from services.raftstore.member import Member
from services.raftstore.settings import RaftstoreSettings
from shoal.bus.base import Bus
from shoal.bus.nats import NatsBus
from shoal.clock import Clock, SystemClock
from shoal.errors import InvalidArgument, NotLeader, OutcomeUnknown
from shoal.http import client_factory, install_error_handlers, ops_router
from shoal.models.kinds import Kind
from shoal.store.memory import validate_txn

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-shoal-forwarded-by"
FORWARD_POOLS = 4
MAX_WATCH_WAIT = 60.0
_KINDS = frozenset(k.value for k in Kind)
_TRUE = frozenset({"1", "true", "yes", "on"})


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json")


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise InvalidArgument(f"store: unknown kind {kind!r}; kinds are {sorted(_KINDS)}")


def create_app(settings: RaftstoreSettings, member: Member, bus: Bus | None = None, *,
               http: httpx.AsyncClient | None = None, clock: Clock | None = None) -> FastAPI:
    driver = member.driver
    mem = driver.fsm.mem
    metrics = member.metrics
    clock = clock or SystemClock()
    hints = HintPublisher(bus, metrics=metrics)
    driver.on_leader_commit = hints.offer
    # Several small pools rather than one big one: httpcore scans every pooled connection (with syscalls) on
    # each request, so the cost per forwarded write grows with the pool; round-robin keeps each pool small.
    # They are built on first use: each loads the CA bundle (0.1-0.5 s of CPU), which a leader never needs.
    forwarders: list[httpx.AsyncClient] = []
    turn = itertools.count()

    def forwarder() -> httpx.AsyncClient:
        if http is not None:
            return http
        i = next(turn) % FORWARD_POOLS
        if i >= len(forwarders):
            forwarders.append(client_factory(timeout=60.0))
            i = len(forwarders) - 1
        return forwarders[i]

    # Forwarded writes wait for commit like local ones; only connecting must be quick.
    forward_timeout = httpx.Timeout(60.0, connect=1.0)
    hash_cache: dict[str, Any] = {"revision": -1, "hash": ""}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await member.start()
        if isinstance(bus, NatsBus):
            bus.start()
        publisher = asyncio.create_task(hints.run(), name="raftstore.hints")
        try:
            yield
        finally:
            publisher.cancel()
            await member.stop()
            if bus is not None:
                await bus.close()
            for f in forwarders:
                await f.aclose()

    app = FastAPI(title=f"shoal raftstore {member.me.id}", lifespan=lifespan)
    install_error_handlers(app)
    metrics.gauge("raft_term", lambda: driver.term, "current raft term")
    metrics.gauge("raft_commit_index", lambda: driver.commit_index, "raft commit index")
    metrics.gauge("raft_applied_index", lambda: driver.applied_index, "last applied raft index")
    metrics.gauge("raft_is_leader", lambda: float(driver.is_leader), "1 if this member leads")
    app.include_router(ops_router(metrics, driver.ready, lambda: {"id": member.me.id, "role": driver.role.label}))

    # ---- writes -------------------------------------------------------------------------------------------
    @app.post("/v1/txn")
    async def txn(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise InvalidArgument(f"store: the transaction is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("store: the transaction must be a JSON object with an 'ops' list")
        if not driver.is_leader:
            validate_txn(body, encoded_size=len(raw))
            return await _forward(request, raw)
        # The leader picks the timestamp once, so every replica applies identical bytes.
        stamped = {"ops": body.get("ops"), "time": clock.now()}
        data = encode_txn(stamped)
        validate_txn(stamped, encoded_size=len(data))
        result = await driver.propose(data)
        return _json(result.to_json())

    async def _forward(request: Request, raw: bytes) -> Response:
        leader = member.member(driver.leader_id)
        if leader is None:
            raise NotLeader(f"store: there is no raft leader right now (member {member.me.id} is "
                            f"{driver.role.label} in term {driver.term}); retry shortly", leader=None)
        if request.headers.get(FORWARDED_HEADER):
            # Forwarded to us by a member that thought we lead: do not bounce it around; the client retries.
            raise NotLeader(f"store: member {member.me.id} is not the raft leader either (leader: "
                            f"{leader.id}); retry", leader=leader.id)
        url = leader.api_url + "/v1/txn"
        metrics.inc("store_forwarded_writes_total", 1, "writes forwarded to the raft leader")
        try:
            resp = await forwarder().post(url, content=raw, timeout=forward_timeout, headers={
                FORWARDED_HEADER: str(member.me.id), "content-type": "application/json"})
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            # Nothing reached the leader: safe to retry elsewhere.
            raise NotLeader(f"store: raft leader {leader.id} at {leader.api_url} is unreachable ({e}); retry",
                            leader=leader.id) from None
        except httpx.HTTPError as e:
            raise OutcomeUnknown(f"store: forwarding the write to raft leader {leader.id} failed after it was "
                                 f"sent ({e!r}); it may still commit: re-read to find out") from None
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    # ---- reads --------------------------------------------------------------------------------------------
    async def _barrier(stale: str | None) -> None:
        if stale is None or stale.lower() not in _TRUE:
            await driver.read_barrier()

    @app.get("/v1/objects/{kind}")
    async def list_objects(kind: str, request: Request) -> Response:
        _check_kind(kind)
        filters = dict(request.query_params)
        stale = filters.pop("stale", None)
        if "kind" in filters:
            raise InvalidArgument("store: 'kind' is not a filterable field")
        await _barrier(stale)
        return _json({"revision": mem.revision, "items": mem.list(kind, **filters)})

    @app.get("/v1/objects/{kind}/{obj_id}")
    async def get_object(kind: str, obj_id: str, stale: str | None = None) -> Response:
        _check_kind(kind)
        await _barrier(stale)
        return _json(mem.get(kind, obj_id))

    @app.get("/v1/watch")
    async def watch(after: int = Query(0, ge=0), wait: float = Query(0.0, ge=0.0)) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WATCH_WAIT)
        events = mem.events_since(after)
        while not events and (left := deadline - loop.time()) > 0:
            await driver.wait_applied(left)
            events = mem.events_since(after)
        return _json({"revision": mem.revision, "events": [e.to_json() for e in events]})

    @app.get("/v1/status")
    async def status() -> Response:
        if hash_cache["revision"] != mem.revision:
            hash_cache.update(revision=mem.revision, hash=mem.state_hash())
        leader = member.member(driver.leader_id)
        return _json({
            "id": member.me.id,
            "role": driver.role.label,
            "leader": driver.leader_id,
            "leader_url": leader.api_url if leader else None,
            "term": driver.term,
            "commit_index": driver.commit_index,
            "applied_index": driver.applied_index,
            "state_hash": hash_cache["hash"],
            "members": [m.to_json() for m in member.members],
            "peers_connected": member.transport.connected(),
        })

    return app
