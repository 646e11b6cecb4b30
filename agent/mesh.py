"""The node's share of the data plane, userspace path (docs/networking.md): the routing mesh and service
listeners, fed by the endpoint table the dispatcher sends on the session (shoal/endpoints.py). With the kernel
path (`SHOAL_MESH`, `choose_mode`), the ingress published ports go to iptables rules instead
(agent/kernel_mesh.py) and only the service listeners and discovery files stay here.

- **Routing mesh**: for every ingress published TCP port of the table, a listener on the node's address
  (`node_addr` of the table: the address the node registered with, `SHOAL_ADDR`) that forwards each
  connection to a backend task anywhere in the cluster, at `<its node address>:<its host port>`.
- **Service listeners** (VIP-style access): for every VIP-mode service, a listener per declared TCP target
  port on the service's local VIP (`shoal.endpoints.local_vip`, a loopback address in 127.64.0.0/10, the same
  on every node), bound with SO_REUSEPORT so agents sharing a machine can all serve it.
- **Discovery files** for process tasks: a hosts(5) file (`SHOAL_HOSTS_FILE`) and a JSON endpoints file
  (`SHOAL_ENDPOINTS_FILE`), rewritten atomically with every table.

A listener is open exactly while its port has at least one reachable backend: with none (scaled to 0, every
task gone) it is closed, so clients get "connection refused" rather than an accepted connection that dies; a
port that leaves the table is closed. Each connection goes to the backend with the fewest connections open
through this listener (ties in turn); a backend that refuses or does not answer within `connect_timeout` is
skipped for the next one, and one that closes before answering anything while the client waits gets the
client's bytes replayed to the next one (`Relay`). Bytes are copied both ways until both sides are done
(half-closes passed on).

The last table is saved in the state directory, so a restarted agent opens its listeners before it reaches a
dispatcher again; the next table replaces it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.kernel_mesh import KernelMesh
from agent.kernel_mesh import check as kernel_check
from shoal import endpoints, iptables, meshrules
from shoal.lb import CHUNK, close_server, pipe
from shoal.models.objects import Obj

log = logging.getLogger(__name__)

Addr = tuple[str, int]


class Listener:
    """One listening address: its current backends, the connections open to each, the server while open."""

    def __init__(self, kind: str, host: str, port: int, *, connect_timeout: float, reuse_port: bool,
                 sock_factory: Callable[[], socket.socket] | None = None) -> None:
        """`sock_factory`: makes the listening socket (bound, listening) instead of binding `host:port` here —
        the container overlay's VIP balancers listen inside a network namespace (agent/overlay.py)."""
        self.kind, self.host, self.port = kind, host, port
        self.connect_timeout = connect_timeout
        self.reuse_port = reuse_port
        self.sock_factory = sock_factory
        self.service_id = ""
        self.backends: list[Addr] = []
        self.active: dict[Addr, int] = {}
        self.server: asyncio.Server | None = None
        self.error: str | None = None
        self.connections = 0
        self.failed = 0
        self._turn = itertools.count()
        self._handlers: set[asyncio.Task[None]] = set()

    def describe(self) -> Obj:
        return {"kind": self.kind, "listen": f"{self.host}:{self.port}", "service_id": self.service_id,
                "open": self.server is not None, "error": self.error,
                "backends": [f"{h}:{p}" for h, p in self.backends], "connections": self.connections,
                "failed": self.failed}

    async def update(self, service_id: str, backends: list[Addr]) -> None:
        self.service_id = service_id
        if backends != self.backends:
            log.info("mesh: %s %s:%d of service %s: backends %s", self.kind, self.host, self.port, service_id,
                     ", ".join(f"{h}:{p}" for h, p in backends) or "none")
        self.backends = list(backends)
        if self.backends and self.server is None:
            try:
                if self.sock_factory is not None:
                    self.server = await asyncio.start_server(self._handle, sock=self.sock_factory())
                else:
                    self.server = await asyncio.start_server(self._handle, self.host, self.port,
                                                             reuse_port=self.reuse_port or None)
                self.error = None
                log.info("mesh: %s listener %s:%d open (service %s, %d backends)", self.kind, self.host, self.port,
                         service_id, len(self.backends))
            except OSError as e:
                if self.error != str(e):
                    log.warning("mesh: cannot listen on %s:%d for service %s: %s", self.host, self.port,
                                service_id, e)
                self.error = str(e)
        elif not self.backends and self.server is not None:
            await self.close()

    async def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await close_server(server)
            log.info("mesh: %s listener %s:%d closed", self.kind, self.host, self.port)

    def order(self) -> list[Addr]:
        """Backends to try, fewest open connections first, ties in turn."""
        n = len(self.backends)
        if n == 0:
            return []
        start = next(self._turn) % n
        rotated = self.backends[start:] + self.backends[:start]
        return sorted(rotated, key=lambda a: self.active.get(a, 0))

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        relay = Relay()
        for addr in self.order():
            try:
                backend_r, backend_w = await asyncio.wait_for(asyncio.open_connection(*addr), self.connect_timeout)
            except (OSError, TimeoutError) as e:
                log.debug("mesh: backend %s:%d of %s unavailable (%s); trying the next", *addr, self.service_id, e)
                continue
            self.active[addr] = self.active.get(addr, 0) + 1
            try:
                if await relay.run(client_r, client_w, backend_r, backend_w):
                    log.info("mesh: backend %s:%d of %s closed before answering; replaying to the next", *addr,
                             self.service_id)
                    continue
            finally:
                self.active[addr] -= 1
                backend_w.close()
            client_w.close()
            return
        self.failed += 1
        log.warning("mesh: no backend of service %s answers on %s:%d; closing the connection", self.service_id,
                    self.host, self.port)
        client_w.close()


