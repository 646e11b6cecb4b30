"""The Bus seam: publish JSON hints, subscribe with a handler, learn about reconnects (which mean: resync)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class Bus(Protocol):
    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        """Best effort, at most once. Never raises for a disconnected bus (the hint is simply lost)."""

    async def subscribe(self, subject: str, handler: Handler) -> None: ...

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """`callback` runs after every reconnect: messages may have been missed, so resync."""

    async def close(self) -> None: ...
