"""The one transport module: every server, HTTP client, raft peer connection and NATS connection of shoal gets
its TLS settings and its peer's identity here, so that mutual TLS is on for every hop and decided in one place.

- `Credentials`: a process's key, certificate and trusted roots (`<dir>/swarm-node.{crt,key}`,
  `swarm-root-ca.crt`), loaded once into long-lived SSL contexts that are reloaded in place when the
  certificate is renewed (hundreds of clients in one process share them; nobody reloads the CA per connection).
- Servers: `server_config(app, host, port, creds, policy)` builds uvicorn's config. The TLS handshake requires
  a client certificate signed by the cluster's root (plaintext and certificate-less clients are refused before
  HTTP is spoken); the verified identity is put in the ASGI scope by our own HTTP protocol class (released
  uvicorn does not expose the peer certificate), which also bounds connections and header time; `Limits`
  (shoal.limits: body size, requests in progress) is the outermost ASGI app, then `Guard` — in front of every
  route and fast path — refuses revoked nodes and whatever the service's `Policy` does not allow.
- Clients: `http_client()` / `sync_http_client()` present the certificate, verify the server against the
  cluster root (and its name), and can require the server to be a manager (a worker's certificate cannot stand
  in for a dispatcher even if it were issued for the same address).
- Raft peers: `peer_server_context()` / `peer_client_context()`; a peer is known by the node id in its
  certificate, never by its address (fault-injecting proxies sit between members in the tests).
- NATS: `nats_options()` for nats-py (TLS with the client certificate; nats-server maps it to a user)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shoal import keyfile, pki
from shoal.aioclient import AiohttpTransport, SessionClient
from shoal.limits import (
    TLS_WRITE_PIECE,
    Limits,
    ServerLimits,
    bound_tls_connections,
    connection_budget,
    count_refused,
    raise_fd_limit,
)
from shoal.pki import Identity

log = logging.getLogger(__name__)

IDENTITY_SCOPE_KEY = "shoal.identity"
#: the connection's `CorkedTransport` in each request's scope: a fast path that writes its whole answer at once
CORK_SCOPE_KEY = "shoal.cork"
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

#: an admin client bundle's file names (Docker's DOCKER_CERT_PATH layout): certificate, key, roots
BUNDLE_NAMES = ("cert.pem", "key.pem", "ca.pem")

Policy = Callable[[Identity, str, str], "str | None"]
"""(identity, method, path) -> None to allow, or the reason it is refused (a 403's message)."""

Authenticator = Callable[[Any], "Identity | None"]
"""(ASGI scope) -> the identity a credential other than a certificate proves (the gateway's dashboard session
cookie), or None. Asked only for requests without a client certificate; the identity it returns goes through
the same cluster, revocation and policy checks as a certificate's."""


class TransportError(RuntimeError):
    """Credentials that cannot be used; raised at start-up (a security feature that cannot be enabled is an
    error, never a silent fallback to plaintext)."""


class CredentialsLocked(TransportError):
    """The process's TLS key is encrypted under the autolock key (shoal.keyfile) and no key was given."""


# ---- credentials ----------------------------------------------------------------------------------------------
class Credentials:
    """A process's identity and the SSL contexts built from it (module doc)."""

    def __init__(self, cert_dir: Path, *, names: tuple[str, str, str] = (pki.CERT_FILE, pki.KEY_FILE,
                                                                          pki.ROOT_FILE),
                 kek: bytes | None = None) -> None:
        """`kek`: the key-encryption key the TLS key is encrypted under (autolock, shoal.keyfile); an encrypted
        key without it is `CredentialsLocked`, with a wrong one a TransportError."""
        self.dir = Path(cert_dir)
        #: the KEK the key file is encrypted under (None: a plain PEM); a renewed key is written under it too
        self.kek: bytes | None = None
        self.cert_file = self.dir / names[0]
        self.key_file = self.dir / names[1]
        self.root_file = self.dir / names[2]
        for f in (self.cert_file, self.key_file, self.root_file):
            if not f.is_file():
                raise TransportError(f"transport: {f} is missing: this process has no identity. Start it through "
                                     "`shoal swarm init`/`join` (or `shoal up`), which issue one")
        try:
            _, self.kek = keyfile.decrypt(self.key_file.read_bytes(), [kek])
        except keyfile.KeyLocked:
            raise CredentialsLocked(f"transport: {self.key_file} is encrypted under the autolock key: this "
                                    "process is locked until `shoal swarm unlock`") from None
        except (keyfile.WrongKEK, ValueError, OSError) as e:
            raise TransportError(f"transport: cannot open {self.key_file}: {e}") from None
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._loaded_roots = b""
        self.identity = self._read_identity()
        self.loaded_at = self.cert_file.stat().st_mtime

    @classmethod
    def client_bundle(cls, bundle_dir: Path) -> Credentials:
        """An admin bundle in the DOCKER_CERT_PATH layout: cert.pem, key.pem, ca.pem."""
        return cls(bundle_dir, names=BUNDLE_NAMES)

    def _read_identity(self) -> Identity:
        try:
            return pki.identity_of_pem(self.cert_file.read_bytes())
        except (OSError, pki.PKIError) as e:
            raise TransportError(f"transport: cannot read {self.cert_file}: {e}") from None

    @property
    def roots_pem(self) -> bytes:
        return self.root_file.read_bytes()

    def _new_context(self, purpose: str) -> ssl.SSLContext:
        server = purpose.startswith("server")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # TLS 1.2 suites: ECDHE with AEAD only (1.3's suites are all AEAD).
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
        ctx.verify_mode = ssl.CERT_REQUIRED if purpose != "server-join" else ssl.CERT_OPTIONAL
        # HTTP clients check the server's name (SANs carry every address it is dialled by); raft peers and the
        # root-pinning join client identify the peer by its certificate instead.
        ctx.check_hostname = purpose == "client"
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file, password=self._password())
            ctx.load_verify_locations(cadata=self.roots_pem.decode())
        except (OSError, ssl.SSLError, ValueError) as e:
            raise TransportError(f"transport: cannot load the credentials in {self.dir}: {e}") from None
        return ctx

    def _password(self) -> bytes | None:
        return keyfile.password(self.kek) if self.kek is not None else None

    def key_bytes(self, plain_pem: bytes) -> bytes:
        """A (renewed) plain key as this process writes it: encrypted under its KEK when it has one."""
        return keyfile.wanted(plain_pem, self.kek)

    def write_identity(self, cert: bytes, plain_key: bytes, roots: bytes) -> None:
        """Write a renewed identity: the key under this process's KEK when it has one (never in the clear), and
        under the same lock as `rekey`, so a re-wrap cannot put back the key being replaced."""
        with self._lock:
            pki.write_identity(self.dir, cert, self.key_bytes(plain_key), roots)

    def rekey(self, kek: bytes | None) -> bool:
        """Re-write the key file under `kek` (None: a plain PEM) — autolock turned on or off, or the unlock key
        rotated. Atomic; the loaded contexts keep working (they hold the key already). True if it changed."""
        with self._lock:
            current = self.key_file.read_bytes()
            if kek == self.kek and keyfile.is_encrypted(current) == (kek is not None):
                return False  # the common case (the CA asks at every poll): no key derivation
            plain, _ = keyfile.decrypt(current, [self.kek, kek])
            keyfile.write(self.key_file, plain, kek)
            self.kek = kek
            return True

    def context(self, purpose: str) -> ssl.SSLContext:
        """The shared context for `purpose`: server, server-join (client certificate optional), client, peer-client."""
        with self._lock:
            ctx = self._contexts.get(purpose)
            if ctx is None:
                ctx = self._contexts[purpose] = self._new_context(purpose)
            return ctx

    def reload(self) -> bool:
        """Load a renewed certificate (and new roots) into every existing context; True when something
        changed. New connections use it; established ones keep theirs (nothing is interrupted)."""
        try:
            mtime = self.cert_file.stat().st_mtime
        except OSError:
            return False
        if mtime == self.loaded_at:
            return False
        with self._lock:
            try:
                roots = self.roots_pem.decode()
                for ctx in self._contexts.values():
                    ctx.load_cert_chain(self.cert_file, self.key_file, password=self._password())
                    ctx.load_verify_locations(cadata=roots)
            except (OSError, ssl.SSLError, ValueError) as e:
                # A renewal being written (certificate and key are separate files): try again on the next call.
                log.info("transport: credentials in %s not reloaded yet: %s", self.dir, e)
                return False
            self.identity = self._read_identity()
            self.loaded_at = mtime
        log.info("transport: loaded renewed certificate for %s (valid until %s)", self.identity.describe(),
                 time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.identity.not_after)))
        return True


