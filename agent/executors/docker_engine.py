"""A small async client of the Docker Engine API (no Docker SDK): JSON over HTTP on the engine's unix socket.

`SHOAL_DOCKER_HOST` chooses the engine: `unix:///var/run/docker.sock` (the default), a bare socket path, or
`tcp://host:port` / `http://host:port`. The API version is negotiated once, lazily: `GET /_ping` (its
`API-Version` header) and `GET /version`; requests then go to `/v<min(engine, CLIENT_MAX)>/...`. Engines older
than `CLIENT_MIN` are refused (init, mounts, nano CPUs and health start periods need 1.29).

Errors: `EngineUnavailable` (the engine does not answer), `EngineError` with the HTTP status and the engine's
own message (`{"message": ...}`), `NotFoundError` (404) a subclass of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

DEFAULT_HOST = "unix:///var/run/docker.sock"
CLIENT_MAX = (1, 43)  # the newest API this client speaks (Engine 24)
CLIENT_MIN = (1, 29)  # HostConfig.Init, Mounts, NanoCpus, Healthcheck.StartPeriod
PULL_STALL = 300.0  # seconds a pull may go without a progress line
#: requests in flight on the shared pool; more wait on a semaphore, never in httpcore's queue: its bookkeeping on
#: each request walks every connection for every queued request (issue 13: ~40 % of the agent's busy loop at N =
#: 200 with 200 starts queued on 64 connections)
MAX_REQUESTS = 64
#: ... of which creates and starts (a burst of N, each held until the engine is done) take at most this many, so
#: the inspect after a start, stops and removes never queue behind the whole burst (a RUNNING report waited for it)
MAX_BULK = 48
Obj = dict[str, Any]


class EngineUnavailable(Exception):
    """The engine could not be reached (no socket, connection refused or reset, timeout)."""


class EngineError(Exception):
    """The engine answered with an error; `message` is the engine's own reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class NotFoundError(EngineError):
    """404: no such container, image or volume."""


def parse_version(text: str) -> tuple[int, int]:
    """`"1.41"` -> (1, 41)."""
    major, _, minor = text.strip().partition(".")
    return int(major), int(minor or 0)


def transport_for(host: str) -> tuple[httpx.AsyncBaseTransport, str]:
    """(transport, base URL) for a `SHOAL_DOCKER_HOST` value."""
    if host.startswith("unix://") or host.startswith("/"):
        path = host.removeprefix("unix://")
        return httpx.AsyncHTTPTransport(uds=path), "http://docker"
    if host.startswith("tcp://"):
        return httpx.AsyncHTTPTransport(), "http://" + host.removeprefix("tcp://").rstrip("/")
    if host.startswith("http://"):
        return httpx.AsyncHTTPTransport(), host.rstrip("/")
    raise ValueError(f"unsupported docker host {host!r} (use unix:///path, tcp://host:port or http://host:port)")


