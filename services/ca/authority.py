"""The CertificateAuthority: the I/O shell around `core` — reads the `ca` object from the store, signs joins and
renewals, rotates tokens, loads the bootstrap file, and keeps the revocation list current."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.ca import core
from services.ca.core import CAState, TooManyRequests
from services.ca.settings import CASettings
from shoal import pki, unlockkey
from shoal.certs import Signer
from shoal.clock import Clock, SystemClock
from shoal.cluster import removed_node_ids
from shoal.errors import (
    AlreadyExists,
    Conflict,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ShoalError,
    Unauthenticated,
    Unavailable,
)
from shoal.ids import new_id
from shoal.metrics import Registry
from shoal.models.kinds import DEFAULT_CLUSTER_ID, Kind
from shoal.pki import Identity
from shoal.store import txn as t
from shoal.store.client import STORE_FAILURES
from shoal.store.protocol import Store
from shoal.store.rmw import read_modify_write
from shoal.store.txn import Op
from shoal.transport import Revocations

log = logging.getLogger(__name__)

ROOTS_CACHE = 1.0  # seconds the roots answered to GET /v1/ca/roots are reused
MANAGERS_CACHE = 5.0  # seconds the managers' addresses a join answers are reused
SIGNING_CONCURRENCY = 4  # signing is CPU work: a burst of joins queues instead of starving the loop


class CertificateAuthority:
    def __init__(self, settings: CASettings, *, store: Store, revocations: Revocations | None = None,
                 clock: Clock | None = None, on_unlock_key: Callable[[bytes | None], None] | None = None) -> None:
        """`on_unlock_key` is told the cluster's unlock key (its bytes; None while autolock is off) at every
        poll: the process keeps its own TLS key under it (shoal.keyfile)."""
        self.settings = settings
        self.on_unlock_key = on_unlock_key
        self.store = store
        self.revocations = revocations or Revocations()
        self.clock = clock or SystemClock()
        self.metrics = Registry()
        self.limiter = core.AttemptLimiter()
        self._signing = asyncio.Semaphore(SIGNING_CONCURRENCY)
        self._signer: tuple[bytes, Signer] | None = None
        self._roots: tuple[float, bytes] | None = None  # (when read, roots PEM): `roots`
        self._managers: tuple[float, list[str]] | None = None  # (when read, addresses): `managers`
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()

    # ---- Subsystem ---------------------------------------------------------------------------------------
    def ready(self) -> bool:
        return self._ready.is_set()

    def status(self) -> dict[str, Any]:
        return {"ready": self.ready(), "revoked": len(self.revocations.ids)}

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Bootstrap (retrying while the store is unavailable), then refresh the revocation list."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                await self.bootstrap()
                await self.refresh_revocations()
                await self.follow_autolock()
                await self.reconcile_rotation()
                self._ready.set()
                backoff = self.settings.revocation_poll
            except STORE_FAILURES as e:
                log.warning("ca: store unavailable (%s); retrying in %.1fs", e, backoff)
                backoff = min(backoff * 2, self.settings.revocation_poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)

    async def bootstrap(self) -> None:
        """Load SHOAL_CA_BOOTSTRAP into the store if there is no `ca` object yet, then delete the file."""
        path = Path(self.settings.ca_bootstrap) if self.settings.ca_bootstrap else None
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InvalidArgument(f"ca: cannot read the bootstrap file {path}: {e}") from None
        obj = core.ca_object(data)
        try:
            holders = [t.create(Kind.CA, h) for h in core.bootstrap_holders(data)]
            await self.store.txn([t.create(Kind.CA, obj), *holders])
            log.info("ca: root CA of cluster %s loaded into the store", obj["cluster_id"])
        except AlreadyExists:
            pass
        path.unlink(missing_ok=True)

    async def refresh_revocations(self) -> None:
        try:
            cluster: dict[str, Any] | None = await self.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
        except NotFound:
            cluster = None
        self.revocations.update(removed_node_ids(cluster))

    # ---- autolock: the unlock key ---------------------------------------------------------------------------
    async def follow_autolock(self) -> None:
        """Make `ca/unlock-key` follow the cluster's `spec.encryption_config.auto_lock_managers`: a new key when
        it is turned on, none when off. Every raftstore member re-wraps its data keys as the object changes."""
        want = core.autolock_wanted(await self._cluster())
        have = await self._unlock_object()
        if want and have is None:
            with contextlib.suppress(AlreadyExists):  # another manager's CA was first: same outcome
                await self.store.txn([t.create(Kind.CA, {"id": unlockkey.OBJECT_ID, "key": unlockkey.new()})])
                log.warning("ca: autolock turned on: a new unlock key is in the store (`shoal swarm unlock-key`)")
        elif not want and have is not None:
            with contextlib.suppress(NotFound):
                await self.store.txn([t.delete(Kind.CA, unlockkey.OBJECT_ID)])
                log.warning("ca: autolock turned off: the unlock key is removed")
        if self.on_unlock_key is not None:
            obj = await self._unlock_object()
            text = obj.get("key") if obj else None
            try:
                key = unlockkey.parse(text) if isinstance(text, str) else None
            except ValueError:
                log.error("ca: the cluster's unlock key is malformed; keeping this process's TLS key as it is")
                return
            self.on_unlock_key(key)

    async def _unlock_object(self) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.store.get(Kind.CA, unlockkey.OBJECT_ID)
            return obj
        except NotFound:
            return None

    async def unlock_key(self) -> str:
        await self.follow_autolock()  # answer for the spec as it is now, not as of the last poll
        obj = await self._unlock_object()
        return str(obj["key"]) if obj else ""

    async def rotate_unlock_key(self) -> str:
        if not core.autolock_wanted(await self._cluster()):
            raise Conflict("ca: autolock is off: there is no unlock key to rotate "
                           "(`shoal swarm update --autolock=true`)")
        await self.follow_autolock()
        key = ""

        async def plan() -> list[Op]:
            nonlocal key
            obj = await self._unlock_object()
            if obj is None:
                raise Conflict("ca: autolock was turned off meanwhile")
            key = unlockkey.new()
            return [t.update(Kind.CA, {**obj, "key": key}, expect_version=obj["meta"]["version"])]

        await read_modify_write(self.store, plan, attempts=5, retry_on=(Conflict,), exhausted=Unavailable,
                                conflict="ca: the unlock key kept changing; retry the rotation")
        log.warning("ca: the unlock key was rotated (managers down now need the previous key to unlock)")
        return key

    # ---- reading the ca object ---------------------------------------------------------------------------
    async def state(self) -> CAState:
        try:
            obj = await self.store.get(Kind.CA, core.CA_OBJECT_ID)
        except NotFound:
            raise Unavailable("ca: the cluster's root CA is not in the store yet (was the cluster "
                              "initialised? SHOAL_CA_BOOTSTRAP loads it)") from None
        return CAState.from_obj(obj)

    # ---- root rotation -----------------------------------------------------------------------------------
    async def _holders(self) -> list[dict[str, Any]]:
        _, objs = await self.store.list(Kind.CA)
        return [o for o in objs if str(o.get("id", "")).startswith(core.HOLDER_PREFIX)]

    async def rotation_status(self) -> dict[str, Any]:
        """The current root's digest and, during a rotation, the certificates still on the old root."""
        state = await self.state()
        pending = core.rotation_pending(await self._holders(), removed_node_ids(await self._cluster()),
                                        state.digest) if state.rotating else []
        return {"root_digest": state.digest, "rotating": state.rotating,
                "started": state.rotation_started or None,
                "pending": [{"node_id": n, "component": c} for n, c in pending],
                "root_cert": state.root_pem.decode()}

    async def rotate_root(self) -> dict[str, Any]:
        """Start a root rotation (core.start_rotation); every node renews onto the new root when it next polls
        the roots (enroll.Renewer), and `reconcile_rotation` drops the old root once all have."""
        obj = await self.store.get(Kind.CA, core.CA_OBJECT_ID)
        new = core.start_rotation(obj, self.clock.now())
        try:
            await self.store.txn([t.update(Kind.CA, new, expect_version=obj["meta"]["version"])])
        except Conflict:
            raise Conflict("ca: the ca object changed during the rotation; retry") from None
        self._roots = None  # this CA answers the new roots at once
        self.metrics.inc("ca_root_rotations_total", help="root rotations started")
        log.info("ca: root rotation started; the new root is %s", core.CAState.from_obj(new).digest[:12])
        return await self.rotation_status()

    async def reconcile_rotation(self) -> bool:
        """Finish a rotation whose every holder (removed nodes aside) has a certificate of the new root; True
        when it finished now. Any CA may do it: the update is conditional on the version it read."""
        obj = await self.store.get(Kind.CA, core.CA_OBJECT_ID)
        state = CAState.from_obj(obj)
        if not state.rotating:
            return False
        pending = core.rotation_pending(await self._holders(), removed_node_ids(await self._cluster()),
                                        state.digest)
        if pending:
            return False
        try:
            await self.store.txn([t.update(Kind.CA, core.finish_rotation(obj), expect_version=obj["meta"]["version"])])
        except Conflict:
            return False
        self._roots = None
        log.info("ca: root rotation finished: every node renewed; the old root is no longer trusted")
        return True

    async def _record(self, node_id: str, issued: dict[str, str], *, only: bool = False, new: bool = False) -> None:
        """Remember which root issued the node's certificates (the holder object), before answering. `only`:
        these are all the node holds now (a worker: a demoted node's manager certificates are not waited for).
        `new`: a node id this CA just made (a join): the object cannot exist, so it is created without a read
        first (an AlreadyExists would be a fresh id's collision: refused, nothing is answered)."""
        if new:
            await self.store.txn([t.create(Kind.CA, core.holder_record(None, node_id, issued))])
            return

        async def plan() -> list[Op] | None:
            try:
                existing: dict[str, Any] | None = await self.store.get(Kind.CA, core.holder_id(node_id))
            except NotFound:
                existing = None
            new = core.holder_record(existing, node_id, issued)
            if only:
                new["issuers"] = dict(issued)
            if existing is not None and new == existing:
                return None
            return [t.create(Kind.CA, new) if existing is None
                    else t.update(Kind.CA, new, expect_version=existing["meta"]["version"])]

        await read_modify_write(self.store, plan, attempts=10, retry_on=(Conflict,), exhausted=Unavailable,
                                conflict=f"ca: could not record the certificates of node {node_id}; retry")

    def signer(self, state: CAState) -> Signer:
        if self._signer is None or self._signer[0] != state.root_pem + state.key_pem:
            self._signer = (state.root_pem + state.key_pem, Signer.load(state.root_pem, state.key_pem))
        return self._signer[1]

    async def _cluster(self) -> dict[str, Any] | None:
        try:
            cluster: dict[str, Any] = await self.store.get(Kind.CLUSTER, DEFAULT_CLUSTER_ID)
            return cluster
        except NotFound:
            return None

    async def roots(self) -> bytes:
        """The trusted roots, read from the store at most once per ROOTS_CACHE seconds: every node polls them
        (enroll.Renewer, every 30 s: 33 requests/s at 1,000 nodes), and an anonymous route must not turn each
        request into a store read. A rotation shows here within that second."""
        now = self.clock.monotonic()
        if self._roots is None or now - self._roots[0] >= ROOTS_CACHE:
            self._roots = (now, (await self.state()).roots_pem)
        return self._roots[1]

    async def _sign_all(self, state: CAState, csrs: dict[str, str], *, node_id: str, role: str,
                        hosts: tuple[str, ...], cluster: dict[str, Any] | None,
                        new_node: bool = False) -> dict[str, str]:
        """Sign every CSR (a certificate file: the leaf, then the cross-signed root during a rotation) and
        record the issuing root in the node's holder object."""
        signer = self.signer(state)
        lifetime = core.cert_lifetime(cluster, self.settings.test_cert_expiry)
        parsed = {}
        for component, csr in csrs.items():
            try:
                parsed[component] = pki.parse_csr(csr)
            except pki.PKIError as e:
                raise InvalidArgument(f"ca: the CSR for {component!r}: {e}") from None
        now = self.clock.now()
        async with self._signing:
            certs = {c: (pki.cert_pem(pki.issue(p, ca_cert=signer.root, ca_key=signer.key, node_id=node_id,
                                                role=role, cluster_id=signer.cluster_id, component=c, now=now,
                                                lifetime=lifetime, hosts=hosts)) + state.chain_pem).decode()
                     for c, p in parsed.items()}
        if role != pki.ADMIN:  # admin bundles are not nodes: a rotation does not wait for them
            await self._record(node_id, dict.fromkeys(certs, state.digest), only=role == pki.WORKER, new=new_node)
        return certs

    # ---- the API -----------------------------------------------------------------------------------------
    async def join(self, token: str, csrs: dict[str, str], hosts: list[str], hostname: str,
                   client: str, *, if_manager: dict[str, str] | None = None) -> dict[str, Any]:
        now = self.clock.monotonic()
        if self.limiter.blocked(client, now):
            raise TooManyRequests(f"ca: too many failed joins from {client}; wait a minute")
        state = await self.state()
        try:
            role = core.role_of_token(state, token)
        except (Unauthenticated, InvalidArgument):
            self.limiter.failed(client, now)
            self.metrics.inc("ca_joins_refused_total", help="joins refused for their token")
            raise
        if role == pki.MANAGER and if_manager:
            csrs = {**if_manager, **csrs}
        core.check_join_components(role, list(csrs))
        signer = self.signer(state)
        node_id = new_id()
        certs = await self._sign_all(state, csrs, node_id=node_id, role=role, hosts=core.check_hosts(hosts),
                                     cluster=await self._cluster(), new_node=True)
        self.metrics.inc("ca_joins_total", help="nodes joined")
        log.info("ca: %s (%s) joined as %s with %s", hostname or "a node", client, node_id, role)
        return {"node_id": node_id, "cluster_id": signer.cluster_id, "role": role, "certificates": certs,
                "roots": state.roots_pem.decode(), "managers": await self.managers()}

    async def managers(self) -> list[str]:
        """The addresses of the machines holding raft members: a joining node reaches every manager endpoint
        there (the swarm's machines share one port layout, shoal.node.Ports). Asked of the store at most once
        per MANAGERS_CACHE seconds (a burst of joins asked it once per join)."""
        now = self.clock.monotonic()
        if self._managers is not None and now - self._managers[0] < MANAGERS_CACHE:
            return list(self._managers[1])
        status = getattr(self.store, "status", None)
        if status is None:
            return []
        try:
            members = (await status()).get("members") or []
        except (ShoalError, httpx.HTTPError) as e:
            log.info("ca: cannot list the managers for a joining node: %s", e)
            return []
        out = sorted({str(httpx.URL(m["api_url"]).host) for m in members if m.get("api_url")})
        self._managers = (now, out)
        return list(out)

    async def _node(self, node_id: str) -> dict[str, Any] | None:
        try:
            node: dict[str, Any] = await self.store.get(Kind.NODE, node_id)
            return node
        except NotFound:
            return None

    async def renew(self, ident: Identity, csrs: dict[str, str], hosts: list[str]) -> dict[str, Any]:
        # The node's desired role in the store decides a promotion or demotion (core.renewal_role).
        role = core.renewal_role(ident, list(csrs), core.desired_role(await self._node(ident.node_id)))
        cluster = await self._cluster()
        if ident.node_id in removed_node_ids(cluster):  # the store is the truth, not our last poll
            raise PermissionDenied(f"ca: node {ident.node_id} was removed from the cluster; it cannot renew")
        state = await self.state()
        signer = self.signer(state)
        if ident.cluster_id != signer.cluster_id:
            raise PermissionDenied(f"ca: {ident.describe()} belongs to another cluster")
        certs = await self._sign_all(state, csrs, node_id=ident.node_id, role=role,
                                     hosts=core.check_hosts(hosts), cluster=cluster)
        self.metrics.inc("ca_renewals_total", help="certificates renewed")
        if role != ident.role:
            log.info("ca: node %s renewed as %s (was %s)", ident.node_id, role, ident.role)
        log.info("ca: renewed the certificate of %s", ident.describe())
        return {"node_id": ident.node_id, "cluster_id": signer.cluster_id, "role": role,
                "certificates": certs, "certificate": certs[ident.component], "roots": state.roots_pem.decode()}

    async def tokens(self) -> dict[str, str]:
        state = await self.state()
        return {kind: state.token(kind) for kind in core.TOKEN_ROLES}

    async def rotate(self, kind: str) -> dict[str, str]:
        if kind not in core.TOKEN_ROLES:
            raise InvalidArgument(f"ca: role must be one of {sorted(core.TOKEN_ROLES)}, not {kind!r}")

        async def plan() -> list[Op]:
            obj = await self.store.get(Kind.CA, core.CA_OBJECT_ID)
            new = {**obj, "tokens": {**obj["tokens"], kind: pki.new_token_secret()}}
            return [t.update(Kind.CA, new, expect_version=obj["meta"]["version"])]

        await read_modify_write(self.store, plan, attempts=5, retry_on=(Conflict,), exhausted=Unavailable,
                                conflict="ca: the ca object kept changing; retry the rotation")
        log.info("ca: the %s join token was rotated", kind)
        return await self.tokens()
