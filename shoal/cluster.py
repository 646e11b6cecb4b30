"""The single cluster object ("default") with SwarmKit's defaults; created by whoever needs it first."""

from __future__ import annotations

from typing import Any

from shoal.errors import AlreadyExists
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.store import txn as t
from shoal.store.protocol import Store

DEFAULT_HEARTBEAT_PERIOD = 5.0
DEFAULT_TASK_HISTORY = 5


def default_cluster() -> dict[str, Any]:
    return {
        "id": DEFAULT_CLUSTER_ID,
        "spec": {
            "name": "default",
            "dispatcher": {"heartbeat_period": DEFAULT_HEARTBEAT_PERIOD},
            "orchestration": {"task_history_retention_limit": DEFAULT_TASK_HISTORY},
        },
    }


async def ensure_cluster(store: Store, heartbeat_period: float | None = None) -> dict[str, Any]:
    """Create the cluster object if absent (racing creators are fine: one wins, the rest read it)."""
    obj = default_cluster()
    if heartbeat_period is not None:
        obj["spec"]["dispatcher"]["heartbeat_period"] = heartbeat_period
    try:
        res = await store.txn([t.create(Kind.CLUSTER, obj)])
        return res.objects[0]
    except AlreadyExists:
        return await store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)


def heartbeat_period(cluster: dict[str, Any] | None) -> float:
    if not cluster:
        return DEFAULT_HEARTBEAT_PERIOD
    return float(cluster["spec"].get("dispatcher", {}).get("heartbeat_period", DEFAULT_HEARTBEAT_PERIOD))


def task_history_limit(cluster: dict[str, Any] | None) -> int:
    if not cluster:
        return DEFAULT_TASK_HISTORY
    return int(cluster["spec"].get("orchestration", {}).get("task_history_retention_limit",
                                                             DEFAULT_TASK_HISTORY))


#: how many removed node ids the cluster object remembers (the oldest are forgotten first)
REMOVED_NODES_KEPT = 1000


def removed_node_ids(cluster: dict[str, Any] | None) -> set[str]:
    """The ids of nodes removed from the cluster (SwarmKit's `Cluster.RemovedNodes`): an agent that still
    holds one is a new node to the cluster, never the removed one come back."""
    return {str(x["id"]) for x in (cluster or {}).get("removed_nodes") or []}


def with_removed_node(cluster: dict[str, Any], node_id: str, now: float) -> dict[str, Any]:
    """The cluster object remembering `node_id` as removed at `now` (the last REMOVED_NODES_KEPT)."""
    kept = [x for x in cluster.get("removed_nodes") or [] if x.get("id") != node_id]
    kept.append({"id": node_id, "removed_at": now})
    return {**cluster, "removed_nodes": kept[-REMOVED_NODES_KEPT:]}
