"""Object kinds held by the store, and which of them have case-insensitively unique names."""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    CLUSTER = "cluster"
    NODE = "node"
    SERVICE = "service"
    TASK = "task"
    NETWORK = "network"
    SECRET = "secret"
    CONFIG = "config"
    LEASE = "lease"
    #: the cluster's root CA (certificate, key) and join tokens: one object, id "root"; only the CA component
    #: may read or write it, and the raftstore redacts it from every other caller's watch (docs/security.md)
    CA = "ca"
    #: the network encryption key ring (shoal/netkeys.py): one object, id "overlay"; written by the allocator,
    #: read by the allocator and the dispatcher only, redacted like `ca` for everyone else (docs/security.md)
    NETKEYS = "netkeys"


#: kinds whose `spec.name` is unique per kind, compared lower-cased (SwarmKit's name index).
NAMED_KINDS = frozenset({Kind.SERVICE, Kind.NETWORK, Kind.SECRET, Kind.CONFIG, Kind.CLUSTER})

#: secondary indexes kept by the store, per kind: top-level field names (dotted for nested fields).
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.TASK: ("service_id", "node_id", "desired_state"),
    Kind.NODE: ("role",),
}

#: per kind, the fields the store keeps live counts of (`MemoryStore.counts`, `GET /v1/counts/{kind}`): the
#: gateway answers a service's replica status from these instead of reading its tasks.
COUNTED_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.TASK: ("service_id", "desired_state", "status.state", "job_iteration"),
}

DEFAULT_CLUSTER_ID = "default"
