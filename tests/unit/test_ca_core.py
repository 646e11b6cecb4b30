"""The CA's pure decisions: which role a token grants, which components a role may hold, renewal keeping the
identity, certificate lifetime, the CA's policy and the failed-join limiter."""

from __future__ import annotations

import datetime as dt

import pytest

from services.ca import core
from services.ca.core import CAState
from shoal import pki
from shoal.certs import Signer
from shoal.errors import InvalidArgument, PermissionDenied, Unauthenticated
from shoal.pki import Identity


@pytest.fixture(scope="module")
def state() -> CAState:
    s = Signer.new()
    obj = core.ca_object({"cluster_id": s.cluster_id, "root_cert": s.root_pem.decode(),
                          "root_key": s.key_pem.decode(),
                          "tokens": {"worker": pki.new_token_secret(), "manager": pki.new_token_secret()}})
    return CAState.from_obj(obj)


def ident(role: str, component: str) -> Identity:
    return Identity("n1", role, "c1", component, 0.0, 1.0, 1)


def test_tokens_grant_their_role(state: CAState) -> None:
    assert core.role_of_token(state, state.token("worker")) == pki.WORKER
    assert core.role_of_token(state, state.token("manager")) == pki.MANAGER


def test_unknown_secret_and_foreign_digest_are_401_malformed_is_400(state: CAState) -> None:
    root = pki.load_cert(state.root_pem)
    with pytest.raises(Unauthenticated, match="not valid"):
        core.role_of_token(state, pki.make_token(root, pki.new_token_secret()))
    with pytest.raises(Unauthenticated, match="another root"):
        core.role_of_token(state, pki.make_token(Signer.new().root, state.tokens["worker"]))
    for bad in ("", "SWMTKN-1-abc", "SWMTKN-2-" + "a" * 50 + "-" + "b" * 25, "nonsense"):
        with pytest.raises(InvalidArgument):
            core.role_of_token(state, bad)


def test_bootstrap_object_is_validated() -> None:
    with pytest.raises(InvalidArgument, match="lacks"):
        core.ca_object({"cluster_id": "c"})
    s = Signer.new()
    with pytest.raises(InvalidArgument, match="unusable"):
        core.ca_object({"cluster_id": "c", "root_cert": "junk", "root_key": s.key_pem.decode(),
                        "tokens": {"worker": "x", "manager": "y"}})
    with pytest.raises(InvalidArgument, match="unusable"):  # a secret that makes a malformed token
        core.ca_object({"cluster_id": "c", "root_cert": s.root_pem.decode(), "root_key": s.key_pem.decode(),
                        "tokens": {"worker": "short", "manager": pki.new_token_secret()}})


def test_join_components_by_role() -> None:
    core.check_join_components(pki.WORKER, ["agent"])
    core.check_join_components(pki.MANAGER, ["dispatcher", "raftstore", "agent"])
    with pytest.raises(PermissionDenied):
        core.check_join_components(pki.WORKER, ["agent", "dispatcher"])
    with pytest.raises(PermissionDenied):
        core.check_join_components(pki.MANAGER, ["admin"])  # admin bundles come from init, never a token
    with pytest.raises(InvalidArgument):
        core.check_join_components(pki.WORKER, [])
    with pytest.raises(InvalidArgument):
        core.check_join_components(pki.MANAGER, ["kernel"])


def test_renewal_is_for_the_own_component_only() -> None:
    core.check_renewal(ident(pki.WORKER, "agent"), ["agent"])
    for asked in (["dispatcher"], ["agent", "gateway"], []):
        with pytest.raises(PermissionDenied):
            core.check_renewal(ident(pki.WORKER, "agent"), asked)


def test_hosts_are_bounded_and_sane() -> None:
    assert core.check_hosts(["10.0.0.1", "node-1.example"]) == ("10.0.0.1", "node-1.example")
    for bad in (["a b"], [""], ["x/y"], ["h"] * (core.MAX_HOSTS + 1), ["a" * 254]):
        with pytest.raises(InvalidArgument):
            core.check_hosts(bad)


def test_lifetime_defaults_minimum_and_override() -> None:
    assert core.cert_lifetime(None) == pki.DEFAULT_CERT_LIFETIME
    cluster = {"spec": {"ca_config": {"node_cert_expiry": 7200}}}
    assert core.cert_lifetime(cluster) == dt.timedelta(hours=2)
    assert core.cert_lifetime({"spec": {"ca_config": {"node_cert_expiry": 60}}}) == pki.MIN_CERT_LIFETIME
    assert core.cert_lifetime({"spec": {"ca_config": {"node_cert_expiry": "x"}}}) == pki.DEFAULT_CERT_LIFETIME
    assert core.cert_lifetime(cluster, override=5.0) == dt.timedelta(seconds=5)


@pytest.mark.parametrize(("role", "component", "method", "path", "allowed"), [
    (pki.WORKER, "agent", "POST", "/v1/renew", True),
    (pki.WORKER, "agent", "GET", "/v1/tokens", False),
    (pki.MANAGER, "dispatcher", "GET", "/v1/tokens", False),
    (pki.ADMIN, "admin", "POST", "/v1/tokens/rotate", False),
    (pki.MANAGER, "gateway", "GET", "/v1/tokens", True),
    (pki.MANAGER, "gateway", "POST", "/v1/tokens/rotate", True),
    (pki.WORKER, "agent", "GET", "/metrics", False),
    (pki.MANAGER, "scheduler", "GET", "/metrics", True),
    (pki.WORKER, "agent", "GET", "/v1/ca/roots", True),
    (pki.MANAGER, "gateway", "GET", "/docs", False),
])
def test_policy(role: str, component: str, method: str, path: str, allowed: bool) -> None:
    assert (core.policy(ident(role, component), method, path) is None) == allowed


def test_limiter_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    lim = core.AttemptLimiter(limit=2, window=10.0, max_keys=2)
    for _ in range(2):
        assert not lim.blocked("a", 0.0)
        lim.failed("a", 0.0)
    assert lim.blocked("a", 1.0) and not lim.blocked("b", 1.0)
    assert not lim.blocked("a", 11.0)
    for k in ("x", "y", "z"):
        lim.failed(k, 20.0)
    assert len(lim._seen) == 2  # bounded memory
