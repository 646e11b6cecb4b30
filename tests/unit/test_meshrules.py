"""The routing mesh's kernel path, pure core (shoal/meshrules.py) and its shell's decisions over a recording
fake of iptables (agent/kernel_mesh.py). The real kernel: tests/e2e/test_mesh.py (kernel mode)."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from agent.kernel_mesh import KernelMesh
from agent.mesh import Mesh
from shoal import meshrules
from shoal.iptables import KernelError

TAG = meshrules.tag("cluster-a", "host-1")


def test_names_are_per_cluster_and_node_and_fit_iptables() -> None:
    assert TAG.startswith(meshrules.cluster_prefix("cluster-a"))
    assert TAG != meshrules.tag("cluster-b", "host-1") and TAG != meshrules.tag("cluster-a", "host-2")
    assert not meshrules.tag("cluster-b", "host-1").startswith(meshrules.cluster_prefix("cluster-a"))
    longest = [meshrules.port_chain(TAG, "udp", 65535), meshrules.post_chain(TAG), meshrules.fwd_chain(TAG), TAG]
    assert all(n.startswith("sh-") and len(n) <= 28 for n in longest), longest  # iptables' limit


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_probabilities_give_every_backend_an_equal_share(n: int) -> None:
    probs = meshrules.probabilities(n)
    assert probs[-1] is None  # the last backend takes whatever reaches it
    reach, shares = Fraction(1), []
    for p in probs:
        take = reach * (Fraction(1) if p is None else Fraction(p).limit_denominator(1000))
        shares.append(take)
        reach -= take
    assert all(s == Fraction(1, n) for s in shares), shares


def test_plan_dnats_each_port_to_its_backends_with_statistic_rules() -> None:
    routes = {("tcp", 8080): [("127.0.0.2", 40001), ("127.0.0.3", 40002), ("10.0.0.9", 40003)],
              ("udp", 5353): [("127.0.0.3", 40100)]}
    chains = meshrules.plan(TAG, "127.0.0.2", routes)
    tcp, udp, post, fwd = f"{TAG}-t8080", f"{TAG}-u5353", f"{TAG}-post", f"{TAG}-fwd"
    assert set(chains) == {TAG, post, fwd, tcp, udp}
    assert [meshrules.table_of(c) for c in (TAG, post, fwd, tcp)] == ["nat", "nat", "filter", "nat"]
    assert chains[TAG] == [
        f"-d 127.0.0.2/32 -p tcp -m tcp --dport 8080 -m comment --comment {tcp} -j {tcp}",
        f"-d 127.0.0.2/32 -p udp -m udp --dport 5353 -m comment --comment {udp} -j {udp}"]
    assert [re.findall(r"--probability (\S+)", r) for r in chains[tcp]] == [["0.3333333333"], ["0.5000000000"], []]
    assert [r.split("--to-destination ")[1] for r in chains[tcp]] == ["127.0.0.2:40001", "127.0.0.3:40002",
                                                                     "10.0.0.9:40003"]
    assert chains[udp] == [f"-p udp -m comment --comment {udp} -j DNAT --to-destination 127.0.0.3:40100"]
    # answers of remote backends come back through this node: MASQUERADE what it DNATed for its ports
    assert len(chains[post]) == 2 and all("! -o lo" in r and "--ctorigdst 127.0.0.2" in r
                                          and r.endswith("-j MASQUERADE") for r in chains[post])
    assert any("-p udp" in r and "--ctorigdstport 5353" in r for r in chains[post])
    # and a FORWARD policy of DROP (Docker's) lets them through to a backend on another machine
    assert len(chains[fwd]) == 2 and all("--ctstate DNAT --ctorigdst 127.0.0.2" in r and r.endswith("-j ACCEPT")
                                         for r in chains[fwd])


def test_a_port_without_backends_or_of_another_protocol_gets_no_rule() -> None:
    chains = meshrules.plan(TAG, "127.0.0.2", {("tcp", 8080): [], ("sctp", 9): [("127.0.0.3", 1)]})
    assert chains == {TAG: [], f"{TAG}-post": [], f"{TAG}-fwd": []}


def test_no_node_address_means_any_local_address() -> None:
    chains = meshrules.plan(TAG, "0.0.0.0", {("tcp", 80): [("127.0.0.3", 1)]})
    assert chains[TAG][0].startswith("-m addrtype --dst-type LOCAL ")
    assert "--ctorigdst " not in chains[f"{TAG}-post"][0]


def test_statistic_rules_spread_evenly_when_simulated() -> None:
    chains = meshrules.plan(TAG, "127.0.0.2", {("tcp", 80): [("127.0.0.3", p) for p in (1, 2, 3)]})
    rng, counts = random.Random(7), {"1": 0, "2": 0, "3": 0}
    for _ in range(30000):
        for rule in chains[f"{TAG}-t80"]:
            m = re.search(r"--probability (\S+)", rule)
            if m is None or rng.random() < float(m.group(1)):
                counts[rule.rsplit(":", 1)[1]] += 1
                break
    assert all(9000 < c < 11000 for c in counts.values()), counts


def test_restore_text_rewrites_only_changed_chains_and_deletes_the_unwanted() -> None:
    before = meshrules.plan(TAG, "127.0.0.2", {("tcp", 80): [("127.0.0.3", 1)], ("tcp", 81): [("127.0.0.3", 2)]})
    after = meshrules.plan(TAG, "127.0.0.2", {("tcp", 80): [("127.0.0.3", 1), ("127.0.0.4", 1)]})
    text = meshrules.restore_text(after, list(before), before, [], TAG)
    lines = text.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert lines.count("COMMIT") == 2 and "*filter" in lines  # one transaction per table
    declared = [ln[1:].split()[0] for ln in lines if ln.startswith(":")]
    assert set(declared) == {TAG, f"{TAG}-post", f"{TAG}-fwd", f"{TAG}-t80", f"{TAG}-t81"}  # declaring flushes
    assert lines.index(f"-X {TAG}-t81") > max(i for i, ln in enumerate(lines) if ln.startswith(f"-A {TAG} "))
    assert not any(ln.startswith(f"-A {TAG}-t81") for ln in lines)
    # nothing changed → nothing to run; unknown previous (a restarted agent) → everything rewritten
    assert meshrules.restore_text(after, list(after), after, [], TAG) == ""
    assert sum(ln.startswith(":") for ln in meshrules.restore_text(after, list(after), None, [], TAG)
               .splitlines()) == len(after)


def test_missing_hooks_are_inserted_first_in_the_builtin_chains() -> None:
    text = meshrules.restore_text({TAG: [], f"{TAG}-post": [], f"{TAG}-fwd": []}, [], None,
                                  ["PREROUTING", "POSTROUTING", "FORWARD"], TAG)
    assert f"-I PREROUTING 1 -m comment --comment {TAG} -j {TAG}" in text
    assert f"-I POSTROUTING 1 -m comment --comment {TAG}-post -j {TAG}-post" in text
    assert "-I OUTPUT" not in text
    nat, filt = text.split("*filter")
    assert f"-I FORWARD 1 -m comment --comment {TAG}-fwd -j {TAG}-fwd" in filt and "FORWARD" not in nat


SAVED = f"""*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
:{TAG} - [0:0]
:{TAG}-t80 - [0:0]
:{TAG}-post - [0:0]
:sh-m-aaaaaa-bbbbbb - [0:0]
-A PREROUTING -m comment --comment {TAG} -j {TAG}
-A PREROUTING -m comment --comment sh-m-aaaaaa-bbbbbb -j sh-m-aaaaaa-bbbbbb
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m comment --comment {TAG} -j {TAG}
-A POSTROUTING -m comment --comment {TAG}-post -j {TAG}-post
-A {TAG} -d 127.0.0.2/32 -p tcp -m tcp --dport 80 -j {TAG}-t80
-A {TAG}-t80 -p tcp -j DNAT --to-destination 127.0.0.3:1
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER-USER - [0:0]
:{TAG}-fwd - [0:0]
-A FORWARD -m comment --comment {TAG}-fwd -j {TAG}-fwd
-A FORWARD -j DOCKER-USER
COMMIT
"""


def test_removal_takes_exactly_the_prefixs_chains_and_jumps() -> None:
    chains, jumps = meshrules.parse_save(SAVED, TAG)
    assert sorted(chains) == sorted([TAG, f"{TAG}-t80", f"{TAG}-post", f"{TAG}-fwd"])
    assert [(t, c) for t, c, _ in jumps] == [("nat", "PREROUTING"), ("nat", "OUTPUT"), ("nat", "POSTROUTING"),
                                             ("filter", "FORWARD")]
    text = meshrules.removal(SAVED, TAG)
    assert "sh-m-aaaaaa-bbbbbb" not in text and "DOCKER" not in text  # another node's, another tool's: kept
    assert f"-D PREROUTING -m comment --comment {TAG} -j {TAG}" in text and f"-X {TAG}-t80" in text
    assert f"*filter\n-D FORWARD -m comment --comment {TAG}-fwd -j {TAG}-fwd\n:{TAG}-fwd - [0:0]\n-X {TAG}-fwd" in text
    assert meshrules.removal(SAVED, "sh-m-cccccc") == ""
    # a cluster's prefix takes all of its nodes
    assert set(meshrules.parse_save(SAVED, "sh-m-")[0]) == {TAG, f"{TAG}-t80", f"{TAG}-post", f"{TAG}-fwd",
                                                            "sh-m-aaaaaa-bbbbbb"}


class FakeIptables:
    """Records the restore texts; answers iptables-save with `saved`."""

    def __init__(self, saved: str = "*nat\nCOMMIT\n*filter\nCOMMIT\n") -> None:
        self.saved = saved
        self.restored: list[str] = []
        self.fail = False

    def __call__(self, argv: list[str], stdin: str | None) -> str:
        if argv[0] == "iptables-save":  # one table at a time
            table = argv[argv.index("-t") + 1]
            return "".join(part for part in self.saved.split("COMMIT\n") if part.startswith(f"*{table}"))
        if self.fail:
            raise KernelError("iptables-restore: line 3 failed")
        assert argv[:2] == ["iptables-restore", "-w"] and "--noflush" in argv and stdin
        self.restored.append(stdin)
        return ""


def test_shell_applies_once_per_change_and_reconciles_after_a_restart() -> None:
    fake = FakeIptables(SAVED)
    k = KernelMesh(TAG, runner=fake)
    k.apply("127.0.0.2", {("tcp", 80): [("127.0.0.3", 1)]})
    assert len(fake.restored) == 1  # a new process does not trust what it finds: rewrites its chains
    assert "-I PREROUTING" not in fake.restored[0]  # hooks found in place are not added twice
    k.apply("127.0.0.2", {("tcp", 80): [("127.0.0.3", 1)]})
    assert len(fake.restored) == 1  # same table: nothing to do
    k.apply("127.0.0.2", {})
    assert f"-X {TAG}-t80" in fake.restored[-1]
    assert k.status()["error"] is None and k.status()["ports"] == {}


def test_shell_keeps_the_error_and_rewrites_everything_next_time() -> None:
    fake = FakeIptables()
    fake.fail = True
    k = KernelMesh(TAG, runner=fake)
    k.apply("127.0.0.2", {("udp", 53): [("127.0.0.3", 1)]})
    assert "line 3 failed" in (k.status()["error"] or "") and k.applied is None
    fake.fail = False
    k.apply("127.0.0.2", {("udp", 53): [("127.0.0.3", 1)]})
    assert k.status()["error"] is None and "-I PREROUTING 1" in fake.restored[-1]
    assert k.status()["ports"] == {"udp/53": ["127.0.0.3:1"]}


def test_choose_mode_auto_falls_back_and_kernel_fails_naming_what_is_missing() -> None:
    from agent.mesh import KernelUnavailable, choose_mode
    assert choose_mode("auto", check=lambda: [])[0] == "kernel"
    mode, reason = choose_mode("auto", check=lambda: ["root (iptables needs CAP_NET_ADMIN)"])
    assert mode == "userspace" and "root" in reason
    with pytest.raises(KernelUnavailable, match="missing the iptables-save command"):
        choose_mode("kernel", check=lambda: ["the iptables-save command"])
    assert choose_mode("userspace", check=lambda: pytest.fail("userspace needs no check"))[0] == "userspace"
    with pytest.raises(KernelUnavailable, match="expected one of auto, kernel, userspace"):
        choose_mode("fast")


async def test_mesh_in_kernel_mode_gives_ingress_ports_to_the_kernel_and_keeps_the_vip_listeners(
        tmp_path: Path) -> None:
    fake = FakeIptables()
    mesh = Mesh(tmp_path, node_tag=TAG)
    mesh.use("kernel", "test")
    assert mesh.kernel is not None
    mesh.kernel.runner = fake
    table = {"version": "v1", "node_addr": "127.0.0.2", "services": [{
        "id": "svc1", "name": "web", "mode": "vip", "networks": ["n1"], "vips": [],
        "ports": [{"protocol": "tcp", "target_port": 8080, "published_port": 30080, "publish_mode": "ingress"},
                  {"protocol": "udp", "target_port": 53, "published_port": 30053, "publish_mode": "ingress"}],
        "backends": [{"task_id": "t1", "node_id": "n", "node_addr": "127.0.0.3", "addresses": {},
                      "ports": {"8080/tcp": 41000, "53/udp": 41001}}], "backends_truncated": False}]}
    try:
        await mesh.apply(table)
        [text] = fake.restored
        assert "-j DNAT --to-destination 127.0.0.3:41000" in text and "-j DNAT --to-destination 127.0.0.3:41001" in text
        kinds = {lst["kind"] for lst in mesh.status()["listeners"]}
        assert kinds == {"vip"}, mesh.status()  # no userspace listener on the published port
        st = mesh.status()
        assert st["mode"] == "kernel" and st["kernel"]["ports"] == {"tcp/30080": ["127.0.0.3:41000"],
                                                                  "udp/30053": ["127.0.0.3:41001"]}
    finally:
        await mesh.close()
