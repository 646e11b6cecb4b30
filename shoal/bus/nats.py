"""NatsBus: the Bus over core NATS (at-most-once), connecting in the background, always over mutual TLS with the
process's certificate (`shoal.transport.nats_options`; nats-server maps it to the component's user and subject
permissions, shoal.natsconf).

A process must start and work without NATS (hints are optional; mirrors poll the store), so `start()` returns at
once and a background task retries the first connection with backoff; after that the client reconnects forever
by itself. Until connected, publishes are dropped and subscriptions are remembered and made on connect. Every
(re)connect after the first tells subscribers to resync, since messages sent meanwhile are gone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from shoal.bus.base import Handler
from shoal.limits import count_refused
from shoal.transport import Credentials, nats_options

log = logging.getLogger(__name__)


class NatsBus:
    """`creds`: this process's identity; the connection is TLS with its certificate, which nats-server maps to
    the component's NATS user (shoal.natsconf). There is no plaintext mode."""

    def __init__(self, url: str, name: str, creds: Credentials) -> None:
        self.url = url
        self.name = name
        self.creds = creds
        self._nc: Client | None = None
        self._subs: list[tuple[str, Handler]] = []
        self._reconnect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self.connected_once = asyncio.Event()
        self.dropped = 0  # messages refused (not a JSON object) or that failed their handler

    @classmethod
    async def connect(cls, url: str, name: str, creds: Credentials) -> NatsBus:
        """A started bus (returns at once; the connection is made in the background)."""
        bus = cls(url, name, creds)
        bus.start()
        return bus

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._connect(), name=f"nats.connect.{self.name}")

    async def _connect(self) -> None:
        delay = 0.2
        warned = False
        while True:
            try:
                nc = await nats.connect(
                    servers=[self.url], name=self.name, allow_reconnect=True, max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5, connect_timeout=2, reconnected_cb=self._reconnected,
                    disconnected_cb=self._disconnected, error_cb=self._error, **nats_options(self.creds),
                )
            except Exception as e:
                (log.debug if warned else log.warning)("nats: cannot connect to %s (%s); retrying", self.url, e)
                warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            break
        self._nc = nc
        for subject, handler in self._subs:
            await self._subscribe(subject, handler)
        log.info("nats: connected to %s", self.url)
        self.connected_once.set()
        self._fire_resync()  # anything published before we subscribed is lost: resync

    def _fire_resync(self) -> None:
        for cb in list(self._reconnect):
            cb()

    async def _reconnected(self) -> None:
        log.info("nats: reconnected; resyncing from the store")
        self._fire_resync()

    async def _disconnected(self) -> None:
        log.warning("nats: disconnected")

    async def _error(self, e: Exception) -> None:
        # A permissions violation means this component's NATS user lacks a subject it uses: say so loudly.
        (log.error if "permissions violation" in str(e).lower() else log.debug)("nats: %s", e)

    async def publish(self, subject: str, data: dict[str, Any]) -> None:
        if self._nc is None or not self._nc.is_connected:
            return  # a lost hint is allowed; the store is the truth
        try:
            await self._nc.publish(subject, json.dumps(data, separators=(",", ":")).encode())
        except Exception as e:
            log.debug("nats: publish to %s failed: %s", subject, e)

    async def subscribe(self, subject: str, handler: Handler) -> None:
        self._subs.append((subject, handler))
        if self._nc is not None:
            await self._subscribe(subject, handler)

    async def _subscribe(self, subject: str, handler: Handler) -> None:
        async def cb(msg: Msg) -> None:
            # Every message is remote input (issue 16): what is not a JSON object is dropped, and a handler
            # failing on an odd value is logged (rate-limited) and counted, never allowed to stop the subscriber.
            try:
                data = json.loads(msg.data)
            except (ValueError, RecursionError):
                data = None
            if not isinstance(data, dict):
                self.dropped += 1
                count_refused("nats_messages")
                log.warning("nats: dropped a message on %s that is not a JSON object", subject)
                return
            try:
                await handler(data)
            except Exception as e:
                self.dropped += 1
                count_refused("nats_messages")
                log.warning("nats: a message on %s could not be handled: %s", subject, type(e).__name__)

        assert self._nc is not None
        await self._nc.subscribe(subject, cb=cb)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect.append(callback)

    @property
    def connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._nc is not None:
            try:
                await asyncio.wait_for(self._nc.drain(), 2)
            except Exception:
                with contextlib.suppress(Exception):
                    await self._nc.close()
