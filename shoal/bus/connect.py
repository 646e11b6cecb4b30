"""Connecting a NatsBus across nats-py versions.

`NatsBus.connect` passes `retry_on_failed_connect`, which nats-py 2.16 (the installed version) does not accept,
so it raises TypeError before trying to connect. `connect_bus` uses it when it works and otherwise makes the
same connection without that option; the caller retries the first connection itself
(`shoal.leader_loop.connect_bus_in_background`). Remove this module once `NatsBus.connect` no longer passes
the option."""

from __future__ import annotations

import logging

import nats

from shoal.bus.nats import NatsBus

log = logging.getLogger(__name__)


async def connect_bus(url: str, name: str) -> NatsBus:
    try:
        return await NatsBus.connect(url, name)
    except TypeError as e:
        if "retry_on_failed_connect" not in str(e):
            raise
    holder: list[NatsBus] = []

    async def reconnected() -> None:
        log.info("nats: reconnected; resyncing from the store")
        for bus in holder:
            for cb in list(bus._reconnect):
                cb()

    async def disconnected() -> None:
        log.warning("nats: disconnected")

    async def error(e: Exception) -> None:
        log.debug("nats: %s", e)

    nc = await nats.connect(
        servers=[url], name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True,
        connect_timeout=2, reconnected_cb=reconnected, disconnected_cb=disconnected, error_cb=error,
    )
    bus = NatsBus(nc)
    holder.append(bus)
    return bus
