"""The raftstore's refusals on three real member processes (docs/security.md, "The raftstore"): plaintext HTTP
and plaintext raft peers, TLS without a client certificate, a foreign CA, a worker, a gateway reaching for kind
`ca` (list, get, the txn fast path directly and through a follower, a forged on-behalf header, watch
redaction), and raft peer connections from the wrong component or with the wrong node id — each refused
without disturbing the cluster, next to a control showing the same request from the right identity works."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.raftstore.codec import encode_message
from services.raftstore.raft import Message, MsgType
from services.raftstore.transport import frames
from shoal import pki
from shoal.transport import Credentials, peer_client_context, sync_http_client
from tests.integration.raftprocs import ClusterCerts, RaftProcs, eventually, running_raft
from tests.specs import service_spec as spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CA_ROOT = {"id": "root", "root_key": "-----BEGIN EC PRIVATE KEY----- secret", "tokens": {"worker": "s3cret"}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftProcs]:
    yield from running_raft(tmp_path_factory.mktemp("raftsec"), 3)


def client(cluster: RaftProcs, component: str, role: str = pki.MANAGER) -> httpx.Client:
    return sync_http_client(cluster.certs.client(component, role), timeout=10)


def follower_of(cluster: RaftProcs) -> tuple[int, int]:
    lead = cluster.wait_leader(15)
    return lead, next(i for i in cluster.ids if i != lead)


def refused(resp: httpx.Response, words: str) -> None:
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert body["code"] == "permission_denied" and words in body["message"], body


def txn(kind: str, obj: dict[str, Any], op: str = "create") -> dict[str, Any]:
    return {"ops": [{"op": op, "kind": kind, "object": obj}]}


def metric(cluster: RaftProcs, i: int, name: str) -> float:
    text = cluster.http.get(cluster.url(i) + "/metrics").text
    m = re.search(rf"^shoal_{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


# ---- the API ------------------------------------------------------------------------------------------------
def test_plaintext_http_is_refused(cluster: RaftProcs) -> None:
    url = cluster.url(1).replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/v1/status", timeout=5)
    assert cluster.status(1) is not None  # still serving TLS


def test_tls_without_a_client_certificate_is_refused(cluster: RaftProcs) -> None:
    ctx = ssl.create_default_context(cadata=cluster.certs.signer.root_pem.decode())
    with pytest.raises(httpx.HTTPError):
        httpx.get(cluster.url(1) + "/v1/status", verify=ctx, timeout=5)


def test_a_certificate_of_a_foreign_ca_is_refused(cluster: RaftProcs, tmp_path: Path) -> None:
    foreign = ClusterCerts(tmp_path)  # another Signer: another cluster's root
    ctx = ssl.create_default_context(cadata=cluster.certs.signer.root_pem.decode())
    gw = Credentials(foreign.dir("gw", node_id="gw", component="gateway"))
    ctx.load_cert_chain(gw.cert_file, gw.key_file)
    with pytest.raises(httpx.HTTPError):
        httpx.get(cluster.url(1) + "/v1/status", verify=ctx, timeout=5)
    with httpx.Client(verify=ctx, timeout=5) as ok_ctx_control:  # the same context with our cluster's cert works
        mine = cluster.certs.client("gateway")
        ctx.load_cert_chain(mine.cert_file, mine.key_file)
        assert ok_ctx_control.get(cluster.url(1) + "/v1/status").status_code == 200


def test_a_worker_may_not_use_the_store(cluster: RaftProcs) -> None:
    lead, _ = follower_of(cluster)
    with client(cluster, "agent", pki.WORKER) as worker:
        url = cluster.url(lead)
        refused(worker.post(url + "/v1/txn", json=txn("service", {"id": "w", "spec": {}})), "only manager")
        refused(worker.get(url + "/v1/objects/service"), "only manager")
        refused(worker.get(url + "/v1/objects/service/w"), "only manager")
        refused(worker.get(url + "/v1/watch", params={"after": 0}), "only manager")
        refused(worker.get(url + "/v1/status"), "only manager")
    with client(cluster, "scheduler") as scheduler:  # control: a manager process may
        assert scheduler.get(url + "/v1/objects/service").status_code == 200


def test_only_the_ca_reads_and_writes_kind_ca(cluster: RaftProcs) -> None:
    lead, follower = follower_of(cluster)
    with client(cluster, "gateway") as gw, client(cluster, "ca") as ca:
        for i in (lead, follower):  # the fast path on the leader, and the follower's forwarding path
            refused(gw.post(cluster.url(i) + "/v1/txn", json=txn("ca", {"id": "root"})), "only the CA")
            # a forged on-behalf header from a non-raftstore identity is ignored
            refused(gw.post(cluster.url(i) + "/v1/txn", json=txn("ca", {"id": "root"}),
                            headers={"x-shoal-on-behalf-of": "ca"}), "only the CA")
        mixed = {"ops": [{"op": "create", "kind": "service", "object": {"id": "m", "spec": {}}},
                         {"op": "check", "kind": "ca", "id": "root"}]}
        refused(gw.post(cluster.url(lead) + "/v1/txn", json=mixed), "only the CA")
        assert gw.get(cluster.url(lead) + "/v1/objects/service/m").status_code == 404  # nothing applied

        r = ca.post(cluster.url(follower) + "/v1/txn", json=txn("ca", CA_ROOT))  # forwarded as the CA
        assert r.status_code == 200, r.text
        revision = r.json()["revision"]
        assert ca.get(cluster.url(lead) + "/v1/objects/ca/root").json()["root_key"] == CA_ROOT["root_key"]
        assert ca.get(cluster.url(follower) + "/v1/objects/ca").json()["items"][0]["id"] == "root"
        for i in (lead, follower):
            refused(gw.get(cluster.url(i) + "/v1/objects/ca"), "readable only by the CA")
            refused(gw.get(cluster.url(i) + "/v1/objects/ca/root"), "readable only by the CA")
            refused(gw.get(cluster.url(i) + "/v1/objects/ca/"), "readable only by the CA")

        def change(who: httpx.Client, i: int) -> dict[str, Any] | None:
            body = who.get(cluster.url(i) + "/v1/watch", params={"after": revision - 1}).json()
            return next((c for e in body["events"] for c in e["changes"] if c["kind"] == "ca"), None)

        for i in (lead, follower):
            seen = eventually(lambda i=i: change(gw, i), 10, "the ca change in the gateway's watch")  # type: ignore[misc]
            assert seen["object"] == {"id": "root"} and seen["id"] == "root"
            assert (change(ca, i) or {})["object"]["root_key"] == CA_ROOT["root_key"]


def test_the_leader_authorizes_the_original_caller_of_a_forwarded_write(cluster: RaftProcs) -> None:
    """A raftstore member's on-behalf header is believed: naming a gateway, it cannot touch kind `ca`; naming
    the CA, it can (a raftstore member holds the whole store in its WAL anyway)."""
    lead, _ = follower_of(cluster)
    with client(cluster, "raftstore") as member:
        url = cluster.url(lead) + "/v1/txn"
        refused(member.post(url, json=txn("ca", {"id": "x"}), headers={"x-shoal-on-behalf-of": "gateway"}),
                "only the CA")
        refused(member.post(url, json=txn("ca", {"id": "x"})), "only the CA")  # itself: not the CA either
        r = member.post(url, json=txn("ca", {"id": "x"}), headers={"x-shoal-on-behalf-of": "ca"})
        assert r.status_code == 200, r.text


def test_a_write_through_a_follower_records_its_original_writer(cluster: RaftProcs) -> None:
    """The actor kept with each transaction (the store's events) is the writer's certificate — through a
    follower too, which names the original writer's component and node to the leader."""
    lead, follower = follower_of(cluster)
    with client(cluster, "gateway") as gw:
        for i, name in ((follower, "via-follower"), (lead, "direct")):
            r = gw.post(cluster.url(i) + "/v1/txn", json=txn("service", {"id": name, "spec": spec(name)}))
            assert r.status_code == 200, r.text
            rev = r.json()["revision"]
            for j in (lead, follower):
                def event(j: int = j, rev: int = rev) -> dict[str, Any] | None:
                    body = gw.get(cluster.url(j) + "/v1/watch", params={"after": rev - 1}).json()
                    return next((e for e in body["events"] if e["revision"] == rev), None)

                seen = eventually(event, 10, f"revision {rev} in member {j}'s watch")
                assert seen["actor"] == "gateway@gateway-client", seen


def test_membership_changes_are_for_the_gateway_and_raftstore_only(cluster: RaftProcs) -> None:
    lead, follower = follower_of(cluster)
    body = {"api_url": "https://127.0.0.1:1", "peer_addr": "127.0.0.1:2", "node_id": "n9", "wait": 0}
    with client(cluster, "scheduler") as scheduler, client(cluster, "raftstore") as member:
        for i in (lead, follower):
            refused(scheduler.post(cluster.url(i) + "/v1/members", json=body), "change the membership")
            refused(scheduler.delete(cluster.url(i) + "/v1/members/3"), "change the membership")
            refused(scheduler.post(cluster.url(i) + "/v1/leader/transfer", json={}), "change the membership")
        assert scheduler.get(cluster.url(lead) + "/v1/members").status_code == 200  # reading is fine
        # forwarded on behalf of a scheduler: the leader refuses it too
        refused(member.post(cluster.url(lead) + "/v1/leader/transfer", json={"to": 99},
                            headers={"x-shoal-on-behalf-of": "scheduler"}), "change the membership")
        # control: the gateway gets past authorization (and then a 400 for the unknown member)
    with client(cluster, "gateway") as gw:
        assert gw.post(cluster.url(lead) + "/v1/leader/transfer", json={"to": 99}).status_code == 400


# ---- raft peers ---------------------------------------------------------------------------------------------
def peer_send(cluster: RaftProcs, target: int, creds: Credentials | None, msgs: list[Message]) -> bytes:
    """Dial `target`'s peer port (TLS with `creds`, plaintext without), send `msgs`, return what it answered
    before closing (b"" when it hung up)."""
    raw = socket.create_connection(("127.0.0.1", cluster.peer_ports[target]), timeout=5)
    try:
        sock: socket.socket = raw
        if creds is not None:
            sock = peer_client_context(creds).wrap_socket(raw)
        sock.sendall(b"".join(p for m in msgs for p in frames(encode_message(m))))
        time.sleep(0.5)
        sock.settimeout(1.0)
        try:
            return sock.recv(1)
        except (TimeoutError, OSError):
            return b"timeout"
    finally:
        raw.close()


def hijack(term: int, frm: int, to: int) -> list[Message]:
    """A heartbeat of a far later term: a member that accepted it would jump to that term."""
    return [Message(MsgType.HEARTBEAT, to=to, frm=frm, term=term)]


def term_of(cluster: RaftProcs, i: int) -> int:
    st = cluster.status(i)
    assert st is not None
    return int(st["term"])


def test_raft_peers_refuse_plaintext_other_components_and_wrong_node_ids(cluster: RaftProcs,
                                                                          tmp_path: Path) -> None:
    lead, target = follower_of(cluster)
    other = next(i for i in cluster.ids if i not in (lead, target))
    term = term_of(cluster, target)
    high = term + 1000
    conns_before = metric(cluster, target, "raft_peer_connections_refused_total")
    msgs_before = metric(cluster, target, "raft_peer_messages_refused_total")

    # plaintext: the TLS handshake fails and nothing is delivered
    assert peer_send(cluster, target, None, hijack(high, lead, target)) in (b"", b"timeout")
    # a manager of this cluster, but not a raftstore: hung up on
    gw = cluster.certs.client("gateway")
    assert peer_send(cluster, target, gw, hijack(high, lead, target)) == b""
    # a foreign CA's raftstore certificate: the handshake fails
    foreign = Credentials(ClusterCerts(tmp_path).member_dir(other))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        peer_send(cluster, target, foreign, hijack(high, lead, target))
    # a raftstore certificate of member `other`'s node, claiming to be the leader; and one of no member's node
    assert peer_send(cluster, target, cluster.certs.member(other), hijack(high, lead, target)) == b"timeout"
    stranger = cluster.certs.creds("stranger", node_id="node-99", component="raftstore")
    assert peer_send(cluster, target, stranger, hijack(high, other, target)) == b"timeout"

    assert term_of(cluster, target) < high and cluster.leader() == lead, "the cluster was not disturbed"
    assert metric(cluster, target, "raft_peer_connections_refused_total") >= conns_before + 1
    assert metric(cluster, target, "raft_peer_messages_refused_total") >= msgs_before + 2
    with client(cluster, "gateway") as c:
        assert c.post(cluster.url(target) + "/v1/txn", json=txn("service", {"id": "after", "spec": spec("after")})
                      ).status_code == 200

    # control: a message with the certificate of the node it claims to come from is believed (a transfer vote:
    # one term ahead is what a genuine one can claim; a thousand is refused as impossible, test_raft_hostile.py)
    now = term_of(cluster, target)
    peer_send(cluster, target, cluster.certs.member(other),
              [Message(MsgType.VOTE, to=target, frm=other, term=now + 1, context=b"transfer")])
    eventually(lambda: term_of(cluster, target) > now, 10, "the genuine peer's message to be delivered")
    cluster.wait_leader(20)  # the cluster settles in the new term


NDJSON = {"accept": "application/x-ndjson"}


def test_streamed_lists_keep_every_refusal_and_redaction(cluster: RaftProcs) -> None:
    """The NDJSON list (`Accept: application/x-ndjson`, the gateway's task list) goes through the same checks
    as the JSON one: a worker is refused, kind `ca` is the CA's, and secret payloads reach only the gateway
    and the dispatcher."""
    lead, follower = follower_of(cluster)
    secret = {"id": "sec-stream", "spec": {"name": "stream-secret", "data": "c2VjcmV0"}}
    with client(cluster, "gateway") as gw, client(cluster, "scheduler") as scheduler, \
            client(cluster, "agent", pki.WORKER) as worker:
        assert gw.post(cluster.url(lead) + "/v1/txn", json=txn("secret", secret)).status_code == 200
        refused(worker.get(cluster.url(lead) + "/v1/objects/secret", headers=NDJSON), "only manager")
        for i in (lead, follower):
            refused(gw.get(cluster.url(i) + "/v1/objects/ca", headers=NDJSON), "readable only by the CA")

            def streamed(who: httpx.Client, i: int = i) -> list[dict[str, Any]]:
                r = who.get(cluster.url(i) + "/v1/objects/secret", params={"id_prefix": "sec-stream"},
                            headers=NDJSON)
                assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson", r.text
                assert int(r.headers["shoal-revision"]) > 0
                return [json.loads(line) for line in r.text.splitlines()]

            assert [s["spec"].get("data") for s in streamed(gw)] == ["c2VjcmV0"]  # control: a payload reader
            assert [s["spec"] for s in streamed(scheduler)] == [{"name": "stream-secret"}]
            projected = scheduler.get(cluster.url(i) + "/v1/objects/secret", headers=NDJSON,
                                      params={"id_prefix": "sec-stream", "fields": "spec"})
            assert [json.loads(x) for x in projected.text.splitlines()] == [
                {"id": "sec-stream", "spec": {"name": "stream-secret"}}]  # projected after the redaction
            bad = scheduler.get(cluster.url(i) + "/v1/objects/secret", params={"fields": "spec.data"})
            assert bad.status_code == 400 and "fields" in bad.json()["message"]
