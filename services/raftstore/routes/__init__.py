"""The raftstore member's HTTP routes, one module per concern: writes (the `POST /v1/txn` fast path), reads
(objects, watch, status) and members (membership changes, leadership transfer). `context.Context` is what they
share: the member, the forwarding clients and the small helpers every route uses."""