def load_credentials(cert_dir: str | Path | None, kek: bytes | None = None) -> Credentials:
    """The process's credentials from `SHOAL_CERT_DIR`; refuse to start without them (`CredentialsLocked`: the
    key is encrypted under the autolock key and `kek` is not given)."""
    if not cert_dir:
        raise TransportError("transport: SHOAL_CERT_DIR is not set: shoal processes only speak mutual TLS. "
                             "Start the cluster with `shoal up` or `shoal swarm init`/`join`")
    return Credentials(Path(cert_dir), kek=kek)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Identity | None:
    """The verified peer's identity on a TLS connection (None when it sent no certificate)."""
    if ssl_object is None:
        return None
    # positional: httpx's sync transport hands over the C-level `_ssl._SSLSocket`, which takes no keywords
    der = ssl_object.getpeercert(True)
    return _identity_of_der(der) if der else None


@lru_cache(maxsize=4096)
def _identity_of_der(der: bytes) -> Identity:
    return pki.identity_of_der(der)


# ---- servers --------------------------------------------------------------------------------------------------
class CorkedTransport:
    """A connection's transport that can hold its writes and hand them over as one: uvicorn writes an answer's
    head and its body separately, which over TLS is two records and two send syscalls (each send on loopback may
    wake the client and cost this process its core on a busy machine). A fast path that has its whole answer
    brackets its two ASGI sends with `hold()` and `release()` in the same coroutine, so nothing is held past
    the answer (unlike holding until the end of the loop turn). Everything else is the transport's own.

    Over TLS, what is larger than `TLS_WRITE_PIECE` goes to the transport in pieces of that size
    (shoal.limits: the connection's outgoing BIO keeps the size of the largest single write for its life)."""

    __slots__ = ("_held", "_piece", "transport")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self._held: list[bytes] | None = None
        self._piece = TLS_WRITE_PIECE if transport.get_extra_info("ssl_object") is not None else 0

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        piece = self._piece
        if not piece or len(data) <= piece:
            self.transport.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), piece):
            self.transport.write(view[start:start + piece])

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        if held and not self.transport.is_closing():
            self._write(held[0] if len(held) == 1 else b"".join(held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class IdentifiedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol that puts the verified client identity in each request's scope
    (`scope["shoal.identity"]`): read once per connection from the TLS object. Its transport is a
    `CorkedTransport`, in each request's scope as `scope["shoal.cork"]`.

    It also bounds what a client can hold (shoal.limits): at most `max_connections` open connections (more are
    aborted on arrival), and request headers complete within `header_timeout` seconds. `server_config` makes a
    subclass per server with its numbers."""

    max_connections: int = ServerLimits().max_connections
    header_timeout: float = ServerLimits().header_timeout
    refused_connections: int = 0
    slow_headers: int = 0
    _refused = False
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            type(self).refused_connections += 1
            count_refused("connections_over_limit")
            self._refused = True
            self.transport = transport
            transport.abort()
            return
        super().connection_made(transport)
        self.transport = CorkedTransport(transport)  # type: ignore[assignment]
        ident = peer_identity(transport.get_extra_info("ssl_object"))
        if ident is not None:
            self.app = _WithIdentity(self.app, ident)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[CORK_SCOPE_KEY] = self.transport  # type: ignore[literal-required]
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.cycle is None or self.cycle.response_complete:  # no request in progress: idle or slow headers
            type(self).slow_headers += 1
            count_refused("slow_headers")
            self.transport.abort()

    def shutdown(self) -> None:
        """Graceful shutdown: an idle keep-alive connection is aborted rather than closed. Closing a TLS
        connection waits for the client's close_notify (asyncio's ssl_shutdown_timeout, 30 s), which an idle
        pooled client never sends as it is not reading: uvicorn would wait that long for every idle client
        before running the lifespan shutdown (measured: a stopped raftstore leader was SIGKILLed after 10 s
        before it could hand leadership over). Nothing is lost: no request is in flight on such a connection."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            super().shutdown()


@dataclass(frozen=True)
class _WithIdentity:
    app: Any
    identity: Identity

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope[IDENTITY_SCOPE_KEY] = self.identity
        await self.app(scope, receive, send)


def scope_identity(scope: Any) -> Identity | None:
    ident: Identity | None = scope.get(IDENTITY_SCOPE_KEY)
    return ident


@dataclass
class Revocations:
    """Node ids whose certificates are refused everywhere (the cluster object's `removed_nodes`), kept
    current by the process (`watch_revocations`)."""

    ids: frozenset[str] = frozenset()

    def update(self, ids: Iterable[str]) -> None:
        self.ids = frozenset(ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.ids


@dataclass
class Guard:
    """The outermost ASGI app of every shoal server: no request reaches a route (or a fast path) unless the
    caller's certificate belongs to this cluster, is not revoked and the policy allows the call."""

    app: Any
    policy: Policy
    cluster_id: str
    revoked: Revocations = field(default_factory=Revocations)
    anonymous: frozenset[str] = frozenset()  # paths a caller without a certificate may call (the CA's join)
    authenticate: Authenticator | None = None  # a credential other than a certificate (the dashboard's session)
    login_hint: str = ""  # said to a caller without a certificate: how else it may get in
    refused: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ident = scope_identity(scope)
        if ident is None and self.authenticate is not None and scope["path"] not in self.anonymous:
            ident = self.authenticate(scope)
            if ident is not None:
                scope[IDENTITY_SCOPE_KEY] = ident
        reason = self.check(ident, scope["method"], scope["path"])
        if reason is None:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        status, message = reason
        code = "unauthenticated" if status == 401 else "node_removed" if "revoked" in message else "permission_denied"
        body = json.dumps({"message": message, "code": code}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def check(self, ident: Identity | None, method: str, path: str) -> tuple[int, str] | None:
        if ident is None:
            if path in self.anonymous:
                return None
            return 401, "transport: a client certificate of this cluster is required" + self.login_hint
        if ident.cluster_id != self.cluster_id:
            return 403, f"transport: the certificate belongs to cluster {ident.cluster_id!r}, not this one"
        if ident.node_id in self.revoked:
            return 403, f"transport: node {ident.node_id} was removed from the cluster; its certificate is revoked"
        reason = self.policy(ident, method, path)
        return None if reason is None else (403, reason)


def managers_only(ident: Identity, method: str, path: str) -> str | None:
    """The policy of the leader-only subsystems and agents' own ports: ops routes for managers and admins."""
    if ident.role in (pki.MANAGER, pki.ADMIN):
        return None
    return f"transport: {ident.describe()} may not call {method} {path}"


def server_config(app: Any, host: str, port: int, creds: Credentials, policy: Policy, *,
                  revoked: Revocations | None = None, anonymous: Iterable[str] = (),
                  authenticate: Authenticator | None = None, login_hint: str = "", **kwargs: Any) -> uvicorn.Config:
    """uvicorn's Config for a shoal server: mutual TLS, the identity in the scope, `Guard` in front of
    everything. `anonymous`: paths open to a TLS client without a certificate (the CA's join, the dashboard's
    login link); a server with such paths, or an `authenticate` hook (the dashboard's session cookie), asks for
    a client certificate without requiring it, and Guard refuses the rest (401, with `login_hint`)."""
    anonymous = frozenset(anonymous)
    guard = Guard(app, policy, creds.identity.cluster_id, revoked or Revocations(), anonymous, authenticate,
                  login_hint)
    ctx = creds.context("server-join" if anonymous or authenticate is not None else "server")
    limits = ServerLimits.from_env()
    bound_tls_connections(limits.header_timeout)
    protocol = type("IdentifiedHttpTools", (IdentifiedHttpTools,), {
        "max_connections": connection_budget(limits, raise_fd_limit()), "header_timeout": limits.header_timeout})
    options: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on",
                               "timeout_keep_alive": 30, **kwargs}
    return uvicorn.Config(Limits(guard, limits), host=host, port=port, http=protocol,
                          ssl_context_factory=lambda _config, _default: ctx, **options)


# ---- clients --------------------------------------------------------------------------------------------------
def _require_server_role(role: str | None) -> Callable[[httpx.Response], Awaitable[None]] | None:
    if role is None:
        return None

    async def hook(response: httpx.Response) -> None:
        check_server_role(response, role)

    return hook


#: the connections (httpcore network streams) whose server was already found to hold the role: a connection's
#: peer does not change, and asking anyio for the SSL object builds every extra attribute of the stream afresh
#: (≈ 14 % of the CPU of a process running hundreds of hollow agents, issue 13)
_ROLE_CHECKED: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def check_server_role(response: httpx.Response, role: str) -> None:
    stream = response.extensions.get("network_stream")
    if stream is not None:
        try:
            if _ROLE_CHECKED.get(stream) == role:
                return
        except TypeError:  # a stream that cannot be weakly referenced: checked every time
            pass
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    ident = peer_identity(ssl_object)
    if ident is None or ident.role != role:
        who = ident.describe() if ident else "a server without a certificate"
        raise httpx.RemoteProtocolError(f"transport: {response.url} is served by {who}, not a {role}")
    with contextlib.suppress(TypeError):
        _ROLE_CHECKED[stream] = role


#: how long an idle pooled connection is kept by default: dropped well before the server's keep-alive timeout
#: (30 s, server_config), so a request never races the server closing the same connection
KEEPALIVE_EXPIRY = 2.0
#: an agent's connections to its dispatcher: kept across heartbeats (5 s apart by default), so a heartbeat does
#: not cost a TLS handshake on each side (issue 13: 24 % of a dispatcher's CPU with 1,000 nodes) — still well
#: under the server's 30 s
SESSION_KEEPALIVE_EXPIRY = 20.0


def _limits(keepalive_expiry: float = KEEPALIVE_EXPIRY) -> httpx.Limits:
    return httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=keepalive_expiry)


def http_client(creds: Credentials | None, *, timeout: float = 10.0, base_url: str = "",
                server_role: str | None = pki.MANAGER, keepalive_expiry: float = KEEPALIVE_EXPIRY,
                **kwargs: Any) -> httpx.AsyncClient:
    """Every outgoing async HTTP client: presents `creds`, trusts only the cluster root, and (by default)
    accepts only a manager's server certificate. `creds=None` is for in-process test transports only.
    `keepalive_expiry`: seconds an idle connection is kept (must stay under the server's 30 s)."""
    if creds is None:
        return httpx.AsyncClient(timeout=timeout, base_url=base_url, limits=_limits(keepalive_expiry), **kwargs)
    hooks: dict[str, list[Any]] = {"response": []}
    hook = _require_server_role(server_role)
    if hook is not None:
        hooks["response"].append(hook)
    return httpx.AsyncClient(timeout=timeout, base_url=base_url, limits=_limits(keepalive_expiry),
                             verify=creds.context("client"), event_hooks=hooks, **kwargs)


def session_client(creds: Credentials | None, *, timeout: float = 10.0,
                   keepalive_expiry: float = SESSION_KEEPALIVE_EXPIRY,
                   server_role: str | None = pki.MANAGER) -> httpx.AsyncClient:
    """`http_client` for the agent's dispatcher session — the calls every node makes several times a period —
    over aiohttp (issue 13: a third to a quarter of httpx's CPU per request). The same promises: `creds`
    presented, only the cluster root trusted, the server's role checked on each new connection. `creds=None`
    (in-process test transports) gives a plain httpx client."""
    if creds is None:
        return http_client(None, timeout=timeout, keepalive_expiry=keepalive_expiry)

    def check_peer(ssl_object: ssl.SSLObject | None, url: str) -> None:
        ident = peer_identity(ssl_object)
        if server_role is not None and (ident is None or ident.role != server_role):
            who = ident.describe() if ident else "a server without a certificate"
            raise httpx.RemoteProtocolError(f"transport: {url} is served by {who}, not a {server_role}")

    return SessionClient(AiohttpTransport(creds.context("client"), keepalive_expiry=keepalive_expiry,
                                          check_peer=check_peer), timeout=timeout)


def sync_http_client(creds: Credentials | None, *, timeout: float = 10.0, base_url: str = "",
                     server_role: str | None = pki.MANAGER) -> httpx.Client:
    """The blocking twin of `http_client` (the CLI and the supervisor)."""
    if creds is None:
        return httpx.Client(timeout=timeout, base_url=base_url)

    def hook(response: httpx.Response) -> None:
        if server_role is not None:
            check_server_role(response, server_role)

    return httpx.Client(timeout=timeout, base_url=base_url, verify=creds.context("client"),
                        event_hooks={"response": [hook]})


def chains_to(creds: Credentials, root_pem: bytes) -> bool:
    """True when `root_pem` (one certificate) signed this process's certificate, checked by OpenSSL: a TLS
    handshake between two memory buffers, the process's own certificate and key on one side and only that
    root trusted on the other (the ssl module's one way to verify a certificate). A running process then needs
    no `cryptography` for its root polls (shoal.enroll.Renewer; docs/performance.md "Footprint"). A
    certificate out of its validity does not verify either."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the root given is the anchor, self-signed or not
    try:
        server.load_cert_chain(creds.cert_file, creds.key_file, password=creds._password())
        client.load_verify_locations(cadata=root_pem.decode())
    except (OSError, ssl.SSLError, ValueError):
        return False
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    sides = [client.wrap_bio(c_in, c_out), server.wrap_bio(s_in, s_out, server_side=True)]
    done = [False, False]
    for _ in range(8):
        for i, side in enumerate(sides):
            if not done[i]:
                try:
                    side.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return True
    return False


# ---- raft peers ------------------------------------------------------------------------------------------------
def peer_server_context(creds: Credentials) -> ssl.SSLContext:
    return creds.context("server")


def peer_client_context(creds: Credentials) -> ssl.SSLContext:
    return creds.context("peer-client")


# ---- NATS -----------------------------------------------------------------------------------------------------
def nats_options(creds: Credentials) -> dict[str, Any]:
    """Keyword arguments for `nats.connect`: TLS with this process's certificate (the server maps it to a
    user through `verify_and_map`), the server verified against the cluster root."""
    return {"tls": creds.context("peer-client"), "tls_handshake_first": False}
