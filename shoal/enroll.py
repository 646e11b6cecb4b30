"""The client side of the CA: joining the cluster with a join token, and renewing certificates before they
expire (SwarmKit's node/node.go and ca/certificates.go, in shoal's shape). Agents join and renew with it, `shoal
swarm join` joins a machine's processes in one call, and every shoal server renews its own certificate
(shoal.runner.serve).

Join: fetch the roots from a CA (`GET /v1/ca/roots`, the one request made before anything is trusted), pin them
by the token's digest, then send the token and a CSR over TLS that trusts only the pinned roots and answer only
from a manager's `ca` component. A refused or tampered token is `JoinRefused` (fatal: the process exits with a
clear message, it does not retry for ever); an unreachable CA is `CAUnavailable` (retried).

Renewal: at a random 50-80 % of the certificate's lifetime, a new key and CSR go to `POST /v1/renew` with the
current certificate; the new identity is written (key first, 0600) and `Credentials.reload()` puts it into every
SSL context in place — the session and the tasks carry on."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shoal import certread, pki, transport
from shoal.clock import Clock, SystemClock
from shoal.transport import Credentials

log = logging.getLogger(__name__)

COMPONENT = "agent"
RENEW_RETRY_MAX = 30.0
DEFAULT_ROOT_POLL = 30.0
#: while a session hands out the cluster's roots digest (`Renewer.hint_roots`), the CA is polled this many times
#: less often: the hint says when to look, the poll is only the fallback for a dispatcher that stops saying
HINTED_POLL_FACTOR = 10
#: how long a hint counts as fresh (seconds; heartbeats come every 5 s by default)
HINT_FRESH = 60.0


class JoinRefused(Exception):
    """The join can never succeed as asked (bad or rotated token, another cluster's root, a refusal)."""


class CAUnavailable(Exception):
    """No CA of the list answered usefully; worth retrying."""


def has_identity(cert_dir: Path) -> bool:
    return all((cert_dir / f).is_file() for f in (pki.CERT_FILE, pki.KEY_FILE, pki.ROOT_FILE))


def pinned_context(roots_pem: bytes) -> ssl.SSLContext:
    """A client context trusting only `roots_pem` (already pinned by the token's digest). The server is known by
    its certificate's identity (a manager's ca component, checked per response), not by a host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=roots_pem.decode())
    return ctx


def pin_roots(roots_pem: bytes, token: str) -> None:
    """Refuse roots whose first (current) certificate is not the one the token's digest names."""
    try:
        certs = pki.load_certs(roots_pem)
        if not certs:
            raise pki.PKIError("pki: the CA sent no root certificate")
        pki.verify_pinned_root(certs[0], token)
    except pki.PKIError as e:
        raise JoinRefused(str(e)) from None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        return str(body.get("message", resp.text)) if isinstance(body, dict) else resp.text
    except ValueError:
        return resp.text or f"HTTP {resp.status_code}"


def _check_ca(resp: httpx.Response) -> None:
    transport.check_server_role(resp, pki.MANAGER)


async def fetch_roots(url: str, timeout: float) -> bytes:
    # Nothing is trusted yet: the answer is checked against the token's digest before it is used.
    async with httpx.AsyncClient(verify=False, timeout=timeout) as client:
        resp = await client.get(url.rstrip("/") + "/v1/ca/roots")
    if resp.status_code != 200:
        raise CAUnavailable(f"{url}: roots: {resp.status_code} {_message(resp)}")
    return resp.content


@dataclass(frozen=True)
class Joined:
    """What a join gave: the node's identity (of its first component), and the managers' addresses."""

    identity: pki.Identity
    managers: list[str]


async def join(ca_urls: Sequence[str], token: str, cert_dir: Path, *, hostname: str, hosts: Sequence[str] = (),
               timeout: float = 10.0) -> pki.Identity:
    """An agent joins through the first CA of `ca_urls` that answers; writes the identity into `cert_dir`."""
    joined = await join_components(ca_urls, token, {COMPONENT: cert_dir}, hostname=hostname, hosts=hosts,
                                   timeout=timeout)
    return joined.identity


async def join_components(ca_urls: Sequence[str], token: str, cert_dirs: Mapping[str, Path], *, hostname: str,
                          hosts: Sequence[str] = (), timeout: float = 10.0,
                          if_manager: Mapping[str, Path] | None = None) -> Joined:
    """Join a node's processes in one request (one CSR per component, each certificate written to its own
    directory) through the first CA of `ca_urls` that answers. `if_manager`: components certified only when
    the token is the manager token (the reply's role says which it was)."""
    extra = dict(if_manager or {})
    try:
        pki.parse_token(token)
    except pki.PKIError as e:
        raise JoinRefused(str(e)) from None
    if not ca_urls:
        raise JoinRefused("join: no CA address to join through (SHOAL_CA_URLS)")
    errors = []
    for url in ca_urls:
        try:
            roots = await fetch_roots(url, timeout)
            pin_roots(roots, token)
            keys = {c: pki.new_key() for c in [*cert_dirs, *extra]}
            body = {"token": token, "csrs": {c: pki.make_csr(keys[c]).decode() for c in cert_dirs},
                    "if_manager": {c: pki.make_csr(keys[c]).decode() for c in extra},
                    "hosts": list(hosts), "hostname": hostname}
            async with httpx.AsyncClient(verify=pinned_context(roots), timeout=timeout,
                                         event_hooks={"response": [_async(_check_ca)]}) as client:
                resp = await client.post(url.rstrip("/") + "/v1/join", json=body)
        except (httpx.HTTPError, OSError, CAUnavailable) as e:
            errors.append(f"{url}: {type(e).__name__}: {e}")
            continue
        if resp.status_code in (400, 401, 403):
            raise JoinRefused(f"join: the CA at {url} refused the join: {_message(resp)}")
        if resp.status_code != 200:
            errors.append(f"{url}: {resp.status_code} {_message(resp)}")
            continue
        reply: dict[str, Any] = resp.json()
        idents = []
        dirs = {**extra, **cert_dirs}
        for comp, key in keys.items():
            pem = (reply.get("certificates") or {}).get(comp)
            if pem is None:  # a manager component asked `if_manager` of a worker token
                continue
            cert = pem.encode()
            idents.append(pki.identity_of(pki.load_cert(cert)))
            pki.write_identity(dirs[comp], cert, pki.key_pem(key), reply["roots"].encode())
        ident = idents[0]
        log.info("join: joined cluster %s as node %s (%s)", ident.cluster_id, ident.node_id, ident.role)
        return Joined(ident, [str(m) for m in reply.get("managers") or []])
    raise CAUnavailable("join: no CA answered: " + "; ".join(errors))


def _async(hook: Any) -> Any:
    async def run(response: httpx.Response) -> None:
        hook(response)

    return run


async def renew(creds: Credentials, ca_urls: Sequence[str], *, hosts: Sequence[str] | None = None,
                timeout: float = 10.0, extra: Mapping[str, Path] | None = None) -> pki.Identity:
    """Renew `creds`' certificate through the first CA that answers; reloads `creds`. `hosts`: the names and
    addresses the new certificate carries (default: those of the current one). `extra`: components certified in
    the same renewal, each written to its directory — a promoted node's agent asks for its manager components
    (the CA signs them only then; docs/security.md, "Promotion and demotion")."""
    errors = []
    key = pki.new_key()
    if hosts is None:
        hosts = pki.hosts_of(pki.load_cert(creds.cert_file.read_bytes()))
    body: dict[str, Any] = {"csr": pki.make_csr(key).decode(), "hosts": list(hosts)}
    extra_keys = {c: pki.new_key() for c in extra or {}}
    if extra_keys:
        body["csrs"] = {creds.identity.component: body.pop("csr"),
                        **{c: pki.make_csr(k).decode() for c, k in extra_keys.items()}}
    async with transport.http_client(creds, timeout=timeout) as client:
        for url in ca_urls:
            try:
                resp = await client.post(url.rstrip("/") + "/v1/renew", json=body)
            except (httpx.HTTPError, OSError) as e:
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if resp.status_code != 200:
                errors.append(f"{url}: {resp.status_code} {_message(resp)}")
                continue
            reply = resp.json()
            cert = reply["certificate"].encode()
            ident = pki.identity_of(pki.load_cert(cert))
            # The role may change (the node was promoted or demoted: the CA decides from the store); the node
            # id and component may not.
            if (ident.node_id, ident.component) != (creds.identity.node_id, creds.identity.component):
                raise JoinRefused(f"renew: the CA renewed a different identity ({ident.describe()})")
            if ident.role != creds.identity.role:
                log.info("renew: node %s is now a %s (was %s)", ident.node_id, ident.role, creds.identity.role)
            for comp, comp_key in extra_keys.items():
                pem = (reply.get("certificates") or {}).get(comp)
                if pem is not None and extra is not None:
                    pki.write_identity(extra[comp], pem.encode(), pki.key_pem(comp_key), reply["roots"].encode())
            # a key under the autolock KEK stays under it (shoal.keyfile): renewal never writes it in the clear
            creds.write_identity(cert, pki.key_pem(key), reply["roots"].encode())
            creds.reload()
            return ident
    raise CAUnavailable("renew: renewal failed: " + "; ".join(errors))


def root_poll_interval() -> float:
    """Seconds between two looks at the CA's roots (`SHOAL_ROOT_POLL`, default 30): how soon a process notices
    a root rotation."""
    try:
        return max(0.1, float(os.environ.get("SHOAL_ROOT_POLL", DEFAULT_ROOT_POLL)))
    except ValueError:
        return DEFAULT_ROOT_POLL


def roots_decision(cert_pem: bytes, roots_on_disk: bytes, roots_now: bytes,
                   issued: Callable[[bytes], bool] | None = None) -> str:
    """What a process does with the CA's current roots: "renew" when its certificate was not issued by the
    current (first) root — a root rotation began; "roots" when only the trusted set changed (the old root was
    dropped): rewrite the root file; "" otherwise. `issued(root_pem)`: whether that root signed the
    certificate (default: `pki.issued_by` on `cert_pem`; a running process passes `transport.chains_to`, which
    needs no `cryptography`)."""
    if not roots_now.strip():
        return ""
    if issued is None:
        current = pki.load_certs(roots_now)
        if not current:
            return ""
        if not pki.issued_by(pki.load_cert(cert_pem), current[0]):
            return "renew"
    else:
        try:
            first = certread.pem_to_der(roots_now)[0]
        except certread.CertError as e:
            raise pki.PKIError(f"pki: not a PEM certificate bundle: {e}") from None
        if not issued(ssl.DER_cert_to_PEM_cert(first).encode()):
            return "renew"
    return "roots" if roots_now.strip() != roots_on_disk.strip() else ""


def roots_digest(pem: bytes) -> str:
    """The digest a dispatcher hands its agents with every heartbeat answer so that they look at the CA's roots
    only when they changed (sha256 of the PEM bundle, surrounding whitespace ignored as `roots_decision` does)."""
    return hashlib.sha256(pem.strip()).hexdigest()


class RootsDigest:
    """`roots_digest` of a process's own root file, re-read at most once per `ttl` seconds (a dispatcher asks
    on every heartbeat; its own Renewer rewrites the file when the cluster's roots change)."""

    def __init__(self, read: Callable[[], bytes], clock: Clock | None = None, ttl: float = 1.0) -> None:
        self.read = read
        self.clock = clock or SystemClock()
        self.ttl = ttl
        self._cached: tuple[float, str | None] | None = None

    def __call__(self) -> str | None:
        now = self.clock.monotonic()
        if self._cached is None or now - self._cached[0] >= self.ttl:
            try:
                digest: str | None = roots_digest(self.read())
            except OSError:
                digest = None
            self._cached = (now, digest)
        return self._cached[1]


async def fetch_current_roots(creds: Credentials, ca_urls: Sequence[str], timeout: float = 10.0) -> bytes | None:
    """The roots the first answering CA trusts now (over mutual TLS with `creds`), or None."""
    async with transport.http_client(creds, timeout=timeout) as client:
        for url in ca_urls:
            try:
                resp = await client.get(url.rstrip("/") + "/v1/ca/roots")
            except (httpx.HTTPError, OSError):
                continue
            if resp.status_code == 200 and resp.content:
                return resp.content
    return None


class Renewer:
    """Renews the certificate at a random 50-80 % of its lifetime (SwarmKit's spread), retrying failures, and
    at once when the CA's current root did not issue it (a root rotation); follows the CA's trusted roots."""

    def __init__(self, creds: Credentials, ca_urls: Sequence[str], *, hosts: Sequence[str] | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 root_poll: float | None = None) -> None:
        self.creds = creds
        self.ca_urls = list(ca_urls)
        self.hosts = None if hosts is None else list(hosts)
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.root_poll = root_poll if root_poll is not None else root_poll_interval()
        self.renewals = 0
        #: the node's desired role as its dispatcher last said (None: not told); a difference from the
        #: certificate's role renews at once (`desire`)
        self.desired: str | None = None
        #: components a promoted node asks for in its promoting renewal, each with its directory
        self.manager_components: dict[str, Path] = {}
        #: called with the new role after a renewal changed it (the agent registers again)
        self.on_role_change: Callable[[str], None] | None = None
        self._now = asyncio.Event()  # renew now (a role change)
        self._wake = asyncio.Event()  # stop sleeping: renew now, or look at the roots now
        #: when a session last handed out the cluster's roots digest, and the last digest acted on
        self.hinted_at: float | None = None
        self._hint_seen: str | None = None

    def desire(self, role: str) -> None:
        """The dispatcher says the node's desired role is `role` (pki.WORKER/MANAGER): renew at once when the
        certificate says otherwise (a `shoal node promote|demote`)."""
        self.desired = role
        if role != self.creds.identity.role:
            self._now.set()
            self._wake.set()

    def hint_roots(self, digest: str) -> None:
        """The dispatcher's digest of the cluster's roots (every heartbeat answer, SwarmKit's session carrying
        the root CA): look at the CA's roots now when it is not the digest of ours — once per distinct digest,
        so a dispatcher whose file differs in form only costs one look. Only a trigger: the roots themselves
        still come from the CA over mutual TLS and are checked as on every poll. While hints arrive the
        periodic poll runs HINTED_POLL_FACTOR times less often (`poll_interval`)."""
        self.hinted_at = self.clock.monotonic()
        if digest == self._hint_seen:
            return
        self._hint_seen = digest
        try:
            ours = roots_digest(self.creds.roots_pem)
        except OSError:
            ours = None
        if digest != ours:
            self._wake.set()

    def poll_interval(self) -> float:
        """Seconds until the next look at the CA's roots without a reason: `root_poll`, stretched while a
        session's hints are fresh."""
        fresh = self.hinted_at is not None and self.clock.monotonic() - self.hinted_at < HINT_FRESH
        return self.root_poll * (HINTED_POLL_FACTOR if fresh else 1)

    def extra_components(self) -> dict[str, Path]:
        """What the next renewal asks for besides the certificate itself: the manager components while a
        worker is being promoted, nothing otherwise (the CA refuses them then)."""
        promoting = self.desired == pki.MANAGER and self.creds.identity.role == pki.WORKER
        return dict(self.manager_components) if promoting else {}

    async def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` or until woken; True when a role change asked for a renewal now (False: time to
        look at the roots, after the sleep or because a hint said they changed)."""
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        self._wake.clear()
        return self._now.is_set()

    def next_renewal(self) -> float:
        ident = pki.identity_of_pem(self.creds.cert_file.read_bytes())  # without cryptography (shoal.certread)
        return pki.renew_at(ident, self.rng.uniform(0.5, 0.8))

    async def check_roots(self) -> bool:
        """True when the certificate must be renewed now for a new root; rewrites the root file when only the
        trusted set changed (SSL contexts can only add roots: a dropped root leaves a running process's trust
        at its next start)."""
        roots = await fetch_current_roots(self.creds, self.ca_urls)
        if roots is None:
            self._hint_seen = None  # no CA answered: the next hint looks again
            return False
        try:
            decision = roots_decision(self.creds.cert_file.read_bytes(), self.creds.roots_pem, roots,
                                      lambda root: transport.chains_to(self.creds, root))
        except (OSError, pki.PKIError) as e:
            log.info("renew: cannot compare the roots: %s", e)
            return False
        if decision == "roots":
            pki.write_private(self.creds.root_file, roots)
            log.info("renew: the cluster's trusted roots changed; %s updated", self.creds.root_file)
        elif decision == "renew":
            log.info("renew: the cluster's root was rotated; renewing %s onto the new root",
                     self.creds.identity.describe())
        return decision == "renew"

    async def run(self) -> None:
        while True:
            at = self.next_renewal()
            while self.clock.now() < at and not self._now.is_set():
                sleep = self.poll_interval() * self.rng.uniform(0.8, 1.2)
                if await self._wait(min(at - self.clock.now(), sleep)):
                    break
                if self.clock.now() < at and await self.check_roots():
                    break
            self._now.clear()
            self._wake.clear()
            backoff = 0.5
            before = self.creds.identity.role
            while True:
                try:
                    ident = await renew(self.creds, self.ca_urls, hosts=self.hosts, extra=self.extra_components())
                    break
                except (CAUnavailable, JoinRefused) as e:
                    left = self.creds.identity.not_after - self.clock.now()
                    log.warning("renew: certificate renewal of %s failed (%s); %.0fs of validity left",
                                self.creds.identity.describe(), e, left)
                    await asyncio.sleep(min(backoff, max(left / 10, 0.1)))
                    backoff = min(backoff * 2, RENEW_RETRY_MAX)
            self.renewals += 1
            log.info("renew: certificate of %s renewed; valid until %.0f", ident.describe(), ident.not_after)
            if ident.role != before and self.on_role_change is not None:
                self.on_role_change(ident.role)
