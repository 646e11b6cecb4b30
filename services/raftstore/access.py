"""Who may do what on a raftstore member (docs/security.md, "The raftstore"): pure functions of the caller's
verified identity, the request and, for writes and watches, its content.

- Only `swarm-manager` identities reach the store at all (admins: the ops routes only).
- Kind `ca` (the root key and join tokens) is the `ca` component's alone: every other caller gets 403 on a list,
  get or transaction that touches it, and sees its watch events redacted to the object's id.
- Kind `netkeys` (the network encryption keys, docs/networking.md "Encrypted networks") is the allocator's (who
  writes it) and the dispatcher's (who sends the keys to the nodes that need them): everyone else is refused and
  redacted exactly as for kind `ca`.
- Membership changes (POST/DELETE /v1/members, POST /v1/leader/transfer) only for `gateway` and `raftstore`.
- Kinds `secret` and `config` (issue 10): only the gateway writes them; their payload (`spec.data`) is read by the
  gateway (which keeps it on label updates and never answers a secret's) and the dispatcher (which delivers it
  to the nodes that need it). Everyone else — orchestrator, allocator, scheduler, CA — gets them without
  `spec.data` in lists, gets, watch events and transaction answers.

A follower forwards writes and membership changes to the leader over its own (raftstore) certificate; the
leader authorizes the ORIGINAL caller, whose component the follower names in `ON_BEHALF_HEADER`. The leader
believes that header only from a raftstore identity (which could read the whole store from its own WAL
anyway); from anyone else it is ignored."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shoal import pki
from shoal.errors import PermissionDenied
from shoal.models.kinds import Kind
from shoal.pki import Identity
from shoal.transport import OPS_PATHS, scope_identity

CA_KIND = Kind.CA.value
CA_COMPONENT = "ca"
#: kinds only some components may read or write at all (their objects reduced to the id for everyone else)
PRIVATE_KINDS: dict[str, frozenset[str]] = {CA_KIND: frozenset({CA_COMPONENT}),
                                            Kind.NETKEYS.value: frozenset({"allocator", "dispatcher"})}


def _private_to_other(kind: str, component: str) -> bool:
    owners = PRIVATE_KINDS.get(kind)
    return owners is not None and component not in owners
MEMBERSHIP_COMPONENTS = frozenset({"gateway", "raftstore"})
PAYLOAD_KINDS = frozenset({Kind.SECRET.value, Kind.CONFIG.value})
PAYLOAD_READERS = frozenset({"gateway", "dispatcher"})
PAYLOAD_WRITERS = frozenset({"gateway"})
ON_BEHALF_HEADER = "x-shoal-on-behalf-of"
ON_BEHALF_HEADER_RAW = ON_BEHALF_HEADER.encode()
#: the node id of the original caller of a forwarded write (its actor, recorded with the transaction)
ON_BEHALF_NODE_HEADER = "x-shoal-on-behalf-of-node"
ON_BEHALF_NODE_HEADER_RAW = ON_BEHALF_NODE_HEADER.encode()


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def is_membership_change(method: str, path: str) -> bool:
    """Exactly the routes that change the membership (a method no route serves on these paths is routed to its
    405, not refused as a membership change)."""
    parts = _parts(path)
    return ((method == "POST" and parts in (["v1", "members"], ["v1", "leader", "transfer"]))
            or (method == "DELETE" and parts[:2] == ["v1", "members"] and len(parts) == 3))


def reads_ca(path: str, method: str = "GET") -> bool:
    """A read of kind `ca` (only GET reads; another method on these paths is routed to its 405)."""
    return read_kind(path, method) == CA_KIND


def read_kind(path: str, method: str = "GET") -> str | None:
    """The kind a GET of objects or counts reads (None: not such a read)."""
    parts = _parts(path)
    if (method in ("GET", "HEAD") and parts[:1] == ["v1"] and parts[1:2] in (["objects"], ["counts"])
            and len(parts) > 2):
        return parts[2]
    return None


def policy(ident: Identity, method: str, path: str) -> str | None:
    """The raftstore's `shoal.transport.Policy` (what the Guard can decide from method and path alone)."""
    if ident.role == pki.ADMIN and path in OPS_PATHS:
        return None
    if ident.role != pki.MANAGER:
        return f"raftstore: only manager processes may use the store; {ident.describe()} may not call {method} {path}"
    kind = read_kind(path, method)
    if kind is not None and _private_to_other(kind, ident.component):
        readers = " and ".join("the CA" if c == "ca" else f"the {c}" for c in sorted(PRIVATE_KINDS[kind]))
        return (f"raftstore: kind {kind!r} is readable only by {readers}; "
                f"{ident.describe()} may not call {method} {path}")
    if is_membership_change(method, path) and ident.component not in MEMBERSHIP_COMPONENTS:
        return (f"raftstore: only the gateway and raftstore members change the membership; {ident.describe()} "
                f"may not call {method} {path}")
    return None


