"""MemoryBus: an in-process Bus for tests; `drop_all` simulates lost messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.bus.base import Handler


class MemoryBus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = {}
        self._reconnect: list[Callable[[], None]] = []
        self.drop_all = False
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        self.published.append((subject, data))
        if self.drop_all:
            return
        for h in list(self._subs.get(subject, ())):
            await h(data)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        self._subs.setdefault(subject, []).append(handler)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect.append(callback)

    def simulate_reconnect(self) -> None:
        for cb in self._reconnect:
            cb()

    async def close(self) -> None:
        self._subs.clear()
