"""The coordination bus: hints only (the store is the truth). NATS in production, in-memory in tests."""

from shoal.bus.base import Bus, Handler
from shoal.bus.memory import MemoryBus

__all__ = ["Bus", "Handler", "MemoryBus"]
