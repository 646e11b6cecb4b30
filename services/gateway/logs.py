"""Task logs through the gateway: find each task's node, the dispatcher holding that node's session, and merge
the NDJSON streams those dispatchers send (services/dispatcher/logs.py has the other half).

The gateway asks each dispatcher in turn (one that does not hold the node's session answers 404 `no_session` at
once): every address of every `SHOAL_DISPATCHER_URLS` entry, since a scaled compose service is one name for
several containers (the agents resolve it the same way and stay with one address per session), checking each
certificate against the name it was resolved from. The dispatcher that last held a node's session is asked
first (`Holders`). Sessions live in dispatchers' memory only: recording them in the store would cost a Raft
write per registration for a lookup that a few quick requests answer. (The instance registry of
shoal/instances.py is not used for this: it knows each dispatcher's host name and port, but not an address the
gateway can dial and check a certificate for; the configured names are what agents dial too.) A node that is DOWN, or
that no dispatcher holds, yields one line saying so instead of a hang. Everything is streamed through a queue
of `QUEUE_RECORDS` records: a slow reader back-pressures the dispatchers (and they the agents)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from services.gateway.context import GatewayContext
from shoal import addresses, logs
from shoal.errors import NotFound
from shoal.logs import LogQuery, Record
from shoal.models.kinds import Kind
from shoal.models.objects import status_state
from shoal.models.states import NodeState
from shoal.store.txn import Obj

log = logging.getLogger(__name__)

QUEUE_RECORDS = 1024
CONNECT_TIMEOUT = 5.0
def ask_order(candidates: list[tuple[str, str | None]], holder: str | None) -> list[tuple[str, str | None]]:
    """The dispatchers to ask, the remembered holder first."""
    first = [c for c in candidates if c[0] == holder]
    return first + [c for c in candidates if c[0] != holder]


def notice(task_id: str, text: str) -> Record:
    return logs.record(task_id, "shoal", time.time(), text)


async def task_records(ctx: GatewayContext, tasks: Iterable[Obj], *, tail: int | None, since: float | None,
                       follow: bool) -> AsyncIterator[Record]:
    """The records of `tasks`, node by node concurrently, as they arrive. Closing the iterator (the client
    went away) closes every dispatcher stream, which ends the agents' reads."""
    by_node: dict[str, list[str]] = {}
    for task in tasks:
        if task.get("node_id"):
            by_node.setdefault(task["node_id"], []).append(task["id"])
    queue: asyncio.Queue[Record | None] = asyncio.Queue(QUEUE_RECORDS)

    async def one(node_id: str, ids: list[str]) -> None:
        try:
            query = LogQuery(tuple(ids[: logs.MAX_TASKS]), tail, since, follow)
            async for rec in node_records(ctx, node_id, query):
                await queue.put(rec)
        except Exception as e:  # one node failing ends only its part of the stream
            log.warning("gateway: logs of node %s: %s", node_id, e)
            await queue.put(notice(ids[0], f"logs of node {node_id} failed: {e}"))
        finally:
            await queue.put(None)

    readers = [asyncio.create_task(one(n, ids)) for n, ids in sorted(by_node.items())]
    running = len(readers)
    try:
        while running:
            rec = await queue.get()
            if rec is None:
                running -= 1
                continue
            yield rec
    finally:
        for r in readers:
            r.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def node_records(ctx: GatewayContext, node_id: str, query: LogQuery) -> AsyncIterator[Record]:
    first = query.task_ids[0]
    try:
        node: Obj | None = await ctx.store.get(Kind.NODE, node_id)
    except NotFound:
        node = None
    if node is None:
        yield notice(first, f"node {node_id} is no longer in the cluster: its tasks' logs cannot be read")
        return
    state = status_state(node)
    if state != str(NodeState.READY):
        yield notice(first, f"node {node_id} is {state}: its logs cannot be read")
        return
    urls = ctx.settings.dispatcher_urls
    if not urls:
        yield notice(first, "the gateway knows no dispatcher (SHOAL_DISPATCHER_URLS): logs cannot be read")
        return
    body = {"node_id": node_id, **query.to_wire()}
    timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None)
    holders = ctx.log_holders
    candidates = await addresses.expand_urls(urls)
    for url, name in ask_order(candidates, holders.get(node_id)):
        try:
            async with ctx.http.stream("POST", url + "/v1/logs", json=body, timeout=timeout,
                                       extensions=addresses.sni_extensions(name)) as resp:
                if resp.status_code == 404:
                    continue  # not this dispatcher's node
                if resp.status_code >= 400:
                    text = (await resp.aread()).decode(errors="replace")
                    yield notice(first, f"dispatcher {url}: {_message(text)}")
                    return
                holders.remember(node_id, url)
                async for line in resp.aiter_lines():
                    if line.strip():
                        yield from_wire(line)
                return
        except (httpx.HTTPError, OSError) as e:
            log.info("gateway: dispatcher %s for the logs of node %s: %s", url, node_id, e)
            continue
    holders.forget(node_id)
    yield notice(first, f"node {node_id} has no session with a reachable dispatcher "
                        f"(asked {len(candidates)}): its logs cannot be read")


def from_wire(line: str) -> Record:
    recs = logs.parse_chunk(line.encode())
    return recs[0] if recs else notice("", "")


def _message(text: str) -> str:
    try:
        body: Any = json.loads(text)
        return str(body.get("message", text)) if isinstance(body, dict) else text
    except ValueError:
        return text[:200]
