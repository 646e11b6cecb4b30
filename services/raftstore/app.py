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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from fastapi import FastAPI, Query, Request, Response

from services.raftstore.fsm import encode_txn
from services.raftstore.hints import HintPublisher
from services.raftstore.member import Member
from services.raftstore.membership import member_context
from services.raftstore.raft import ConfChange, ConfChangeType, Role
from services.raftstore.raft.quorum import majority
from services.raftstore.settings import RaftstoreSettings, parse_peer
from shoal.bus.base import Bus
from shoal.bus.nats import NatsBus
from shoal.clock import Clock, SystemClock
from shoal.errors import Conflict, InvalidArgument, NotFound, NotLeader, OutcomeUnknown, ShoalError, Unavailable
from shoal.http import client_factory, install_error_handlers, ops_router
from shoal.models.kinds import Kind
from shoal.runner import refreeze_heap
from shoal.store.memory import validate_txn

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-shoal-forwarded-by"
FORWARDED_HEADER_RAW = FORWARDED_HEADER.encode()
FORWARD_POOLS = 4
MAX_WATCH_WAIT = 60.0
PROMOTE_LAG = 64  # a learner this close to the leader's commit index is caught up and gets promoted
PROMOTE_WAIT = 30.0  # POST /v1/members waits this long for the new member to become a voter
HAND_OVER_TIMEOUT = 1.5  # a stopping leader waits at most this long for another member to take over
_KINDS = frozenset(k.value for k in Kind)
_TRUE = frozenset({"1", "true", "yes", "on"})


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status, media_type="application/json")


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise InvalidArgument(f"store: unknown kind {kind!r}; kinds are {sorted(_KINDS)}")


WriteHandler = Callable[[bytes, "str | None"], Awaitable[tuple[int, bytes]]]


