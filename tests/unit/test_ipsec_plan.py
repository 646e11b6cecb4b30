"""Encrypted overlay networks, the pure parts and the agent's shell over a recording fake of iproute2: the key
ring (shoal/netkeys.py: creation, rotation, primary), the per-pair derivation both ends agree on, the xfrm
plans in their no-loss order (agent/ipsec_plan.py), the spec option, the keys' place in the store (access), the
allocator's ring and attachments, and the dispatcher's table. The real kernel: tests/docker/
test_docker_overlay_encrypted.py."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from agent import ipsec_plan
from agent import overlay_plan as plan
from services.allocator import core as alloc
from services.gateway.docker.views import network_spec, network_view
from services.raftstore import access
from shoal import endpoints, netkeys
from shoal.errors import PermissionDenied
from shoal.models.network_spec import NetworkSpec, is_encrypted
from tests.tools.fake_iproute import recording_overlay

_counter = itertools.count(1)


def rand(n: int) -> bytes:
    return bytes([next(_counter) % 256]) * n


def test_the_ring_is_created_full_and_rotated_every_interval() -> None:
    ring = netkeys.rotate(None, 100.0, rand)
    assert ring is not None and [k["lamport"] for k in ring["keys"]] == [1, 2, 3]
    assert len({k["key"] for k in ring["keys"]}) == 3 and all(len(k["key"]) == 64 for k in ring["keys"])
    assert netkeys.rotate(ring, 100.0 + netkeys.ROTATION_INTERVAL - 1, rand) is None
    assert netkeys.next_rotation(ring) == 100.0 + netkeys.ROTATION_INTERVAL
    later = netkeys.rotate(ring, 100.0 + netkeys.ROTATION_INTERVAL, rand)
    assert later is not None and [k["lamport"] for k in later["keys"]] == [2, 3, 4]
    assert later["keys"][:2] == ring["keys"][1:]  # the oldest dropped, a new one appended
    # the primary (sending) key is the second newest: the newest was accepted everywhere since the last rotation
    accept, primary = netkeys.ring(later["keys"])
    assert primary == later["keys"][1] and accept == later["keys"]
    assert all(set(k) == {"lamport", "created_at"} for k in netkeys.public(later)["keys"])
    damaged = {"keys": [{"key": "zz", "lamport": 7}]}
    fixed = netkeys.rotate(damaged, 5.0, rand)
    assert fixed is not None and [k["lamport"] for k in fixed["keys"]] == [8, 9, 10]


def test_both_ends_derive_the_same_sas() -> None:
    keys = netkeys.rotate(None, 0.0, rand)["keys"]  # type: ignore[index]
    a, b = "10.0.0.1", "10.0.0.2"
    pa, pb = ipsec_plan.peer_plan(a, b, keys), ipsec_plan.peer_plan(b, a, keys)
    assert pa is not None and pb is not None
    assert pa.sas == pb.sas and len(pa.sas) == 6  # 3 keys x 2 directions, the same on both ends
    assert len({sa.spi for sa in pa.sas}) == 6 and len({sa.key for sa in pa.sas}) == 6  # a key per direction
    assert all(sa.spi >= 0x100 and len(sa.key) == 2 * netkeys.AEAD_KEY_BYTES for sa in pa.sas)
    out_a = next(sa for sa in pa.sas if sa.spi == pa.out_spi)
    out_b = next(sa for sa in pb.sas if sa.spi == pb.out_spi)
    assert (out_a.src, out_a.dst) == (a, b) and (out_b.src, out_b.dst) == (b, a)
    assert ipsec_plan.peer_plan(a, b, []) is None


def test_install_rotate_remove_in_the_no_loss_order() -> None:
    ring0 = netkeys.rotate(None, 0.0, rand)
    assert ring0 is not None
    local, peer = "127.0.0.2", ipsec_plan.PeerNode("127.0.0.3", 4793)
    want = ipsec_plan.peer_plan(local, peer.addr, ring0["keys"])
    cmds = [" ".join(c) for c in ipsec_plan.transition(local, 4792, peer, None, want)]
    adds = [c for c in cmds if c.startswith("ip xfrm state add")]
    pols = [c for c in cmds if "xfrm policy" in c]
    assert len(adds) == 6 and len(pols) == 2 and cmds.index(pols[0]) > cmds.index(adds[-1])
    assert all("aead rfc4106(gcm(aes))" in c and "mode transport" in c for c in adds)
    assert all(f"src {peer.addr} dst {local}" in c for c in adds[:3])  # inbound SAs first
    assert any("dir in" in c and "dport 4792" in c and "proto esp" in c for c in pols)
    out = next(c for c in pols if "dir out" in c)
    assert f"dport {peer.port}" in out and f"spi 0x{want.out_spi:08x}" in out and "proto udp" in out
    # rotation: the new key's SAs come first, then the outbound policy moves to the new primary, then the
    # dropped key's SAs go
    ring1 = netkeys.rotate(ring0, netkeys.ROTATION_INTERVAL, rand)
    assert ring1 is not None
    want1 = ipsec_plan.peer_plan(local, peer.addr, ring1["keys"])
    assert want1 is not None and want1.out_spi != want.out_spi
    cmds = [" ".join(c) for c in ipsec_plan.transition(local, 4792, peer, want, want1)]
    kinds = [c.split()[2] + " " + c.split()[3] for c in cmds]
    assert kinds == ["state add"] * 2 + ["policy update"] * 2 + ["state delete"] * 2
    assert f"spi 0x{want1.out_spi:08x}" in cmds[3]
    assert ipsec_plan.transition(local, 4792, peer, want1, want1) == []
    gone = [" ".join(c) for c in ipsec_plan.transition(local, 4792, peer, want1, None)]
    assert [c.split()[2:4] for c in gone] == [["policy", "delete"]] * 2 + [["state", "delete"]] * 6


def test_the_encrypted_option_is_validated_and_shown() -> None:
    spec = NetworkSpec.model_validate({"name": "sec", "options": {"encrypted": ""}})
    assert spec.wire()["options"] == {"encrypted": ""} and is_encrypted(spec.wire())
    assert NetworkSpec.model_validate({"name": "s2", "options": {"encrypted": "true"}}).options == {"encrypted": ""}
    assert "options" not in NetworkSpec.model_validate({"name": "plain"}).wire()
    with pytest.raises(ValidationError, match="unsupported driver option"):
        NetworkSpec.model_validate({"name": "x", "options": {"com.docker.network.mtu": "1400"}})
    with pytest.raises(ValidationError, match="leave it out"):
        NetworkSpec.model_validate({"name": "x", "options": {"encrypted": "false"}})
    body = network_spec({"Name": "sec", "Driver": "overlay", "Options": {"encrypted": ""}})
    assert NetworkSpec.model_validate(body).wire()["options"] == {"encrypted": ""}
    assert network_view({"id": "n1", "spec": {"name": "sec", "options": {"encrypted": ""}}})["Options"] == \
        {"encrypted": ""}


def test_cli_opt_flag() -> None:
    import argparse

    from shoal.cli.networks import network_spec as cli_spec
    a = argparse.Namespace(name="sec", driver=None, gateway=None, subnet=None, attachable=False, internal=False,
                           label=None, opt=["encrypted"])
    assert cli_spec(a)["options"] == {"encrypted": ""}


def test_the_keys_are_private_to_the_allocator_and_dispatcher() -> None:
    change = {"kind": "netkeys", "id": netkeys.KEYS_ID, "object": {"id": "overlay", "keys": [{"key": "ab"}]}}
    for who in ("allocator", "dispatcher"):
        access.check_kind(who, "netkeys")
        access.check_txn(who, {"ops": [{"kind": "netkeys"}]})
        assert access.redact_changes(who, [change]) == [change]
    for who in ("gateway", "orchestrator", "scheduler", "ca", ""):
        with pytest.raises(PermissionDenied, match="netkeys"):
            access.check_kind(who, "netkeys")
        with pytest.raises(PermissionDenied, match="netkeys"):
            access.check_txn(who, {"ops": [{"kind": "netkeys"}]})
        assert access.redact_changes(who, [change])[0]["object"] == {"id": "overlay"}
    assert access.read_kind("/v1/objects/netkeys") == "netkeys"


def test_the_allocator_keeps_the_ring_only_once_a_network_is_encrypted() -> None:
    plain = {"id": "n1", "spec": {"name": "plain"}}
    sec = {"id": "n2", "spec": {"name": "sec", "options": {"encrypted": ""}}}
    assert not alloc.plan_netkeys([plain], None, 0.0, rand)
    created = alloc.plan_netkeys([plain, sec], None, 0.0, rand)
    op = created.ops[0]
    assert op["op"] == "create" and op["kind"] == "netkeys" and len(op["object"]["keys"]) == 3
    assert created.wake_at == netkeys.ROTATION_INTERVAL
    stored = {**op["object"], "meta": {"version": 4}}
    quiet = alloc.plan_netkeys([plain, sec], stored, 10.0, rand)
    assert not quiet and quiet.wake_at == netkeys.ROTATION_INTERVAL
    rotated = alloc.plan_netkeys([plain], stored, netkeys.ROTATION_INTERVAL, rand)  # kept rotating
    assert rotated.ops[0]["op"] == "update" and rotated.ops[0]["expect_version"] == 4


def test_only_nodes_with_an_encrypted_task_get_keys() -> None:
    ring = netkeys.rotate(None, 0.0, rand)
    tasks = [{"id": "t1", "node_id": "n1", "status": {"state": "running"}, "desired_state": "running",
              "networks": [{"network_id": "sec", "addresses": ["10.0.0.3/24"], "encrypted": True}]},
             {"id": "t2", "node_id": "n2", "status": {"state": "running"}, "desired_state": "running",
              "networks": [{"network_id": "plain", "addresses": ["10.0.1.3/24"]}]}]
    base = endpoints.node_table([], "n1", "127.0.0.2", tasks)
    assert endpoints.encrypted_networks("n1", tasks) == {"sec"} and endpoints.encrypted_networks("n2", tasks) == set()
    got = endpoints.with_keys(base, {"sec"}, ring)
    assert got["encrypted_networks"] == ["sec"] and len(got["network_keys"]) == 3
    assert set(got["network_keys"][0]) == {"key", "lamport"} and got["version"] != base["version"]
    assert endpoints.with_keys(base, set(), ring) is base
    rotated = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, rand)
    assert endpoints.with_keys(base, {"sec"}, rotated)["version"] != got["version"]


async def test_the_overlay_secures_peers_before_sending_them_frames(tmp_path: Any, monkeypatch: Any) -> None:
    """The shell: an encrypted network's peers get FDB entries only once the ESP state towards their node is
    installed; without keys, or on a kernel without ESP, none (never plaintext); a rotation runs the no-loss
    transition; a container of an encrypted network on a node without ESP fails naming what is missing."""
    from agent import overlay as overlay_mod
    ov, ran = recording_overlay(tmp_path, monkeypatch)
    ov.ipsec_missing, ov.esp_mode = [], "kernel"
    net = ov.nets["sec"] = overlay_mod._Net("sec", plan.ns_name("node1", "sec"))
    svc = {"id": "s", "name": "web", "mode": "dnsrr", "networks": ["sec"], "vips": [], "ports": [],
           "backends": [{"task_id": "b", "node_id": "n2", "node_addr": "127.0.0.3", "addresses": {"sec": "10.0.0.4"},
                         "ports": {}}]}
    table: dict[str, Any] = {"node_addr": "127.0.0.2", "services": [svc], "encrypted_networks": ["sec"]}
    await ov.apply(table)  # no keys yet: nothing sent to the peer
    assert not any("fdb replace" in r or "xfrm" in r for r in ran)
    ring = netkeys.rotate(None, 0.0, rand)
    assert ring is not None
    table["network_keys"] = [{"key": k["key"], "lamport": k["lamport"]} for k in ring["keys"]]
    ran.clear()
    await ov.apply(table)
    fdb = next(i for i, r in enumerate(ran) if "fdb replace" in r)
    assert max(i for i, r in enumerate(ran) if "xfrm" in r) < fdb  # ESP first, then frames may go
    assert sum("xfrm state add" in r for r in ran) == 6
    assert ov.status()["encryption"]["peers"][0]["node"] == "127.0.0.3"
    rotated = netkeys.rotate(ring, netkeys.ROTATION_INTERVAL, rand)
    assert rotated is not None
    table["network_keys"] = [{"key": k["key"], "lamport": k["lamport"]} for k in rotated["keys"]]
    ran.clear()
    await ov.apply(table)
    verbs = [r.split()[2:4] for r in ran if "xfrm" in r]
    assert verbs == [["state", "add"]] * 2 + [["policy", "update"]] * 2 + [["state", "delete"]] * 2
    # the peer's task leaves: its FDB entry goes before the ESP policies (no frame towards it in the clear)
    backends = svc["backends"]
    svc["backends"] = []
    ran.clear()
    await ov.apply(table)
    fdb_del = next(i for i, r in enumerate(ran) if "fdb del" in r)
    assert fdb_del < min(i for i, r in enumerate(ran) if "xfrm policy delete" in r)
    assert not ov.secured
    svc["backends"] = backends
    await ov.apply(table)
    assert ov.secured
    # the network goes: the ESP state towards the peer goes with it
    ov.nets.pop("sec")
    ran.clear()
    await ov._sync_ipsec()
    assert sum("xfrm policy delete" in r for r in ran) == 2 and sum("xfrm state delete" in r for r in ran) == 6
    assert not ov.secured and net.ns
    # a node without ESP: no state, no frames, and a container of the network fails loudly
    ov2 = overlay_mod.Overlay(tmp_path, node_id=lambda: "node1", addr="127.0.0.2")
    ov2.missing, ov2.ipsec_missing = [], ["kernel support for ESP (CONFIG_INET_ESP): Requested type not found."]
    ov2.nets["sec"] = overlay_mod._Net("sec", plan.ns_name("node1", "sec"))
    ran.clear()
    await ov2.apply(table)
    assert not any("fdb replace" in r or "xfrm" in r for r in ran)
    task = {"id": "t9", "spec": {"networks": [{"target": "sec"}]},
            "networks": [{"network_id": "sec", "addresses": ["10.0.0.9/24"], "encrypted": True}]}
    with pytest.raises(overlay_mod.OverlayError, match="CONFIG_INET_ESP"):
        await ov2.attach(task, 1)


def test_a_failing_sa_command_never_shows_its_key() -> None:
    from agent.netns import _shown
    sa = ipsec_plan.SA("10.0.0.1", "10.0.0.2", 0x1234, "ab" * 20)
    shown = " ".join(_shown(sa.add()))
    assert "ab" * 20 not in shown and "aead rfc4106(gcm(aes)) <key> 128" in shown


def test_userspace_esp_packets_round_trip_and_refuse_tampering() -> None:
    from agent.esp_user import open_, relay_net, seal, tun_name
    keys = netkeys.rotate(None, 0.0, rand)["keys"]  # type: ignore[index]
    p = ipsec_plan.peer_plan("10.0.0.1", "10.0.0.2", keys)
    assert p is not None
    out = next(sa for sa in p.sas if sa.spi == p.out_spi)
    packet = seal(out, 7, 4789, 4790, b"VXLAN-FRAME" * 10, b"\x01" * 8)
    assert packet[:4] == out.spi.to_bytes(4, "big") and packet[4:8] == (7).to_bytes(4, "big")
    assert b"VXLAN-FRAME" not in packet and (len(packet) - 16 - 16) % 4 == 0  # padded, encrypted
    assert open_(out, packet) == (4790, b"VXLAN-FRAME" * 10)
    tampered = packet[:20] + bytes([packet[20] ^ 1]) + packet[21:]
    assert open_(out, tampered) is None
    other = next(sa for sa in p.sas if sa.spi != p.out_spi and sa.src == out.src)
    assert open_(other, packet) is None  # another key's SA does not open it
    assert open_(out, packet[:-1] + bytes([packet[-1] ^ 1])) is None  # the ICV
    assert relay_net("127.0.0.2") != relay_net("127.0.0.3") and tun_name("127.0.0.2").startswith("sh-e")