def caller_component(ident: Identity | None, on_behalf_of: str | None) -> str:
    """The component to authorize: the certificate's, or — from a raftstore member forwarding a request — the
    original caller's as that member names it. No identity (an in-process test transport, never a served
    port: the Guard refuses those) is nobody in particular and gets the least."""
    if ident is None:
        return ""
    if on_behalf_of is not None and ident.role == pki.MANAGER and ident.component == "raftstore":
        return on_behalf_of
    return ident.component


def caller_actor(ident: Identity | None, on_behalf_of: str | None, on_behalf_node: str | None) -> str | None:
    """Who wrote a transaction, recorded with it (`"<component>@<node id>"`, the store's events): the caller's
    certificate, or — from a raftstore member forwarding a write — the original caller as that member names it
    (believed from raftstore members only, like `caller_component`). None without an identity (in-process)."""
    if ident is None:
        return None
    if on_behalf_of is not None and ident.role == pki.MANAGER and ident.component == "raftstore":
        return f"{on_behalf_of}@{on_behalf_node or 'unknown'}"
    return f"{ident.component}@{ident.node_id}"


def scope_component(scope: Any) -> str:
    """`caller_component` of an ASGI request."""
    header = next((v.decode() for k, v in scope["headers"] if k == ON_BEHALF_HEADER_RAW), None)
    return caller_component(scope_identity(scope), header)


def txn_kinds(body: dict[str, Any]) -> set[str]:
    ops = body.get("ops")
    if not isinstance(ops, list):
        return set()
    return {str(op["kind"]) for op in ops if isinstance(op, dict) and "kind" in op}


def check_txn(component: str, body: dict[str, Any]) -> None:
    kinds = txn_kinds(body)
    if component != CA_COMPONENT and CA_KIND in kinds:
        raise PermissionDenied(f"raftstore: only the CA may read or write kind 'ca' (caller: "
                               f"{component or 'unknown'})")
    for kind in sorted(kinds):
        if kind != CA_KIND and _private_to_other(kind, component):
            raise PermissionDenied(f"raftstore: only {', '.join(sorted(PRIVATE_KINDS[kind]))} may read or write "
                                   f"kind {kind!r} (caller: {component or 'unknown'})")
    if component not in PAYLOAD_WRITERS and kinds & PAYLOAD_KINDS:
        raise PermissionDenied(f"raftstore: only the gateway writes secrets and configs (caller: "
                               f"{component or 'unknown'})")


def check_kind(component: str, kind: str) -> None:
    if kind == CA_KIND and component != CA_COMPONENT:
        raise PermissionDenied(f"raftstore: only the CA may read kind 'ca' (caller: {component or 'unknown'})")
    if _private_to_other(kind, component):
        raise PermissionDenied(f"raftstore: only {', '.join(sorted(PRIVATE_KINDS[kind]))} may read kind {kind!r} "
                               f"(caller: {component or 'unknown'})")


def check_membership(component: str) -> None:
    if component not in MEMBERSHIP_COMPONENTS:
        raise PermissionDenied(f"raftstore: only the gateway and raftstore members change the membership "
                               f"(caller: {component or 'unknown'})")


def without_payload(obj: dict[str, Any]) -> dict[str, Any]:
    """A secret or config object without its data (`spec.data`); everything else (name, labels, meta) kept."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or "data" not in spec:
        return obj
    return {**obj, "spec": {k: v for k, v in spec.items() if k != "data"}}


def redact_objects(component: str, kind: str, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listed or got objects of `kind` as `component` may see them (secret and config payloads removed)."""
    if kind not in PAYLOAD_KINDS or component in PAYLOAD_READERS:
        return objs
    return [without_payload(o) for o in objs]


def _visible_change(component: str, c: dict[str, Any]) -> dict[str, Any]:
    if _private_to_other(c["kind"], component):
        return {**c, "object": {"id": c["id"]}}
    if c["kind"] in PAYLOAD_KINDS and component not in PAYLOAD_READERS and isinstance(c.get("object"), dict):
        return {**c, "object": without_payload(c["object"])}
    return c


def _hidden(component: str, c: dict[str, Any]) -> bool:
    return (_private_to_other(c["kind"], component)
            or (c["kind"] in PAYLOAD_KINDS and component not in PAYLOAD_READERS))


#: kinds some component sees redacted (reduced to the id, or without the payload)
REDACTED_KINDS = frozenset(PRIVATE_KINDS) | PAYLOAD_KINDS


def sees_all(changes: Iterable[Any]) -> bool:
    """Whether every component sees these changes (`shoal.store.txn.Change`s) as they are: none of a kind that
    is redacted for someone."""
    return not any(c.kind in REDACTED_KINDS for c in changes)


def redact_changes(component: str, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The changes of one event or transaction answer as `component` may see them."""
    if not any(_hidden(component, c) for c in changes):
        return changes
    return [_visible_change(component, c) for c in changes]


def redact_events(component: str, events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Watch events as `component` may see them: kind-`ca` objects reduced to their id (but for the CA), secret
    and config payloads removed (but for the gateway and dispatcher)."""
    out = list(events)
    for i, e in enumerate(out):
        changes = e["changes"]
        visible = redact_changes(component, changes)
        if visible is not changes:
            out[i] = {**e, "changes": visible}
    return out
