"""`/v1/cluster`: the cluster object, the Raft view of every raftstore member, the leases of the
leader-only subsystems, and every live control-plane instance (`instances`, shoal/instances.py). Diagnostic,
so it degrades instead of failing: unreachable members are listed as such, and when the store cannot answer,
`available` is false and `error` says why (members are still shown).

`PATCH /v1/cluster` changes the cluster spec (heartbeat period, task history retention) at the version read
(required: a change never silently overwrites another), creating the "default" cluster object with
SwarmKit's defaults first (version 0) if nobody has yet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends

from services.gateway.context import GatewayContext, get_context
from services.gateway.core import ClusterUpdate, check_version, patched_cluster
from shoal.cluster import default_cluster
from shoal.errors import AlreadyExists, NotFound, ShoalError, VersionConflict
from shoal.instances import instance_view
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.store import txn as t
from shoal.store.txn import Obj

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])
Ctx = Annotated[GatewayContext, Depends(get_context)]
T = TypeVar("T")


async def _attempt(aw: Awaitable[T], timeout: float) -> tuple[T | None, str | None]:
    """(result, None) or (None, why it failed), giving up after `timeout` seconds."""
    try:
        return await asyncio.wait_for(aw, timeout), None
    except ShoalError as e:
        return None, e.message.removeprefix("store: ")
    except TimeoutError:
        return None, f"no answer within {timeout:g}s"


async def _cluster_object(ctx: GatewayContext) -> Obj:
    try:
        return await ctx.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
    except NotFound:  # nobody created it yet: show SwarmKit's defaults (a read does not write)
        return {**default_cluster(), "meta": None}


def raft_view(status: dict[str, Any] | None, members: list[dict[str, Any]]) -> dict[str, Any]:
    """Leader, term and commit index as the store reports them; without an answer from the store, as the
    reachable members report them (the highest term wins)."""
    reachable = [m for m in members if m.get("reachable")]
    best: dict[str, Any] = status or max(reachable, key=lambda m: int(m.get("term") or 0), default={})
    leader = best.get("leader") or None
    leader_url = next((m["url"] for m in reachable if leader is not None and m.get("id") == leader), None)
    return {"leader": leader, "leader_url": leader_url, "term": best.get("term"),
            "commit_index": best.get("commit_index"), "members": members}


def lease_view(lease: Obj, now: float) -> dict[str, Any]:
    expires = float(lease.get("expires_at") or 0.0)
    return {"kind": "lease", "name": lease["id"], "holder": lease.get("holder"), "term": lease.get("term"),
            "expires_at": expires, "duration": lease.get("duration"), "expired": expires < now}


@router.get("", summary="Cluster object, Raft members and subsystem leases")
async def get_cluster(ctx: Ctx) -> dict[str, Any]:
    timeout = ctx.settings.member_status_timeout
    # Everything at once, each bounded: this view must stay quick when the store is down.
    members, (status, status_err), (cluster, cluster_err), (leases, leases_err) = await asyncio.gather(
        asyncio.gather(*(ctx.member_status(u) for u in ctx.settings.store_members)),
        _attempt(ctx.store.status(), timeout),
        _attempt(_cluster_object(ctx), timeout),
        _attempt(ctx.store.list(Kind.LEASE), timeout),
    )
    error = cluster_err or leases_err or status_err
    if error is not None:
        ctx.mark_unavailable(error)
    now = ctx.clock.now()
    return {
        "id": cluster["id"] if cluster else DEFAULT_CLUSTER_ID,
        "spec": cluster["spec"] if cluster else None,
        "meta": cluster.get("meta") if cluster else None,
        "removed_nodes": (cluster.get("removed_nodes") or []) if cluster else [],
        "available": error is None,
        "error": f"store unavailable: {error}" if error is not None else None,
        "raft": raft_view(status, list(members)),
        "subsystems": None if leases is None else [lease_view(x, now) for x in sorted(leases[1],
                                                                                      key=lambda x: x["id"])],
        # every live control-plane instance (NATS heartbeats), active/term decided by the leases
        "instances": instance_view(ctx.instances.instances(), None if leases is None else leases[1], now),
    }


@router.patch("", summary="Change the cluster spec (heartbeat period, task history retention)")
async def patch_cluster(body: ClusterUpdate, ctx: Ctx) -> Obj:
    """Apply `body` to the cluster object at `body.version` (409 when it changed since: re-read and retry).
    The dispatcher creates the object when the cluster starts; should it be missing, version 0 creates it
    (SwarmKit's defaults + the change, in one write)."""
    try:
        current: Obj | None = await ctx.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
    except NotFound:
        current = None
    if current is None:
        if body.version != 0:
            raise VersionConflict(f"the cluster object does not exist yet, so it is not at version "
                                  f"{body.version}; send version 0 to create it", current_version=None)
        op = t.create(Kind.CLUSTER, patched_cluster(default_cluster(), body))
    else:
        check_version("cluster", DEFAULT_CLUSTER_ID, current, body.version)
        op = t.update(Kind.CLUSTER, patched_cluster(current, body), expect_version=body.version)
    try:
        res = await ctx.store.txn([op])
    except (VersionConflict, AlreadyExists) as e:
        raise VersionConflict(f"cluster changed since version {body.version} was read; re-read it and retry",
                              **e.details) from e
    ctx.metrics.inc("gateway_cluster_updated_total", help="cluster spec changes through this gateway")
    return res.objects[0]
