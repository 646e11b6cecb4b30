"""The raftstore's access rules as pure functions (services/raftstore/access.py) and the start-up checks of a
member's certificate against SHOAL_RAFT_MEMBERS (services/raftstore/member.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.raftstore.access import caller_component, check_txn, policy, redact_events, redact_objects
from services.raftstore.member import bootstrap_members
from services.raftstore.settings import parse_members
from shoal import pki
from shoal.errors import PermissionDenied
from shoal.pki import Identity
from shoal.transport import TransportError
from tests.integration.raftprocs import ClusterCerts


def ident(component: str, role: str = pki.MANAGER) -> Identity:
    return Identity(node_id="n1", role=role, cluster_id="c", component=component, not_before=0, not_after=1,
                    serial=1)


@pytest.mark.parametrize(("who", "method", "path", "allowed"), [
    (ident("gateway"), "POST", "/v1/txn", True),
    (ident("scheduler"), "GET", "/v1/watch", True),
    (ident("agent", pki.WORKER), "POST", "/v1/txn", False),
    (ident("agent", pki.WORKER), "GET", "/v1/objects/task", False),
    (ident("agent", pki.WORKER), "GET", "/metrics", False),
    (ident("admin", pki.ADMIN), "GET", "/metrics", True),
    (ident("admin", pki.ADMIN), "GET", "/v1/objects/task", False),
    (ident("gateway"), "GET", "/v1/objects/ca", False),
    (ident("gateway"), "GET", "/v1/objects/ca/root", False),
    (ident("gateway"), "GET", "//v1//objects/ca/", False),
    (ident("gateway"), "GET", "/v1/objects/cat", True),  # not kind ca (and refused later as an unknown kind)
    (ident("ca"), "GET", "/v1/objects/ca/root", True),
    (ident("gateway"), "GET", "/v1/counts/ca", False),
    (ident("gateway"), "GET", "/v1/counts/task", True),
    (ident("agent", pki.WORKER), "GET", "/v1/counts/task", False),
    (ident("ca"), "GET", "/v1/counts/ca", True),
    (ident("scheduler"), "POST", "/v1/members", False),
    (ident("scheduler"), "DELETE", "/v1/members/3", False),
    (ident("scheduler"), "POST", "/v1/leader/transfer", False),
    (ident("scheduler"), "GET", "/v1/members", True),
    (ident("gateway"), "POST", "/v1/members", True),
    (ident("raftstore"), "DELETE", "/v1/members/3", True),
])
def test_policy(who: Identity, method: str, path: str, allowed: bool) -> None:
    assert (policy(who, method, path) is None) == allowed


def test_only_a_raftstore_member_speaks_on_behalf_of_another_caller() -> None:
    assert caller_component(ident("raftstore"), "ca") == "ca"
    assert caller_component(ident("raftstore"), None) == "raftstore"
    assert caller_component(ident("gateway"), "ca") == "gateway"
    assert caller_component(ident("raftstore", pki.WORKER), "ca") == "raftstore"
    assert caller_component(None, "ca") == ""  # no certificate (in-process only): the least


def test_a_txn_touching_kind_ca_is_the_cas_alone() -> None:
    body = {"ops": [{"op": "create", "kind": "service", "object": {}}, {"op": "check", "kind": "ca", "id": "root"}]}
    check_txn("ca", body)
    for who in ("gateway", "raftstore", ""):
        with pytest.raises(PermissionDenied, match="only the CA"):
            check_txn(who, body)
    check_txn("gateway", {"ops": [{"op": "delete", "kind": "service", "id": "x"}]})
    check_txn("gateway", {"ops": "garbage"})  # shape errors are the validator's


def test_watch_events_hide_kind_ca_objects_from_everyone_but_the_ca() -> None:
    events = [{"revision": 5, "changes": [
        {"action": "update", "kind": "ca", "id": "root", "object": {"id": "root", "root_key": "secret"}},
        {"action": "create", "kind": "task", "id": "t", "object": {"id": "t", "x": 1}}]},
        {"revision": 6, "changes": [{"action": "create", "kind": "task", "id": "u", "object": {"id": "u"}}]}]
    seen = redact_events("scheduler", events)
    assert seen[0]["changes"][0]["object"] == {"id": "root"} and "secret" not in repr(seen)
    assert seen[0]["changes"][1] == events[0]["changes"][1] and seen[1] == events[1]
    assert events[0]["changes"][0]["object"]["root_key"] == "secret"  # the store's own copy is untouched
    assert redact_events("ca", events) == events


def test_secret_and_config_payloads_reach_only_the_gateway_and_dispatcher() -> None:
    secret = {"id": "s1", "meta": {"version": 3}, "spec": {"name": "pw", "labels": {"a": "b"}, "data": "c2VjcmV0"}}
    config = {"id": "c1", "spec": {"name": "conf", "data": "Y29uZg=="}}
    events = [{"revision": 7, "changes": [
        {"action": "create", "kind": "secret", "id": "s1", "object": secret},
        {"action": "create", "kind": "config", "id": "c1", "object": config},
        {"action": "create", "kind": "task", "id": "t", "object": {"id": "t", "spec": {"data": "kept"}}}]}]
    for who in ("orchestrator", "allocator", "scheduler", "ca", "raftstore", ""):
        seen = redact_events(who, events)
        assert "c2VjcmV0" not in repr(seen) and "Y29uZg==" not in repr(seen)
        assert seen[0]["changes"][0]["object"] == {"id": "s1", "meta": {"version": 3},
                                                   "spec": {"name": "pw", "labels": {"a": "b"}}}
        assert seen[0]["changes"][2] == events[0]["changes"][2]  # other kinds keep a field called data
        assert redact_objects(who, "secret", [secret]) == [seen[0]["changes"][0]["object"]]
        assert redact_objects(who, "config", [config])[0]["spec"] == {"name": "conf"}
    for who in ("gateway", "dispatcher"):
        assert redact_events(who, events) == events
        assert redact_objects(who, "secret", [secret]) == [secret]
    assert secret["spec"]["data"] == "c2VjcmV0"  # the store's own copy is untouched


@pytest.mark.parametrize("kind", ["secret", "config"])
def test_only_the_gateway_writes_secrets_and_configs(kind: str) -> None:
    body = {"ops": [{"op": "create", "kind": kind, "object": {"id": "x"}}]}
    check_txn("gateway", body)
    for who in ("dispatcher", "orchestrator", "scheduler", "allocator", "ca", ""):
        with pytest.raises(PermissionDenied, match="only the gateway"):
            check_txn(who, body)


def test_members_spec_carries_node_ids_and_a_member_checks_them_against_its_certificate(tmp_path: Path) -> None:
    certs = ClusterCerts(tmp_path)
    ms = parse_members("1=https://h:1,h:2,node-1;2=https://h:3,h:4,node-2")
    assert [m.node_id for m in ms] == ["node-1", "node-2"]
    assert bootstrap_members(ms, 1, certs.member(1)) == ms
    filled = bootstrap_members(parse_members("1=https://h:1,h:2;2=https://h:3,h:4,node-2"), 1, certs.member(1))
    assert filled[0].node_id == "node-1"
    with pytest.raises(TransportError, match="no node id for member 2"):
        bootstrap_members(parse_members("1=https://h:1,h:2,node-1;2=https://h:3,h:4"), 1, certs.member(1))
    with pytest.raises(TransportError, match="its certificate is node 'node-1'"):
        bootstrap_members(parse_members("1=https://h:1,h:2,node-7"), 1, certs.member(1))
    with pytest.raises(TransportError, match="needs a manager's raftstore certificate"):
        bootstrap_members(ms, 1, certs.client("gateway"))
    with pytest.raises(ValueError, match="cannot parse"):
        parse_members("1=https://h:1,h:2,n,extra")


def test_member_contexts_written_before_mutual_tls_are_read_without_a_node_id() -> None:
    from services.raftstore.membership import Membership, member_context
    from services.raftstore.raft import ConfChange, ConfChangeType

    ms = Membership()
    ms.apply(ConfChange(ConfChangeType.ADD_LEARNER, 2, b'{"api_url":"http://h:1","peer_addr":"h:2"}'))  # old WAL
    ms.apply(ConfChange(ConfChangeType.ADD_LEARNER, 3, member_context("https://h:3", "h:4", "node-3")))
    assert ms.get(2) is not None and ms.get(2).node_id == ""  # type: ignore[union-attr]
    assert ms.ids_of_node("") == frozenset() and ms.ids_of_node("node-3") == {3}
    again = Membership.from_json(ms.to_json())  # snapshots keep node ids, and read old tables too
    assert [m.node_id for m in again.all()] == ["", "node-3"]


def test_methods_no_route_serves_are_routed_to_their_405_not_refused_as_what_they_are_not() -> None:
    """schemathesis (`unsupported_method`): TRACE /v1/objects/ca or DELETE /v1/members is no CA read and no
    membership change; the policy lets the router answer 405, while the real routes stay guarded."""
    from services.raftstore.access import is_membership_change, reads_ca

    assert reads_ca("/v1/objects/ca") and reads_ca("/v1/counts/ca", "GET")
    assert not reads_ca("/v1/objects/ca", "TRACE") and not reads_ca("/v1/objects/ca/x", "POST")
    assert is_membership_change("POST", "/v1/members") and is_membership_change("DELETE", "/v1/members/3")
    assert is_membership_change("POST", "/v1/leader/transfer")
    assert not is_membership_change("DELETE", "/v1/members") and not is_membership_change("POST", "/v1/members/3")
    assert not is_membership_change("TRACE", "/v1/leader/transfer") and not is_membership_change("GET", "/v1/members")


@pytest.mark.parametrize(("component", "allowed"), [("allocator", True), ("dispatcher", True), ("gateway", False),
                                                   ("orchestrator", False), ("scheduler", False), ("ca", False),
                                                   ("raftstore", False)])
def test_network_keys_are_read_only_by_the_allocator_and_dispatcher(component: str, allowed: bool) -> None:
    for path in ("/v1/objects/netkeys", "/v1/objects/netkeys/overlay", "/v1/counts/netkeys"):
        refusal = policy(ident(component), "GET", path)
        assert (refusal is None) == allowed, refusal
        if refusal is not None:
            assert "netkeys" in refusal and "the allocator and the dispatcher" in refusal
