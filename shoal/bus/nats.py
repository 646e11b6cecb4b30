"""NatsBus: the Bus over core NATS (at-most-once). Reconnects forever; every reconnect tells subscribers to
resync, since messages sent while disconnected are gone."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from shoal.bus.base import Handler

log = logging.getLogger(__name__)


class NatsBus:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._reconnect: list[Callable[[], None]] = []

    @classmethod
    async def connect(cls, url: str, name: str) -> NatsBus:
        """Connect (retrying until the server is up) and keep reconnecting forever."""
        bus: NatsBus | None = None

        async def reconnected() -> None:
            log.info("nats: reconnected; resyncing from the store")
            if bus is not None:
                for cb in bus._reconnect:
                    cb()

        async def disconnected() -> None:
            log.warning("nats: disconnected")

        async def error(e: Exception) -> None:
            log.debug("nats: %s", e)

        nc = await nats.connect(
            servers=[url], name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            allow_reconnect=True, connect_timeout=2, retry_on_failed_connect=True,
            reconnected_cb=reconnected, disconnected_cb=disconnected, error_cb=error,
        )
        bus = cls(nc)
        return bus

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        try:
            await self._nc.publish(subject, json.dumps(data, separators=(",", ":")).encode())
        except Exception as e:  # a lost hint is allowed; the store is the truth
            log.debug("nats: publish to %s failed: %s", subject, e)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        async def cb(msg: Msg) -> None:
            try:
                data = json.loads(msg.data)
            except ValueError:
                log.warning("nats: undecodable message on %s", subject)
                return
            await handler(data)

        await self._nc.subscribe(subject, cb=cb)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect.append(callback)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def close(self) -> None:
        try:
            await self._nc.drain()
        except Exception:
            await self._nc.close()
