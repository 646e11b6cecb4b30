"""The agent's side of the dispatcher protocol (SwarmKit's agent/session.go and agent.go).

A session: register (node description) → heartbeat at once, then every period the dispatcher returns; one
long poll of the session (`GET .../next`) for assignments (COMPLETE, then INCREMENTAL messages chained by
`applies_to`; a mismatch asks for a COMPLETE set again), the endpoint table and log requests; send queued status
reports in batches. When any of these fails the session ends and the agent
registers again — with the same dispatcher if only the session was lost (404), else with the next one of
`SHOAL_DISPATCHERS` — after a backoff of min(100 ms + 2 * previous, 8 s), slept as a random part of it.
Tasks keep running meanwhile; the next COMPLETE set reconciles them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from agent import logs as task_logs
from agent.worker import Worker
from shoal import errors, logs, wire
from shoal.addresses import expand_url, sni_extensions
from shoal.aioclient import AiohttpTransport
from shoal.concurrency import until_first_failure
from shoal.errors import InvalidArgument
from shoal.models.states import TaskState
from shoal.pacing import Pacer
from shoal.transport import http_client

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 8.0
#: heartbeat periods a session outlives its last heartbeat at the dispatcher (SwarmKit's grace multiplier):
#: a call that timed out is tried again within that window before the session is given up
SESSION_GRACE_PERIODS = 3
RETRY_INITIAL = 0.25  # the first retry of a slow call after 0.125-0.25 s, doubling up to a heartbeat period
STATUS_BATCH = 1024  # SwarmKit's agent sends status updates in batches of 1024
MAX_ROOTS_DIGEST = 128  # a sha256 hex digest is 64; anything longer is not one
MAX_LOG_REQUESTS = 32  # answered at once (the dispatcher holds as many per node)
ROUTE_MISSING = "Not Found"  # the message of a dispatcher's 404 for a route it does not have (shoal/http.py)


class SessionInvalid(Exception):
    """The dispatcher does not know the session (404): register again with the same dispatcher."""


class DispatcherUnavailable(Exception):
    """The dispatcher cannot serve (unreachable, 5xx, shutting down): try the next one."""


class DispatcherSlow(DispatcherUnavailable):
    """The dispatcher did not answer in time (a timeout, or 503/429: too busy). It may only be slow — starved
    of CPU, or this process was — and the session stays valid there until its heartbeat grace runs out, so
    the session retries the call (`AgentSession._patient`) instead of registering again: a new registration
    and new connections are exactly what a slow dispatcher can least afford (issue 13)."""


class NodeRemoved(Exception):
    """The cluster removed this node (`shoal node rm`): its certificate is refused everywhere."""


class StatusRejected(Exception):
    """403: the report named tasks not assigned to this node (`task_ids`)."""

    def __init__(self, message: str, task_ids: list[str]) -> None:
        super().__init__(message)
        self.task_ids = task_ids


class DispatcherClient:
    """JSON over HTTP to one dispatcher."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, *, timeout: float = 5.0,
                 server_name: str | None = None) -> None:
        self.http = http
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        #: the name a resolved address stands for: TLS checks the dispatcher's certificate against it (its SANs
        #: carry the service name, not every container address)
        self.server_name = server_name

    async def _send(self, method: str, path: str, timeout: float, kw: dict[str, Any]) -> httpx.Response:
        """The request, over aiohttp's direct path when the client has one (shoal/aioclient.py: the session's
        calls are most of a node's client CPU), else through httpx (in-process test transports)."""
        aio: AiohttpTransport | None = getattr(self.http, "aio", None)
        if aio is None:
            if self.server_name:
                kw["extensions"] = {**kw.get("extensions", {}), **sni_extensions(self.server_name)}
            return await self.http.request(method, self.base + path, timeout=timeout, **kw)
        url = self.base + path
        if kw.get("params"):
            url += "?" + urlencode(kw["params"])
        status, headers, body = await aio.call(method, url, content=kw.get("content"), headers=kw.get("headers"),
                                               timeout=timeout, sni=self.server_name)
        return httpx.Response(status, headers=headers, content=body)

    async def _call(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Any:
        for attempt in range(2):
            try:
                resp = await self._send(method, path, timeout or self.timeout, dict(kw))
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                # A pooled keep-alive connection the server closed just as we reused it: every call here is
                # safe to repeat (heartbeats, monotonic status reports, a poll whose loss forces a resync).
                if attempt == 0:
                    continue
                raise DispatcherUnavailable(f"{self.base}: {type(e).__name__}: {e}") from e
            except httpx.TimeoutException as e:
                raise DispatcherSlow(f"{self.base}: {type(e).__name__}: {e}") from e
            except (httpx.HTTPError, OSError) as e:
                raise DispatcherUnavailable(f"{self.base}: {type(e).__name__}: {e}") from e
        if resp.status_code < 400:
            return wire.loads(resp.content)
        err = errors.error_from_response(resp)
        if resp.status_code == 404:
            raise SessionInvalid(err.message)
        if isinstance(err, errors.NodeRemoved):
            raise NodeRemoved(err.message)
        if resp.status_code == 403:
            raise StatusRejected(err.message, [str(x) for x in err.details.get("task_ids") or []])
        if resp.status_code == 429 or (resp.status_code == 503 and "shutting down" not in err.message):
            # registering too often, or too busy now (its store view behind, its write queue full): back off
            raise DispatcherSlow(f"{self.base}: {err.message}")
        if resp.status_code >= 500:
            raise DispatcherUnavailable(f"{self.base}: {err.message}")
        raise ValueError(f"dispatcher {self.base} refused the request ({resp.status_code}): {err.message}")

    async def register(self, node_id: str | None, description: dict[str, Any], addr: str | None) -> Any:
        return await self._call("POST", "/v1/sessions", headers={"content-type": "application/json"},
                                content=wire.dumps({"node_id": node_id, "description": description, "addr": addr}))

    async def heartbeat(self, session_id: str, timeout: float | None = None) -> Any:
        return await self._call("POST", f"/v1/sessions/{session_id}/heartbeat", timeout=timeout)

    async def poll(self, session_id: str, after: int, version: str | None, wait: float) -> Any:
        """The session poll: whatever is new of the assignments after `after`, the endpoint table (unless
        `version` is None: no table wanted) and log requests, or `{}` after `wait`."""
        params: dict[str, Any] = {"after": after, "wait": wait}
        if version is not None:
            params["version"] = version
        try:
            return await self._call("GET", f"/v1/sessions/{session_id}/next", params=params,
                                    timeout=wait + self.timeout)
        except SessionInvalid as e:
            if str(e) == ROUTE_MISSING:
                # the framework's answer to a route it lacks, not "unknown session": a dispatcher older than
                # the session poll (dispatchers are upgraded before agents: docs/agent-protocol.md)
                raise DispatcherUnavailable(f"{self.base}: has no session poll (GET /v1/sessions/{{sid}}/next); "
                                            "it predates this agent: upgrade the dispatchers first") from e
            raise

    async def log_chunk(self, session_id: str, request_id: str, chunk: bytes, done: bool) -> bool:
        """Send a chunk of a log request's records; False once the dispatcher says its reader is gone (410)."""
        try:
            resp = await self.http.post(f"{self.base}/v1/sessions/{session_id}/logs/{request_id}", content=chunk,
                                        params={"done": "true"} if done else None, timeout=logs.PUSH_WAIT,
                                        extensions=sni_extensions(self.server_name))
        except (httpx.HTTPError, OSError) as e:
            log.info("agent: log request %s ended: %s", request_id, e)
            return False
        return resp.status_code < 400

    async def report(self, session_id: str, updates: list[tuple[str, dict[str, Any]]],
                     timeout: float | None = None) -> Any:
        body = {"updates": [{"task_id": tid, "status": st} for tid, st in updates]}
        return await self._call("POST", f"/v1/sessions/{session_id}/status", content=wire.dumps(body),
                                headers={"content-type": "application/json"}, timeout=timeout)


class StatusQueue:
    """The latest unreported status of each task. A newer state replaces an older one (the dispatcher keeps
    only forward moves anyway); reports survive a lost session and go to the next dispatcher."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}
        self.event = asyncio.Event()

    def put(self, task_id: str, status: dict[str, Any]) -> None:
        cur = self.pending.get(task_id)
        if cur is None or TaskState(status["state"]) > TaskState(cur["state"]):
            self.pending[task_id] = dict(status)
            self.event.set()

    def batch(self, limit: int = STATUS_BATCH) -> list[tuple[str, dict[str, Any]]]:
        return list(self.pending.items())[:limit]

    def sent(self, items: Sequence[tuple[str, dict[str, Any]]]) -> None:
        for tid, st in items:
            if self.pending.get(tid) is st:  # not superseded while in flight
                del self.pending[tid]
        if not self.pending:
            self.event.clear()


class AgentSession:
    def __init__(self, dispatchers: Sequence[str], worker: Worker, queue: StatusQueue, *,
                 describe: Callable[[], dict[str, Any]], node_id: Callable[[], str | None],
                 set_node_id: Callable[[str], None], addr: str | None = None,
                 http: httpx.AsyncClient | None = None, rpc_timeout: float = 5.0, poll_wait: float = 20.0,
                 status_interval: float = 0.1, rng: random.Random | None = None) -> None:
        if not dispatchers:
            raise ValueError("agent: SHOAL_DISPATCHERS lists no dispatcher")
        self.dispatchers = [d.rstrip("/") for d in dispatchers]
        self.worker = worker
        self.queue = queue
        self.describe = describe
        self.node_id = node_id
        self.set_node_id = set_node_id
        self.addr = addr
        self.http = http or http_client(None, timeout=rpc_timeout)
        self.rpc_timeout = rpc_timeout
        self.poll_wait = poll_wait
        self.status_interval = status_interval
        self.rng = rng or random.Random()
        self.index = self.rng.randrange(len(self.dispatchers))  # spread agents over the dispatchers
        self._url: str | None = None  # the concrete dispatcher URL in use (a resolved address, see `_next`)
        self._names: dict[str, str] = {}  # a resolved address's URL -> the host name it was resolved from
        self._renew = asyncio.Event()
        self.session_id: str | None = None
        self.dispatcher: str | None = None
        self.period = 5.0
        self.connected = asyncio.Event()
        self.sessions = 0
        self._backoff = 0.0
        self._stopped = asyncio.Event()
        #: why the cluster removed this node, once a dispatcher said so (the session then ends for good)
        self.removed: str | None = None
        #: told the node's desired role ("worker"/"manager") from every heartbeat answer that carries it
        self.on_role: Callable[[str], None] | None = None
        #: told the digest of the cluster's roots from every heartbeat answer that carries it (the renewer
        #: looks at the CA's roots when it changed: shoal.enroll.Renewer.hint_roots)
        self.on_roots: Callable[[str], None] | None = None
        #: given every new endpoint table (agent/mesh.py); `endpoints_version` is the one applied last
        self.on_endpoints: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.endpoints_version = ""
        #: when the dispatcher forgets this session unless it hears a heartbeat (loop time): the last
        #: answered heartbeat + SESSION_GRACE_PERIODS periods
        self._grace_end = 0.0
        #: calls tried again after a slow dispatcher's timeout, within the session (`_patient`)
        self.slow_retries = 0

    def stop(self) -> None:
        self._stopped.set()

    def renew(self) -> None:
        """Register again (with the same dispatcher): the node description changed."""
        self._renew.set()

    async def _next(self, failed: str | None) -> str:
        """The dispatcher URL to use after `failed` (None: the first pick, at random). A configured URL whose
        host name stands for several addresses (a scaled compose service) is expanded into one URL per
        address, resolved again at every failover, so a session sticks to one dispatcher (sessions live in
        that dispatcher's memory) and a dead dispatcher's address drops out once DNS forgets it."""
        candidates: list[str] = []
        for url in self.dispatchers:
            expanded = await expand_url(url)
            self._names.update({u: httpx.URL(url).host for u in expanded if u != url})
            candidates.extend(u for u in expanded if u not in candidates)
        if failed is not None and failed in candidates:
            return candidates[(candidates.index(failed) + 1) % len(candidates)]
        if failed is not None and failed in self.dispatchers:
            self.index = (self.dispatchers.index(failed) + 1) % len(self.dispatchers)
        elif failed is not None:
            return self.rng.choice(candidates)
        configured = self.dispatchers[self.index]
        expanded = await expand_url(configured)
        self._names.update({u: httpx.URL(configured).host for u in expanded if u != configured})
        return expanded[0] if len(expanded) == 1 else self.rng.choice(expanded)

    async def run(self) -> None:
        while not self._stopped.is_set():
            if self._url is None:
                self._url = await self._next(None)
            url = self._url
            try:
                client = DispatcherClient(self.http, url, timeout=self.rpc_timeout, server_name=self._names.get(url))
                await self._until_stopped(self._session(client))
            except NodeRemoved as e:
                log.error("agent: %s", e)
                self.removed = str(e)
                return
            except SessionInvalid as e:
                log.info("agent: session with %s lost (%s); registering again", url, e)
            except (DispatcherUnavailable, ValueError) as e:
                log.warning("agent: dispatcher %s: %s; trying the next one", url, e)
                self._url = await self._next(url)
            except Exception:  # a malformed answer or a bug: never let the session loop die
                log.exception("agent: session with %s failed; trying the next dispatcher", url)
                self._url = await self._next(url)
            finally:
                self.connected.clear()
                self.session_id = None
            self._backoff = min(BACKOFF_INITIAL + 2 * self._backoff, BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.rng.uniform(0, self._backoff))

    async def _until_stopped(self, work: Awaitable[None]) -> None:
        job = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stopped.wait())
        try:
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not job.done():
                job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

    async def _session(self, client: DispatcherClient) -> None:
        self._renew.clear()  # this registration carries the current description
        reg = await client.register(self.node_id(), self.describe(), self.addr)
        self.set_node_id(reg["node_id"])
        self.session_id = sid = reg["session_id"]
        self.dispatcher = client.base
        self.period = float(reg.get("heartbeat_period", self.period))
        self._alive()
        self.sessions += 1
        log.info("agent: registered with %s as node %s (session %s)", client.base, reg["node_id"], sid)
        # the session ends with the first loop that fails, raising why; the others end with it
        await until_first_failure(self._heartbeats(client, sid), self._polls(client, sid),
                                  self._reports(client, sid), self._renewal())

    async def _renewal(self) -> None:
        await self._renew.wait()
        raise SessionInvalid("the node description changed")

    def _alive(self) -> None:
        """The dispatcher just heard from this session: it keeps it for the grace from now."""
        self._grace_end = asyncio.get_running_loop().time() + SESSION_GRACE_PERIODS * self.period

    def _grace_left(self) -> float:
        return self._grace_end - asyncio.get_running_loop().time()

    def _patient_timeout(self) -> float:
        """A session call's timeout: as long as the session lives at the dispatcher (less a second), at least
        `rpc_timeout` — a late answer on the connection in use keeps the session and costs no new one."""
        return max(self.rpc_timeout, self._grace_left() - 1.0)

    async def _patient(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """`call()`, tried again while the dispatcher is only slow (`DispatcherSlow`: a timeout, 503/429) and
        the session can still be alive there, after a jittered, doubling pause; the session ends (and the agent
        registers again, maybe elsewhere) only once the grace has run out. A late answer is not a dead
        dispatcher: ending the session at the first timeout made a starved dispatcher — or a starved agent
        process — into a registration storm."""
        delay = RETRY_INITIAL
        while True:
            try:
                return await call()
            except DispatcherSlow as e:
                if self._grace_left() <= delay or self._stopped.is_set():
                    raise
                self.slow_retries += 1
                log.info("agent: %s: %s; trying again within the session (%.1f s of its grace left)", what, e,
                         self._grace_left())
                await asyncio.sleep(self.rng.uniform(delay / 2, delay))
                delay = min(2 * delay, self.period)

    async def _heartbeats(self, client: DispatcherClient, sid: str) -> None:
        while True:  # the first heartbeat goes out at once (SwarmKit's session.heartbeat)
            # A heartbeat may wait as long as the session lives at the dispatcher (on the connection it has,
            # not on a new one after a timeout): a late answer still keeps the session.
            reply = await self._patient(lambda: client.heartbeat(sid, timeout=self._patient_timeout()), "heartbeat")
            self._alive()
            self.period = float(reply.get("period", self.period))
            role = reply.get("role")
            if isinstance(role, str) and self.on_role is not None:
                self.on_role(role)
            roots = reply.get("roots")
            if isinstance(roots, str) and len(roots) <= MAX_ROOTS_DIGEST and self.on_roots is not None:
                self.on_roots(roots)
            await asyncio.sleep(self.period)

    async def _polls(self, client: DispatcherClient, sid: str) -> None:
        """One long poll of the session carries assignments, the endpoint table and log requests, each part
        only when it has news (docs/agent-protocol.md, "The session poll"): one request in flight, where three
        polls held three connections (issue 13). Log requests are answered by tasks of their own, all of them
        ended with the session."""
        seq = 0
        answering: set[asyncio.Task[None]] = set()
        try:
            while True:
                version = self.endpoints_version if self.on_endpoints is not None else None
                msg = await self._patient(partial(client.poll, sid, seq, version, self.poll_wait), "session poll")
                if not isinstance(msg, dict):
                    raise ValueError(f"dispatcher {client.base} answered the session poll with {type(msg).__name__}")
                logs_part = msg.get("logs")
                for req in logs_part.get("requests", ()) if isinstance(logs_part, dict) else ():
                    if len(answering) >= MAX_LOG_REQUESTS:
                        log.warning("agent: %d log requests in progress; dropping one", len(answering))
                        continue
                    job = asyncio.create_task(self._answer_logs(client, sid, req))
                    answering.add(job)
                    job.add_done_callback(answering.discard)
                if "endpoints" in msg:
                    await self._apply_endpoints(msg["endpoints"])
                if "assignments" in msg:
                    seq = self._apply_assignments(msg["assignments"], seq)
        finally:
            for job in answering:
                job.cancel()

    def _apply_assignments(self, msg: dict[str, Any], seq: int) -> int:
        """Apply an assignment message that followed `seq`; returns the seq to ask after next (0: the
        message did not follow, the complete set is asked for again)."""
        if msg["type"] == "complete":
            self.worker.apply_complete(msg["tasks"], msg.get("secrets", ()), msg.get("configs", ()))
        elif msg.get("applies_to") != seq:
            log.info("agent: assignment %s does not follow %s; asking for the complete set", msg["seq"], seq)
            return 0
        elif msg["changes"]:
            self.worker.apply_incremental(msg["changes"])
        if not self.connected.is_set():
            self._backoff = 0.0  # a working session: the next failure starts the backoff afresh
            self.connected.set()
        return int(msg["seq"])

    async def _apply_endpoints(self, table: Any) -> None:
        """A new endpoint table (versioned by content: docs/agent-protocol.md, "Endpoints") goes to the mesh."""
        if self.on_endpoints is None or not isinstance(table, dict) or table.get("unchanged") \
                or not isinstance(table.get("version"), str):
            return
        try:
            await self.on_endpoints(table)
        except Exception:  # the mesh must never end the session (tasks would be reconciled for nothing)
            log.exception("agent: applying endpoint table %s failed", table.get("version"))
        self.endpoints_version = table["version"]

    async def _answer_logs(self, client: DispatcherClient, sid: str, req: Any) -> None:
        try:
            rid = str(req["id"])
            query = logs.LogQuery.from_wire(req)
        except (KeyError, TypeError, InvalidArgument) as e:
            log.warning("agent: unreadable log request: %s", e)
            return

        async def post(chunk: bytes, done: bool) -> bool:
            return await client.log_chunk(sid, rid, chunk, done)

        try:
            await task_logs.answer(query, self.worker.managers, post)
        except Exception:
            log.exception("agent: log request %s failed", rid)
            await post(b"", True)

    async def _report(self, client: DispatcherClient, sid: str, batch: list[tuple[str, dict[str, Any]]]) -> Any:
        return await client.report(sid, batch, timeout=self._patient_timeout())

    async def _reports(self, client: DispatcherClient, sid: str) -> None:
        # Batched but not delayed (shoal/pacing.py): the first report goes at once, then at most one per
        # `status_interval`; what a task start reports meanwhile is gathered into the next.
        pacer = Pacer(self.status_interval)
        loop = asyncio.get_running_loop()
        while True:
            await self.queue.event.wait()
            if (delay := pacer.delay(loop.time())) > 0:
                await asyncio.sleep(delay)
            while self.queue.pending:
                pacer.sent(loop.time())
                batch = self.queue.batch()
                try:
                    # like a heartbeat, a report waits as long as the session lives at the dispatcher: a
                    # timeout drops the connection, and the retry's new TLS handshake is what a busy
                    # dispatcher can least afford (issue 13: a fifth of its CPU at 1,000 nodes)
                    await self._patient(partial(self._report, client, sid, batch), "status report")
                except StatusRejected as e:
                    # Never ours (or no longer): drop those so the rest can go through.
                    log.error("agent: dispatcher refused status reports: %s", e)
                    bad = set(e.task_ids) or {tid for tid, _ in batch}
                    self.queue.sent([(tid, st) for tid, st in batch if tid in bad])
                    continue
                except ValueError as e:
                    log.error("agent: dropping %d status reports the dispatcher cannot read: %s", len(batch), e)
                self.queue.sent(batch)
                if len(batch) < STATUS_BATCH:
                    break  # what arrived meanwhile waits for the pace; a backlog of full batches does not

    async def close(self) -> None:
        await self.http.aclose()
