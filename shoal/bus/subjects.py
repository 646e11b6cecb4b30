"""Every NATS subject shoal uses. Never write a subject as a literal elsewhere."""

#: raftstore leader -> everyone: `{"revision": N, "changes": [{"kind","action","id","version"}]}` per commit
STORE_EVENTS = "shoal.store.events"
#: dispatchers -> dispatchers: `{"node_id": ..., "at": wall-clock seconds}` so any dispatcher knows liveness
NODE_HEARTBEAT = "shoal.node.heartbeat"
#: every control-plane instance -> gateways, every second: `{"role", "instance", "host", "port", "pid", "at",
#: "interval", "active"?, "term"?}` so `GET /v1/cluster` can list instances (shoal/instances.py)
INSTANCE_HEARTBEAT = "shoal.instance.heartbeat"
