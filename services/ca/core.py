"""The CA's decisions as pure functions: which role a join token grants, which components a role may hold, how
long a certificate lives, who may call what, and the bounded per-address join attempt limiter.

The `ca` object (kind `ca`, id "root") holds the root certificate, its key and the join token secrets; only the
CA component reads it (docs/security.md: why the root key lives in as few processes as possible)."""

from __future__ import annotations

import datetime as dt
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from shoal import pki
from shoal.errors import Conflict, InvalidArgument, PermissionDenied, ShoalError, Unauthenticated
from shoal.pki import Identity

CA_OBJECT_ID = "root"
TOKEN_ROLES = {"worker": pki.WORKER, "manager": pki.MANAGER}
#: what a joiner may ask certificates for, by role (a manager node also runs an agent)
JOIN_COMPONENTS = {pki.WORKER: frozenset({"agent"}), pki.MANAGER: frozenset({*pki.MANAGER_COMPONENTS, "agent"})}
ANONYMOUS_PATHS = ("/v1/join", "/v1/ca/roots")
GATEWAY_PATHS = frozenset({"/v1/ca", "/v1/ca/rotate"})
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/status"})
MAX_HOSTS = 16




class TooManyRequests(ShoalError):
    status = 429
    code = "resource_exhausted"


@dataclass(frozen=True)
class CAState:
    """The `ca` object, parsed."""

    cluster_id: str
    root_pem: bytes
    key_pem: bytes
    tokens: dict[str, str]  # "worker" / "manager" -> secret
    version: int = 0
    #: during a root rotation: the previous root (still trusted) and the new root cross-signed by it
    old_root_pem: bytes = b""
    cross_signed_pem: bytes = b""
    rotation_started: float = 0.0

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> CAState:
        try:
            rot = obj.get("rotation") or {}
            return cls(cluster_id=str(obj["cluster_id"]), root_pem=str(obj["root_cert"]).encode(),
                       key_pem=str(obj["root_key"]).encode(),
                       tokens={r: str(obj["tokens"][r]) for r in TOKEN_ROLES},
                       version=int(obj.get("meta", {}).get("version", 0)),
                       old_root_pem=str(rot.get("old_root", "")).encode(),
                       cross_signed_pem=str(rot.get("cross_signed", "")).encode(),
                       rotation_started=float(rot.get("started", 0.0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ShoalError(f"ca: the stored ca object is damaged (missing {e})") from None

    @property
    def rotating(self) -> bool:
        return bool(self.old_root_pem)

    @property
    def roots_pem(self) -> bytes:
        """The trusted roots, the current (signing) root first: during a rotation the old root too."""
        return self.root_pem + (self.old_root_pem if self.rotating else b"")

    @property
    def chain_pem(self) -> bytes:
        """What follows a leaf in its certificate file: the cross-signed intermediate during a rotation, so a
        process that trusts only the old root still verifies a certificate of the new one."""
        return self.cross_signed_pem if self.rotating else b""

    @property
    def digest(self) -> str:
        return pki.root_digest(pki.load_cert(self.root_pem))

    def token(self, kind: str) -> str:
        return pki.make_token(pki.load_cert(self.root_pem), self.tokens[kind])


# ---- root rotation -----------------------------------------------------------------------------------------------
#: the `ca` objects that record, per node, which root issued each of its certificates: `holder-<node id>`
HOLDER_PREFIX = "holder-"


def holder_id(node_id: str) -> str:
    return HOLDER_PREFIX + node_id


def start_rotation(obj: dict[str, Any], now: float) -> dict[str, Any]:
    """The `ca` object with a new root (SwarmKit's root rotation): the new root signs from now on and its
    digest is in the join tokens; the old root stays trusted, and the new root cross-signed by the old key goes
    with every certificate issued until every holder has renewed (`rotation_pending`). A rotation already in
    progress is a 409: it must converge first (a node that will never come back is `shoal node rm`ed)."""
    state = CAState.from_obj(obj)
    if state.rotating:
        raise Conflict("ca: a root rotation is already in progress; wait until every node has renewed its "
                       "certificates (`shoal swarm ca` shows who is left; remove dead nodes with `shoal node rm`)")
    old_root, old_key = pki.load_cert(state.root_pem), pki.load_key(state.key_pem)
    new_root, new_key = pki.create_root(state.cluster_id, now, common_name=pki.rotated_root_name())
    cross = pki.cross_sign(new_root, old_root, old_key)
    return {**obj, "root_cert": pki.cert_pem(new_root).decode(), "root_key": pki.key_pem(new_key).decode(),
            "rotation": {"old_root": state.root_pem.decode(), "cross_signed": pki.cert_pem(cross).decode(),
                         "started": now}}


def finish_rotation(obj: dict[str, Any]) -> dict[str, Any]:
    """The `ca` object once every holder is on the new root: the old root is no longer trusted."""
    return {k: v for k, v in obj.items() if k != "rotation"}


def holder_record(existing: dict[str, Any] | None, node_id: str, issued: dict[str, str]) -> dict[str, Any]:
    """The holder object of `node_id` after certificates for `issued` ({component: root digest}) were signed."""
    issuers = dict((existing or {}).get("issuers") or {})
    issuers.update(issued)
    base = dict(existing or {"id": holder_id(node_id), "node_id": node_id})
    return {**base, "issuers": issuers}


def rotation_pending(holders: list[dict[str, Any]], removed: set[str], digest: str) -> list[tuple[str, str]]:
    """(node id, component) of every certificate not yet issued by the root with `digest`, removed nodes
    left out: a rotation is complete when this is empty. A node that is down keeps it from completing until
    it comes back and renews (SwarmKit's TestSuccessfulRootRotation)."""
    out = []
    for h in holders:
        node = str(h.get("node_id", ""))
        if not node or node in removed:
            continue
        for component, issuer in sorted((h.get("issuers") or {}).items()):
            if issuer != digest:
                out.append((node, component))
    return sorted(out)


def ca_object(bootstrap: dict[str, Any]) -> dict[str, Any]:
    """The `ca` object from `SHOAL_CA_BOOTSTRAP`'s JSON (written by init); validates what it will need."""
    try:
        tokens = {r: str(bootstrap["tokens"][r]) for r in TOKEN_ROLES}
        cluster_id, root_cert = str(bootstrap["cluster_id"]), str(bootstrap["root_cert"])
        root_key = str(bootstrap["root_key"])
    except (KeyError, TypeError) as e:
        raise InvalidArgument(f"ca: the bootstrap file lacks {e}: it needs cluster_id, root_cert, root_key and "
                              "tokens.worker/tokens.manager") from None
    try:
        root = pki.load_cert(root_cert.encode())
        pki.load_key(root_key.encode())
        for secret in tokens.values():  # a well-formed token with this root's digest
            pki.parse_token(pki.make_token(root, secret))
    except (pki.PKIError, ValueError) as e:
        raise InvalidArgument(f"ca: the bootstrap file is unusable: {e}") from None
    return {"id": CA_OBJECT_ID, "cluster_id": cluster_id, "root_cert": root_cert, "root_key": root_key,
            "tokens": tokens}


def bootstrap_holders(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    """Holder objects for the certificates init issued itself (`holders`: {node id: [components]}), so a root
    rotation waits for them too."""
    raw = bootstrap.get("holders") or {}
    if not isinstance(raw, dict):
        raise InvalidArgument("ca: the bootstrap file's holders must map node ids to component lists")
    digest = pki.root_digest(pki.load_cert(str(bootstrap["root_cert"]).encode()))
    return [holder_record(None, str(node), {str(c): digest for c in comps}) for node, comps in raw.items()]


def role_of_token(state: CAState, token: str) -> str:
    """The role `token` grants. Malformed → 400; another cluster's digest or an unknown secret → 401. Both
    secrets are compared, in constant time, whatever matches first."""
    try:
        parsed = pki.parse_token(token)
    except pki.PKIError as e:
        raise InvalidArgument(f"ca: {e}") from None
    root = pki.load_cert(state.root_pem)
    if not hmac.compare_digest(parsed.digest, pki.root_digest(root)):
        raise Unauthenticated("ca: the join token names another root CA (a token of another cluster, or of a "
                              "root that was rotated); ask a manager for a current one")
    matches = {kind: pki.token_matches(parsed.secret, secret) for kind, secret in state.tokens.items()}
    for kind, hit in matches.items():
        if hit:
            return TOKEN_ROLES[kind]
    raise Unauthenticated("ca: the join token is not valid (rotated or mistyped); ask a manager for a current "
                          "one with `shoal swarm join-token worker` (or manager)")


def check_join_components(role: str, components: list[str]) -> None:
    if not components:
        raise InvalidArgument("ca: a join asks for at least one certificate (csrs: {component: csr})")
    allowed = JOIN_COMPONENTS[role]
    unknown = sorted(c for c in components if c not in pki.COMPONENTS)
    if unknown:
        raise InvalidArgument(f"ca: unknown components {unknown}; components are {sorted(pki.COMPONENTS)}")
    refused = sorted(c for c in components if c not in allowed)
    if refused:
        raise PermissionDenied(f"ca: a {role} join token cannot obtain certificates for {refused}; it may "
                               f"ask for {sorted(allowed)}")


def check_renewal(ident: Identity, components: list[str]) -> None:
    """A renewal re-issues the caller's own certificate: the same component, nothing else (a worker cannot
    become a manager, an agent cannot become a dispatcher, by renewing)."""
    others = sorted(c for c in components if c != ident.component)
    if others or not components:
        raise PermissionDenied(f"ca: {ident.describe()} may renew only its own {ident.component!r} certificate, "
                               f"not {others or 'nothing'}")


ROLE_OF_NAME = {"worker": pki.WORKER, "manager": pki.MANAGER}


def desired_role(node: dict[str, Any] | None) -> str | None:
    """The role a node is being moved to (`shoal node promote|demote` set `spec.role`), or None when there is
    no pending change: no node object (a raftstore-only machine, init's manager processes), or the desired
    role is the one the node was last seen with (`role`, recorded by the dispatcher from its certificate)."""
    if not node:
        return None
    desired = ((node.get("spec") or {}).get("role")) or "worker"
    observed = node.get("role") or "worker"
    return ROLE_OF_NAME.get(str(desired)) if desired != observed else None


def renewal_role(ident: Identity, components: list[str], desired: str | None) -> str:
    """The role a renewal is issued with. Without a pending role change: the caller's own, for its own
    component only (check_renewal). Promotion (a worker node whose desired role is manager): its agent renews
    as a manager and may ask for the manager components the node will run. Demotion (a manager node whose
    desired role is worker): only its agent renews, as a worker; its manager processes get no new certificate."""
    if desired is None or desired == ident.role or ident.role == pki.ADMIN:
        check_renewal(ident, components)
        return ident.role
    if ident.component != "agent":
        change = "promoted" if desired == pki.MANAGER else "demoted"
        raise PermissionDenied(f"ca: node {ident.node_id} is being {change}; only its agent renews (as "
                               f"{desired}), not its {ident.component!r}")
    allowed = JOIN_COMPONENTS[desired]
    refused = sorted(c for c in components if c not in allowed)
    if refused or "agent" not in components:
        raise PermissionDenied(f"ca: node {ident.node_id} becomes a {desired}: its agent renews and may ask for "
                               f"{sorted(allowed)}, not {refused or 'nothing for the agent'}")
    return desired


def check_hosts(hosts: list[str]) -> tuple[str, ...]:
    if len(hosts) > MAX_HOSTS:
        raise InvalidArgument(f"ca: at most {MAX_HOSTS} hosts per certificate")
    for h in hosts:
        if not h or len(h) > 253 or any(c.isspace() or c in "/\\@" for c in h):
            raise InvalidArgument(f"ca: {h!r} is not a host name or address")
    return tuple(hosts)


def cert_lifetime(cluster: dict[str, Any] | None, override: float | None = None) -> dt.timedelta:
    """`spec.ca_config.node_cert_expiry` (seconds) of the cluster object, at least an hour (SwarmKit's
    minimum), 90 days when unset. `override` (SHOAL_TEST_CERT_EXPIRY) bypasses the minimum: tests only."""
    if override is not None and override > 0:
        return dt.timedelta(seconds=override)
    raw = ((cluster or {}).get("spec") or {}).get("ca_config", {}).get("node_cert_expiry")
    try:
        seconds = float(raw) if raw is not None else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is None:
        return pki.DEFAULT_CERT_LIFETIME
    return max(dt.timedelta(seconds=seconds), pki.MIN_CERT_LIFETIME)


def autolock_wanted(cluster: dict[str, Any] | None) -> bool:
    """`spec.encryption_config.auto_lock_managers` of the cluster object (off when absent)."""
    enc = ((cluster or {}).get("spec") or {}).get("encryption_config") or {}
    return bool(enc.get("auto_lock_managers", False))


def policy(ident: Identity, method: str, path: str) -> str | None:
    """Who may call what on the CA's port (anonymous joiners are let through by Guard for ANONYMOUS_PATHS)."""
    if path in ANONYMOUS_PATHS:
        return None
    if path == "/v1/renew":
        return None  # every certificate holder renews its own (the route keeps the identity)
    if path.startswith(("/v1/tokens", "/v1/unlock-key")) or path in GATEWAY_PATHS:
        if ident.role == pki.MANAGER and ident.component == "gateway":
            return None
        return (f"ca: only the gateway reads or rotates join tokens, the unlock key and the root, not "
                f"{ident.describe()}")
    if path in OPS_PATHS and ident.role in (pki.MANAGER, pki.ADMIN):
        return None
    return f"ca: {ident.describe()} may not call {method} {path}"


@dataclass
class AttemptLimiter:
    """At most `limit` failed joins per client address per `window` seconds; remembers at most `max_keys`
    addresses (the oldest are forgotten), so an attacker cannot grow it without bound."""

    limit: int = 10
    window: float = 60.0
    max_keys: int = 4096
    _seen: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def blocked(self, key: str, now: float) -> bool:
        times = [t for t in self._seen.get(key, []) if now - t < self.window]
        if times:
            self._seen[key] = times
        else:
            self._seen.pop(key, None)
        return len(times) >= self.limit

    def failed(self, key: str, now: float) -> None:
        self._seen.setdefault(key, []).append(now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