class RaftstoreApp(FastAPI):
    """FastAPI, plus a fast path for `POST /v1/txn`, the write every control-plane change goes through: it is
    answered straight from the ASGI call, skipping the middleware stack, routing and request objects (measured
    on the leader at 64 clients: the framework layers cost more CPU than Raft, WAL and apply together)."""

    write_handler: WriteHandler | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self.write_handler
        if handler is None or scope["type"] != "http" or scope["path"] != "/v1/txn" or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        forwarded_by = next((v.decode() for k, v in scope["headers"] if k == FORWARDED_HEADER_RAW), None)
        try:
            status, body = await handler(b"".join(chunks), forwarded_by)
        except ShoalError as e:
            status, body = e.status, json.dumps(e.to_json(), separators=(",", ":")).encode()
        except Exception as e:  # the same answer the framework's error middleware would give, logged
            log.exception("raftstore: POST /v1/txn failed")
            status = 500
            body = json.dumps({"message": f"store: internal error: {e!r}", "code": "internal"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


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
        promoter = asyncio.create_task(_promote_learners(), name="raftstore.promoter")
        refreezer = asyncio.create_task(refreeze_heap(), name="raftstore.gc")
        try:
            yield
        finally:
            publisher.cancel()
            promoter.cancel()
            refreezer.cancel()
            await _hand_over()
            await member.stop()
            if bus is not None:
                await bus.close()
            for f in forwarders:
                await f.aclose()

    app = RaftstoreApp(title=f"shoal raftstore {member.me.id}", lifespan=lifespan)
    install_error_handlers(app)
    metrics.gauge("raft_term", lambda: driver.term, "current raft term")
    metrics.gauge("raft_commit_index", lambda: driver.commit_index, "raft commit index")
    metrics.gauge("raft_applied_index", lambda: driver.applied_index, "last applied raft index")
    metrics.gauge("raft_is_leader", lambda: float(driver.is_leader), "1 if this member leads")
    app.include_router(ops_router(metrics, driver.ready, lambda: {"id": member.me.id, "role": driver.role.label}))

    # ---- writes -------------------------------------------------------------------------------------------
    async def write(raw: bytes, forwarded_by: str | None) -> tuple[int, bytes]:
        """`POST /v1/txn`: answer status and JSON body. Served by RaftstoreApp's fast path (module doc)."""
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise InvalidArgument(f"store: the transaction is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("store: the transaction must be a JSON object with an 'ops' list")
        _check_member()
        if not driver.is_leader:
            validate_txn(body, encoded_size=len(raw))
            resp = await _forward("POST", "/v1/txn", raw, forwarded_by)
            return resp.status_code, bytes(resp.body)
        # The leader picks the timestamp once, so every replica applies identical bytes.
        stamped = {"ops": body.get("ops"), "time": clock.now()}
        data = encode_txn(stamped)
        validate_txn(stamped, encoded_size=len(data))
        result = await driver.propose(data, parsed=stamped)
        return 200, json.dumps(result.to_json(), separators=(",", ":")).encode()

    def _check_member() -> None:
        if driver.removed:
            raise Unavailable(f"store: member {member.me.id} was removed from the raft cluster; use another member")

    async def _forward(method: str, path: str, raw: bytes, forwarded_by: str | None) -> Response:
        """Send this request, as it came, to the leader's API (writes and membership changes)."""
        leader = member.member(driver.leader_id)
        if leader is None:
            raise NotLeader(f"store: there is no raft leader right now (member {member.me.id} is "
                            f"{driver.role.label} in term {driver.term}); retry shortly", leader=None)
        if forwarded_by:
            # Forwarded to us by a member that thought we lead: do not bounce it around; the client retries.
            raise NotLeader(f"store: member {member.me.id} is not the raft leader either (leader: "
                            f"{leader.id}); retry", leader=leader.id)
        url = leader.api_url + path
        metrics.inc("store_forwarded_writes_total", 1, "writes forwarded to the raft leader")
        try:
            resp = await forwarder().request(method, url, content=raw, timeout=forward_timeout, headers={
                FORWARDED_HEADER: str(member.me.id), "content-type": "application/json"})
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            # Nothing reached the leader: safe to retry elsewhere.
            raise NotLeader(f"store: raft leader {leader.id} at {leader.api_url} is unreachable ({e}); retry",
                            leader=leader.id) from None
        except httpx.HTTPError as e:
            raise OutcomeUnknown(f"store: forwarding the write to raft leader {leader.id} failed after it was "
                                 f"sent ({e!r}); it may still commit: re-read to find out") from None
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    def _forward_request(request: Request, raw: bytes) -> Awaitable[Response]:
        return _forward(request.method, request.url.path, raw, request.headers.get(FORWARDED_HEADER))

    app.write_handler = write

    # ---- reads --------------------------------------------------------------------------------------------
    async def _barrier(stale: str | None) -> None:
        _check_member()
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
            "voters": list(driver.node.raft.voters),
            "learners": list(driver.node.raft.learners),
            "removed": sorted(driver.membership.removed),
            "snapshot_index": driver.storage.snapshot().index,
            "first_index": driver.storage.first_index(),
            "peers_connected": member.transport.connected(),
        })

    # ---- membership (dissertation §4: one change at a time, learners first) -------------------------------
    def _members_view() -> dict[str, Any]:
        raft = driver.node.raft
        items = []
        for m in member.members:
            role = "voter" if m.id in raft.voters else "learner" if m.id in raft.learners else "unknown"
            item: dict[str, Any] = {**m.to_json(), "role": role, "leader": m.id == driver.leader_id}
            if driver.is_leader and m.id in raft.prs:
                item["match_index"] = raft.prs[m.id].match
                item["reachable"] = m.id == member.me.id or driver.heard_recently(m.id)
            items.append(item)
        return {"leader": driver.leader_id, "term": driver.term, "commit_index": driver.commit_index,
                "members": items, "removed": sorted(driver.membership.removed)}

    @app.get("/v1/members")
    async def list_members(request: Request, stale: str | None = None) -> Response:
        if stale is None and not driver.is_leader and driver.leader_id is not None \
                and not request.headers.get(FORWARDED_HEADER):
            # Only the leader knows each member's match index and reachability: ask it.
            try:
                return await _forward_request(request, b"")
            except (NotLeader, OutcomeUnknown):
                pass  # no answer from the leader: this member's own view, without progress
        await _barrier(stale)
        return _json(_members_view())

    @app.post("/v1/members")
    async def add_member(request: Request) -> Response:
        raw = await request.body()
        _check_member()
        body = _member_body(raw)
        if not driver.is_leader:
            return await _forward_request(request, raw)
        ms = driver.membership
        new_id = int(body.get("id") or ms.next_id())
        if new_id in ms.removed:
            raise Conflict(f"store: member id {new_id} was removed and can never come back; add the member "
                           "under a new id (omit 'id' to get one)")
        if ms.get(new_id) is not None:
            raise Conflict(f"store: member id {new_id} is already in the cluster")
        for m in ms.all():
            if m.peer_addr == body["peer_addr"] or m.api_url == body["api_url"]:
                raise Conflict(f"store: member {m.id} already uses {m.api_url} / {m.peer_addr}; remove it first "
                               "to replace it")
        ctx = member_context(body["api_url"], body["peer_addr"])
        await driver.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, new_id, ctx))
        log.info("raftstore %d: member %d added as a learner (%s, peers %s)", member.me.id, new_id,
                 body["api_url"], body["peer_addr"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(body.get("wait", PROMOTE_WAIT))
        while loop.time() < deadline and new_id not in driver.node.raft.voters and driver.is_leader:
            await asyncio.sleep(0.1)
        view = _members_view()
        view["added"] = new_id
        promoted = new_id in driver.node.raft.voters
        if not promoted:
            view["message"] = (f"member {new_id} is a learner still catching up; it becomes a voter by itself "
                               "once it holds the log (start it with SHOAL_RAFT_JOIN=1)")
        return _json(view, 201 if promoted else 202)

    def _member_body(raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise InvalidArgument(f"store: the member is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidArgument("store: send a JSON object {\"api_url\": ..., \"peer_addr\": \"host:port\"}")
        api_url = body.get("api_url")
        if not isinstance(api_url, str) or not api_url.startswith(("http://", "https://")):
            raise InvalidArgument("store: 'api_url' must be the new member's http(s) API URL, e.g. "
                                  "http://10.0.0.4:4301")
        peer = body.get("peer_addr")
        try:
            if not isinstance(peer, str):
                raise ValueError(peer)
            parse_peer(peer)
        except ValueError:
            raise InvalidArgument("store: 'peer_addr' must be the new member's raft peer address host:port, e.g. "
                                  "10.0.0.4:4311") from None
        ident = body.get("id")
        if ident is not None and (not isinstance(ident, int) or isinstance(ident, bool) or ident <= 0):
            raise InvalidArgument("store: 'id' must be a positive integer (or omitted to get a new one)")
        wait = body.get("wait", PROMOTE_WAIT)
        if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= 600:
            raise InvalidArgument("store: 'wait' must be a number of seconds between 0 and 600")
        return {**body, "api_url": api_url.rstrip("/")}

    @app.delete("/v1/members/{member_id}")
    async def remove_member(member_id: int, request: Request) -> Response:
        _check_member()
        if not driver.is_leader:
            return await _forward_request(request, b"")
        raft = driver.node.raft
        if member_id not in (*raft.voters, *raft.learners):
            if member_id in driver.membership.removed:
                raise NotFound(f"store: member {member_id} was already removed")
            raise NotFound(f"store: member {member_id} is not in the cluster; members are "
                           f"{[m.id for m in member.members]}")
        if member_id in raft.voters:
            remaining = [v for v in raft.voters if v != member_id]
            if not remaining:
                raise Conflict("store: cannot remove the last voter")
            up = [v for v in remaining if v == member.me.id or driver.heard_recently(v)]
            if len(up) < majority(len(remaining)):
                raise Conflict(
                    f"store: removing member {member_id} would leave {len(up)} reachable voter(s) of "
                    f"{len(remaining)} ({sorted(up)}), short of the quorum of {majority(len(remaining))}: the "
                    "cluster would stop. Bring the other members back first")
        if member_id == member.me.id:
            # The leader leaves: hand leadership over first, so the cluster does not wait an election timeout,
            # then let the new leader remove us.
            new_leader = await driver.transfer_leadership()
            log.info("raftstore %d: handed leadership to %d before leaving", member.me.id, new_leader)
            return await _forward_request(request, b"")
        await driver.change_membership(ConfChange(ConfChangeType.REMOVE, member_id))
        log.info("raftstore %d: member %d removed", member.me.id, member_id)
        return _json(_members_view())

    @app.post("/v1/leader/transfer")
    async def transfer_leader(request: Request) -> Response:
        raw = await request.body()
        _check_member()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as e:
            raise InvalidArgument(f"store: the request is not valid JSON: {e}") from None
        to = body.get("to") if isinstance(body, dict) else None
        if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
            raise InvalidArgument("store: 'to' must be a member id (or omitted for the most up-to-date voter)")
        if not driver.is_leader:
            return await _forward_request(request, raw)
        previous = member.me.id
        new_leader = await driver.transfer_leadership(to)
        return _json({"previous_leader": previous, "leader": new_leader, "term": driver.term})

    async def _hand_over() -> None:
        """A leader that is being stopped hands leadership over first, so the cluster does not wait an election
        timeout for a new one (bounded: a shutdown never hangs on it)."""
        if not driver.is_leader or driver.removed or len(driver.node.raft.voters) < 2:
            return
        try:
            new_leader = await driver.transfer_leadership(timeout=HAND_OVER_TIMEOUT)
            log.info("raftstore %d: stopping; handed leadership to member %d", member.me.id, new_leader)
        except (ShoalError, TimeoutError) as e:
            log.info("raftstore %d: stopping without handing leadership over: %s", member.me.id, e)

    async def _promote_learners() -> None:
        """Leader: a learner that holds (nearly) the whole log becomes a voter; one change at a time."""
        while True:
            await asyncio.sleep(max(settings.raft_tick * 2, 0.1))
            if driver.role != Role.LEADER or driver.removed:
                continue
            raft = driver.node.raft
            for lid in raft.learners:
                pr = raft.prs.get(lid)
                if pr is not None and pr.match + PROMOTE_LAG >= driver.commit_index and pr.match > 0:
                    try:
                        await driver.change_membership(ConfChange(ConfChangeType.PROMOTE, lid))
                        log.info("raftstore %d: learner %d caught up and is now a voter", member.me.id, lid)
                    except (Conflict, NotLeader, OutcomeUnknown, Unavailable) as e:
                        log.info("raftstore %d: promoting learner %d: %s (will retry)", member.me.id, lid, e)
                    break

    return app
