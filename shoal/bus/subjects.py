"""Every NATS subject shoal uses. Never write a subject as a literal elsewhere."""

#: raftstore leader -> everyone: `{"revision": N, "changes": [{"kind","action","id","version"}]}` per commit
STORE_EVENTS = "shoal.store.events"
#: dispatchers -> dispatchers: `{"node_id": ..., "at": wall-clock seconds}` so any dispatcher knows liveness
NODE_HEARTBEAT = "shoal.node.heartbeat"