class DockerEngine:
    """One engine. Cheap to share: every controller of an agent uses the same client (a connection pool)."""

    def __init__(self, host: str = DEFAULT_HOST, *, timeout: float = 30.0) -> None:
        self.host = host
        self.timeout = timeout
        transport, base = transport_for(host)
        self._http = httpx.AsyncClient(transport=transport, base_url=base, timeout=timeout,
                                       limits=httpx.Limits(max_connections=MAX_REQUESTS,
                                                           max_keepalive_connections=MAX_REQUESTS))
        self._slots = asyncio.Semaphore(MAX_REQUESTS)
        self._bulk = asyncio.Semaphore(MAX_BULK)
        # Long requests (the executor's event stream, `wait`) hold their connection for as long as they watch;
        # in the shared pool they would take connections from every create, start and inspect, so they have
        # their own client, without a limit.
        wait_transport, _ = transport_for(host)
        self._waits = httpx.AsyncClient(transport=wait_transport, base_url=base, timeout=None,
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
        self._version: tuple[int, int] | None = None
        self._negotiating: asyncio.Lock | None = None
        self.info: Obj = {}

    @property
    def api_version(self) -> str | None:
        """The negotiated API version ("1.41"), None before the first request."""
        return None if self._version is None else f"{self._version[0]}.{self._version[1]}"

    async def close(self) -> None:
        await self._http.aclose()
        await self._waits.aclose()

    # ---- transport ---------------------------------------------------------------------------------------
    async def _raw(self, method: str, path: str, *, timeout: float | None = None, long: bool = False,
                   bulk: bool = False, **kw: Any) -> httpx.Response:
        """`long`: a request that may be held open for long (a container's wait, a stop's grace period), on a
        connection of its own (no limit: it takes no slot from the others); `bulk`: a create or start (`MAX_BULK`)."""
        try:
            limit = timeout if timeout is not None else (None if long else self.timeout)
            if long:
                return await self._waits.request(method, path, timeout=limit, **kw)
            async with self._bulk if bulk else contextlib.nullcontext(), self._slots:
                return await self._http.request(method, path, timeout=limit, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                httpx.WriteError, httpx.PoolTimeout, FileNotFoundError, ConnectionError) as e:
            raise EngineUnavailable(f"docker engine at {self.host}: {type(e).__name__}: {e}") from e
        except httpx.TimeoutException as e:
            raise EngineUnavailable(f"docker engine at {self.host}: no answer within the timeout ({e})") from e

    async def negotiate(self) -> str:
        """Agree on an API version (once); returns it. Raises EngineUnavailable or EngineError."""
        if self._version is not None:
            return self.api_version or ""
        if self._negotiating is None:
            self._negotiating = asyncio.Lock()
        async with self._negotiating:
            if self._version is None:
                ping = await self._raw("GET", "/_ping")
                if ping.status_code != 200:
                    raise EngineError(ping.status_code, f"docker engine /_ping answered {ping.status_code}")
                advertised = ping.headers.get("API-Version")
                resp = await self._raw("GET", "/version")
                info = resp.json() if resp.status_code == 200 else {}
                server = parse_version(str(info.get("ApiVersion") or advertised or "1.24"))
                if server < CLIENT_MIN:
                    raise EngineError(400, f"docker engine API {server[0]}.{server[1]} is older than the "
                                           f"{CLIENT_MIN[0]}.{CLIENT_MIN[1]} shoal needs")
                self._version = min(server, CLIENT_MAX)
                self.info = info
                log.info("docker: engine %s (API %s) at %s; using API %s", info.get("Version", "?"),
                         info.get("ApiVersion", advertised), self.host, self.api_version)
        return self.api_version or ""

    async def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204, 304),
                      timeout: float | None = None, long: bool = False, bulk: bool = False,
                      **kw: Any) -> httpx.Response:
        """`method /v<api>path`; raises EngineError (NotFoundError on 404) unless the status is in `ok`."""
        version = await self.negotiate()
        resp = await self._raw(method, f"/v{version}{path}", timeout=timeout, long=long, bulk=bulk, **kw)
        if resp.status_code not in ok:
            raise _error(resp)
        return resp

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        """A request whose answer is JSON (None for an empty body)."""
        resp = await self.request(method, path, **kw)
        if not resp.content:
            return None
        return resp.json()

    # ---- system ------------------------------------------------------------------------------------------
    async def ping(self) -> bool:
        """Whether the engine answers (negotiating the version on the way)."""
        try:
            await self.negotiate()
        except (EngineUnavailable, EngineError, ValueError) as e:
            log.debug("docker: engine at %s does not answer: %s", self.host, e)
            return False
        return True

    # ---- images ------------------------------------------------------------------------------------------
    async def image_inspect(self, ref: str) -> Obj | None:
        """The image, or None if the engine does not have it."""
        try:
            result: Obj = await self.call("GET", f"/images/{quote(ref, safe='')}/json")
        except NotFoundError:
            return None
        return result

    async def pull(self, ref: str, *, stall: float = PULL_STALL) -> None:
        """Pull `ref` (`name[:tag]`, `name@digest`; tag `latest` when none). The engine streams JSON progress
        lines and reports failures as an `error` line inside a 200 answer; either way EngineError carries the
        engine's reason. A pull may take long, but not `stall` seconds without any progress line."""
        name, tag = split_reference(ref)
        params = {"fromImage": name}
        if tag:
            params["tag"] = tag
        version = await self.negotiate()
        try:
            async with self._slots, self._http.stream("POST", f"/v{version}/images/create", params=params,
                                                      timeout=httpx.Timeout(self.timeout, read=stall)) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise _error(resp)
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("error"):
                        detail = event.get("errorDetail") or {}
                        raise EngineError(500, str(detail.get("message") or event["error"]))
        except httpx.ReadTimeout as e:
            raise EngineError(504, f"pull of {ref} made no progress for {stall:g}s") from e
        except (httpx.TransportError, ConnectionError) as e:
            raise EngineUnavailable(f"docker engine at {self.host}: pull of {ref} interrupted: {e}") from e

    # ---- containers --------------------------------------------------------------------------------------
    async def create(self, name: str, config: Mapping[str, Any]) -> str:
        """Create a container; returns its id."""
        body = await self.call("POST", "/containers/create", params={"name": name}, json=dict(config), bulk=True)
        return str(body["Id"])

    async def inspect(self, ref: str) -> Obj | None:
        """The container (by id or name), or None if there is none."""
        try:
            result: Obj = await self.call("GET", f"/containers/{quote(ref, safe='')}/json")
        except NotFoundError:
            return None
        return result

    async def start(self, ref: str) -> None:
        await self.request("POST", f"/containers/{quote(ref, safe='')}/start", bulk=True)

    async def stop(self, ref: str, grace: int) -> None:
        """The container's stop signal, then SIGKILL after `grace` whole seconds (the engine does both)."""
        await self.request("POST", f"/containers/{quote(ref, safe='')}/stop", params={"t": str(grace)},
                           timeout=grace + self.timeout, long=grace > 0)

    async def kill(self, ref: str, signal: str = "SIGKILL") -> None:
        try:
            await self.request("POST", f"/containers/{quote(ref, safe='')}/kill", params={"signal": signal})
        except EngineError as e:
            if e.status != 409:  # 409: not running
                raise

    @contextlib.asynccontextmanager
    async def events(self, filters: Mapping[str, list[str]], since: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """`GET /events` from `since` on, held open on the long-request client: the raw chunks of its JSON
        lines (agent/executors/docker_events.py). A dropped stream raises EngineUnavailable."""
        version = await self.negotiate()
        try:
            async with self._waits.stream("GET", f"/v{version}/events",
                                          params={"filters": json.dumps(dict(filters)), "since": since},
                                          timeout=httpx.Timeout(self.timeout, read=None)) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise _error(resp)
                yield resp.aiter_raw()
        except (httpx.TransportError, ConnectionError, FileNotFoundError) as e:
            raise EngineUnavailable(f"docker engine at {self.host}: event stream: {type(e).__name__}: {e}") from e

    async def remove(self, ref: str, *, force: bool = True) -> None:
        """Remove a container and its anonymous volumes; absent is fine."""
        try:
            await self.request("DELETE", f"/containers/{quote(ref, safe='')}",
                               params={"force": "1" if force else "0", "v": "1"})
        except NotFoundError:
            return
        except EngineError as e:
            if e.status == 409 and "already in progress" in e.message:
                return
            raise

    async def containers(self, labels: Mapping[str, str | None]) -> list[Obj]:
        """Every container (running or not) carrying all of `labels` (a None value: the key, any value)."""
        wanted = [k if v is None else f"{k}={v}" for k, v in labels.items()]
        result: list[Obj] = await self.call("GET", "/containers/json",
                                            params={"all": "1", "filters": json.dumps({"label": wanted})})
        return result


def split_reference(ref: str) -> tuple[str, str]:
    """(`name`, `tag or digest`) of an image reference; a colon inside a registry host:port is not a tag."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = ref.rpartition(":")
        return name, tag
    return ref, "latest"


def _error(resp: httpx.Response) -> EngineError:
    try:
        body = resp.json()
        message = str(body.get("message")) if isinstance(body, dict) and body.get("message") else resp.text
    except ValueError:
        message = resp.text
    message = message.strip() or f"HTTP {resp.status_code}"
    if resp.status_code == 404:
        return NotFoundError(404, message)
    return EngineError(resp.status_code, message)
