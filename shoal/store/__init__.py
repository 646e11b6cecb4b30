"""The store contract: transactions of versioned objects, list/get with indexes, and watch from a revision.

`memory.MemoryStore` is the deterministic state machine (the raftstore applies committed entries to it and tests
use it directly); `client.StoreClient` talks to raftstore members over HTTP; both satisfy `protocol.Store`."""

from shoal.store.protocol import Store
from shoal.store.txn import Op, Txn, TxnResult, WatchBatch

__all__ = ["Op", "Store", "Txn", "TxnResult", "WatchBatch"]