REPLAY_MAX = 64 * 1024  # bytes of a client's request kept to replay it to another backend


class Relay:
    """Copies one client connection to a backend and back. Until the backend's first byte, what the client sent
    is kept (up to `REPLAY_MAX`): a backend that closes or resets the connection before answering anything,
    while the client still waits for an answer (it has not half-closed), is given up and `run` returns True,
    so the caller connects to the next backend and the kept bytes are sent there first — a backend killed
    between accepting and answering costs the client nothing (haproxy's `retry-on empty-response`). A client
    that half-closed (it said all it had, e.g. an upload) is never replayed: the backend may have consumed it."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.replayable = True
        self.answered = False
        self.client_eof = False

    async def run(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                  backend_r: asyncio.StreamReader, backend_w: asyncio.StreamWriter) -> bool:
        if self.sent:
            backend_w.write(bytes(self.sent))
        up = asyncio.create_task(self._upstream(client_r, backend_w))
        retry = await self._downstream(backend_r, client_w)
        if retry:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await up
            return True
        with contextlib.suppress(Exception):
            await up
        return False

    async def _upstream(self, client_r: asyncio.StreamReader, backend_w: asyncio.StreamWriter) -> None:
        try:
            while data := await client_r.read(CHUNK):
                if not self.answered:
                    if len(self.sent) + len(data) <= REPLAY_MAX:
                        self.sent += data
                    else:
                        self.replayable = False
                backend_w.write(data)
                await backend_w.drain()
            self.client_eof = True
            if backend_w.can_write_eof():
                backend_w.write_eof()
        except (ConnectionError, OSError):
            pass  # the backend went away: the downstream side decides (replay, or the end)

    async def _downstream(self, backend_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> bool:
        try:
            first = await backend_r.read(CHUNK)
        except (ConnectionError, OSError):
            first = b""
        if not first:
            if self.replayable and not self.client_eof:
                return True
            with contextlib.suppress(ConnectionError, OSError):
                if client_w.can_write_eof():
                    client_w.write_eof()
            return False
        self.answered = True
        try:
            client_w.write(first)
            await client_w.drain()
        except (ConnectionError, OSError):
            return False
        await pipe(backend_r, client_w)
        return False


MODES = ("auto", "kernel", "userspace")


class KernelUnavailable(Exception):
    """SHOAL_MESH=kernel on a machine without the kernel path: what is missing."""


def choose_mode(wanted: str, check: Callable[[], list[str]] = kernel_check) -> tuple[str, str]:
    """The path for the ingress ports (SHOAL_MESH) and why: `kernel` when asked or, with `auto`, when the
    machine has it (agent/kernel_mesh.py `check`, in a scratch chain); else `userspace`, logged as a warning
    under `auto`. `kernel` asked but unavailable raises KernelUnavailable naming what is missing. Blocking."""
    if wanted not in MODES:
        raise KernelUnavailable(f"SHOAL_MESH={wanted!r}: expected one of {', '.join(MODES)}")
    if wanted == "userspace":
        mode, reason = "userspace", "SHOAL_MESH=userspace"
    elif missing := check():
        if wanted == "kernel":
            raise KernelUnavailable("SHOAL_MESH=kernel but the kernel path is unavailable here: missing "
                                    + "; ".join(missing))
        mode, reason = "userspace", "SHOAL_MESH=auto and the kernel path is unavailable: missing " + "; ".join(missing)
    else:
        mode, reason = "kernel", f"SHOAL_MESH={wanted}: root, iptables and route_localnet work here"
    log.log(logging.WARNING if wanted == "auto" and mode == "userspace" else logging.INFO,
            "mesh: %s path for ingress published ports (%s)", mode, reason)
    return mode, reason


class Mesh:
    """`mode`: `userspace` (listeners for everything) until `choose` picks `kernel`, where the ingress published
    ports (TCP and UDP) are iptables rules (agent/kernel_mesh.py) and only the service listeners stay here."""

    def __init__(self, state_dir: Path, *, connect_timeout: float = 2.0, default_addr: str | None = None,
                 node_tag: str = "") -> None:
        self.dir = state_dir / "mesh"
        self.node_tag = node_tag  # names the node's iptables chains (shoal.meshrules.tag)
        self.mode = "userspace"
        self.mode_reason = "not chosen (SHOAL_MESH is read at the agent's start)"
        self.kernel: KernelMesh | None = None
        self.connect_timeout = connect_timeout
        self.default_addr = default_addr  # SHOAL_ADDR: where ingress ports listen if the table names none
        self.version = ""
        self.table: Obj = {}
        self.listeners: dict[tuple[str, str, int], Listener] = {}
        self._lock = asyncio.Lock()

    @property
    def hosts_file(self) -> Path:
        return self.dir / "hosts"

    @property
    def endpoints_file(self) -> Path:
        return self.dir / "endpoints.json"

    def task_env(self) -> dict[str, str]:
        """What every process task is told (docs/networking.md)."""
        return {"SHOAL_HOSTS_FILE": str(self.hosts_file), "SHOAL_ENDPOINTS_FILE": str(self.endpoints_file)}

    def use(self, mode: str, reason: str) -> None:
        """Take the path `choose_mode` picked. Userspace: chains a kernel path of this node left in an earlier
        run (SHOAL_MESH changed) are removed, or they would keep intercepting its ports. Blocking (iptables)."""
        self.mode, self.mode_reason = mode, reason
        if mode == "kernel":
            self.kernel = KernelMesh(self.node_tag or meshrules.tag("default", socket.gethostname()))
        elif self.node_tag and (removed := iptables.sweep(self.node_tag)):
            log.info("mesh: removed the kernel path's chains %s left by an earlier run", ", ".join(removed))

    async def restore(self) -> None:
        """Open the listeners of the table saved by the previous agent process (if any)."""
        try:
            table = json.loads((self.dir / "table.json").read_text())
        except (OSError, ValueError):
            return
        if isinstance(table, dict):
            await self.apply(table, save=False)
            log.info("mesh: restored endpoint table %s from the state directory", self.version)

    async def apply(self, table: Obj, *, save: bool = True) -> None:
        async with self._lock:
            self.table = table
            self.version = str(table.get("version") or "")
            self._write_files(table, save)
            wanted: dict[tuple[str, str, int], tuple[str, list[Addr]]] = {}
            addr = str(table.get("node_addr") or self.default_addr or "0.0.0.0")
            ingress = endpoints.ingress_routes(table)
            if self.kernel is not None:
                await asyncio.to_thread(self.kernel.apply, addr,
                                        {key: backends for key, (_, backends) in ingress.items()})
                ingress = {}
            for (proto, port), (sid, backends) in ingress.items():
                if proto == "tcp":
                    wanted[("ingress", addr, port)] = (sid, backends)
            for (vip, port), (sid, backends) in endpoints.vip_routes(table).items():
                wanted[("vip", vip, port)] = (sid, backends)
            for key in list(self.listeners):
                if key not in wanted:
                    await self.listeners.pop(key).close()
            for key, (sid, backends) in wanted.items():
                listener = self.listeners.get(key)
                if listener is None:
                    listener = self.listeners[key] = Listener(key[0], key[1], key[2],
                                                              connect_timeout=self.connect_timeout,
                                                              reuse_port=key[0] == "vip")
                await listener.update(sid, backends)

    def _write_files(self, table: Obj, save: bool) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            hosts = "# shoal service discovery (agent/mesh.py); rewritten with every endpoint table\n"
            hosts += "".join(line + "\n" for line in endpoints.hosts_lines(table))
            _write_atomic(self.hosts_file, hosts)
            _write_atomic(self.endpoints_file, json.dumps(endpoints.discovery(table), indent=1, sort_keys=True))
            if save:
                _write_atomic(self.dir / "table.json", json.dumps(table))
        except OSError as e:
            log.warning("mesh: cannot write the discovery files in %s: %s", self.dir, e)

    async def close(self) -> None:
        async with self._lock:
            for listener in self.listeners.values():
                await listener.close()
            self.listeners.clear()
            if self.kernel is not None:
                await asyncio.to_thread(self.kernel.remove)

    def status(self) -> dict[str, Any]:
        return {"version": self.version, "mode": self.mode, "mode_reason": self.mode_reason,
                "kernel": None if self.kernel is None else self.kernel.status(),
                "listeners": [lst.describe() for lst in self.listeners.values()]}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(path)
