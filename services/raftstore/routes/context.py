"""Context: what the raftstore's routes share — the member and its driver, metrics, clock, and forwarding a
request to the leader's API (SwarmKit's raft proxy) over this member's own credentials."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request, Response

from services.raftstore.access import ON_BEHALF_HEADER, ON_BEHALF_NODE_HEADER, scope_component
from services.raftstore.driver import Driver
from services.raftstore.member import Member
from services.raftstore.settings import RaftstoreSettings
from shoal import wire
from shoal.clock import Clock
from shoal.errors import InvalidArgument, NotLeader, OutcomeUnknown, Unavailable
from shoal.models.kinds import Kind
from shoal.transport import Credentials, http_client

FORWARDED_HEADER = "x-shoal-forwarded-by"
FORWARDED_HEADER_RAW = FORWARDED_HEADER.encode()
FORWARD_POOLS = 4
_KINDS = frozenset(k.value for k in Kind)
KINDS = _KINDS
_TRUE = frozenset({"1", "true", "yes", "on"})
# Forwarded writes wait for commit like local ones; only connecting must be quick.
FORWARD_TIMEOUT = httpx.Timeout(60.0, connect=1.0)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(wire.dumps(body), status_code=status, media_type="application/json")


def check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise InvalidArgument(f"store: unknown kind {kind!r}; kinds are {sorted(_KINDS)}")


def is_true(value: str | None) -> bool:
    return value is not None and value.lower() in _TRUE


@dataclass
class Context:
    settings: RaftstoreSettings
    member: Member
    clock: Clock
    creds: Credentials | None
    http: httpx.AsyncClient | None = None  # one client for every forward (tests); else pools built on first use
    forwarders: list[httpx.AsyncClient] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def driver(self) -> Driver:
        return self.member.driver

    def forwarder(self) -> httpx.AsyncClient:
        """Several small pools rather than one big one: httpcore scans every pooled connection (with syscalls)
        on each request, so the cost per forwarded write grows with the pool; round-robin keeps each pool
        small. They are built on first use: a leader never needs them."""
        if self.http is not None:
            return self.http
        i = next(self._turn) % FORWARD_POOLS
        if i >= len(self.forwarders):
            self.forwarders.append(http_client(self.creds, timeout=60.0))
            i = len(self.forwarders) - 1
        return self.forwarders[i]

    async def close(self) -> None:
        for f in self.forwarders:
            await f.aclose()

    def check_member(self) -> None:
        if self.driver.removed:
            raise Unavailable(f"store: member {self.member.me.id} was removed from the raft cluster; use another "
                              "member")

    async def barrier(self, stale: str | None) -> None:
        self.check_member()
        if not is_true(stale):
            await self.driver.read_barrier()

    async def forward(self, method: str, path: str, raw: bytes, forwarded_by: str | None,
                      component: str, node: str | None = None) -> Response:
        """Send this request, as it came, to the leader's API (writes and membership changes), naming the
        original caller's `component` for the leader to authorize (services/raftstore/access.py) and its `node`
        id for the leader to record as the write's actor."""
        driver, me = self.driver, self.member.me
        leader = self.member.member(driver.leader_id)
        if leader is None:
            raise NotLeader(f"store: there is no raft leader right now (member {me.id} is "
                            f"{driver.role.label} in term {driver.term}); retry shortly", leader=None)
        if forwarded_by:
            # Forwarded to us by a member that thought we lead: do not bounce it around; the client retries.
            raise NotLeader(f"store: member {me.id} is not the raft leader either (leader: "
                            f"{leader.id}); retry", leader=leader.id)
        url = leader.api_url + path
        self.member.metrics.inc("store_forwarded_writes_total", 1, "writes forwarded to the raft leader")
        headers = {FORWARDED_HEADER: str(me.id), ON_BEHALF_HEADER: component, "content-type": "application/json"}
        if node:
            headers[ON_BEHALF_NODE_HEADER] = node
        try:
            resp = await self.forwarder().request(method, url, content=raw, timeout=FORWARD_TIMEOUT,
                                                  headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            # Nothing reached the leader: safe to retry elsewhere.
            raise NotLeader(f"store: raft leader {leader.id} at {leader.api_url} is unreachable ({e}); retry",
                            leader=leader.id) from None
        except httpx.HTTPError as e:
            raise OutcomeUnknown(f"store: forwarding the write to raft leader {leader.id} failed after it was "
                                 f"sent ({e!r}); it may still commit: re-read to find out") from None
        return Response(resp.content, status_code=resp.status_code, media_type="application/json")

    def forward_request(self, request: Request, raw: bytes) -> Awaitable[Response]:
        return self.forward(request.method, request.url.path, raw, request.headers.get(FORWARDED_HEADER),
                            scope_component(request.scope))
