"""The routing mesh's kernel path, pure part (docs/networking.md, "Kernel path"): the iptables `nat` rules that
load-balance a node's ingress published ports, computed from the same routes the userspace mesh listens for
(`shoal.endpoints.ingress_routes`), and the `iptables-restore` texts that install, replace and remove them.
No I/O here: agent/kernel_mesh.py runs the texts; `shoal down` uses `removal` on what `iptables-save` shows.

Names (iptables chain names are at most 28 characters): every chain starts with `sh-m-<cluster>-<node>`
(`tag`: 6 hex digits of a digest of the cluster id, 6 of the agent's host name), so an agent — restarted, or
`shoal down` for its cluster — finds exactly its own chains and never another node's or another cluster's:
- `<tag>`: the node's entry chain, jumped to from `PREROUTING` (clients elsewhere) and `OUTPUT` (clients on
  this machine); one rule per published port with a backend: destination the node's address, protocol and
  port → the port's chain;
- `<tag>-t<port>` / `<tag>-u<port>`: one port's backends, DNAT to `<node addr>:<host port>` spread evenly with
  `-m statistic --mode random` (backend i of n taken with probability 1/(n-i), the last always);
- `<tag>-post`: jumped to from `POSTROUTING`; MASQUERADE of connections this node DNATed for one of its ports
  that leave by an interface other than `lo`, so a remote backend answers through the balancing node (whose
  conntrack entry undoes the DNAT) rather than straight to a client that never asked it;
- `<tag>-fwd`, in the `filter` table, jumped to from `FORWARD`: ACCEPT those same connections (both ways), which
  a host whose FORWARD policy is DROP (any Docker host) would otherwise drop on their way to another machine.
The hooks in the built-in chains carry the comment `sh-m-...` (their target's name)."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping, Sequence

PREFIX = "sh-m-"
#: (table, built-in chain, suffix of the node's chain it jumps to)
HOOKS = (("nat", "PREROUTING", ""), ("nat", "OUTPUT", ""), ("nat", "POSTROUTING", "-post"),
         ("filter", "FORWARD", "-fwd"))
TABLES = ("nat", "filter")
PROTOCOLS = ("tcp", "udp")

Addr = tuple[str, int]
Routes = Mapping[tuple[str, int], Sequence[Addr]]
Chains = dict[str, list[str]]


def _h6(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def cluster_prefix(cluster_id: str) -> str:
    """What every chain of one cluster's mesh starts with (`shoal down` removes those)."""
    return f"{PREFIX}{_h6(cluster_id)}-"


def tag(cluster_id: str, hostname: str) -> str:
    """The node's entry chain, and the start of every other chain of the node."""
    return f"{cluster_prefix(cluster_id)}{_h6(hostname)}"


def port_chain(node_tag: str, protocol: str, port: int) -> str:
    return f"{node_tag}-{protocol[0]}{port}"


def post_chain(node_tag: str) -> str:
    return f"{node_tag}-post"


def fwd_chain(node_tag: str) -> str:
    return f"{node_tag}-fwd"


def table_of(chain: str) -> str:
    """The table a chain of the mesh lives in (its name says)."""
    return "filter" if chain.endswith("-fwd") else "nat"


def probabilities(n: int) -> list[float | None]:
    """For n backends tried in order: the chance backend i is taken if reached (None: always), giving each
    backend a share of 1/n: (1 - 1/n)(1 - 1/(n-1))...(1/(n-i)) = 1/n."""
    return [1.0 / (n - i) if i < n - 1 else None for i in range(n)]


def _dst(node_addr: str) -> str:
    """Which packets are the node's: to its address; with none known (no SHOAL_ADDR, table without
    `node_addr`), to any local address, as Docker's published ports."""
    if node_addr and node_addr not in ("0.0.0.0", "::"):
        return f"-d {node_addr}/32"
    return "-m addrtype --dst-type LOCAL"


def plan(node_tag: str, node_addr: str, routes: Routes) -> Chains:
    """Every chain of the node and its rules (the arguments after `-A <chain>`), from `(protocol, published
    port)` → backends. A port without a backend gets no rule: connections to it are refused (nothing listens),
    as the userspace mesh closes its listener. Protocols other than tcp/udp (sctp) are left out."""
    entry: list[str] = []
    post: list[str] = []
    fwd: list[str] = []
    chains: Chains = {}
    dst = _dst(node_addr)
    for (protocol, port), backends in sorted(routes.items()):
        if protocol not in PROTOCOLS or not backends:
            continue
        name = port_chain(node_tag, protocol, port)
        comment = f"-m comment --comment {name}"
        entry.append(f"{dst} -p {protocol} -m {protocol} --dport {port} {comment} -j {name}")
        rules = []
        for (host, hport), p in zip(backends, probabilities(len(backends)), strict=True):
            chance = f"-m statistic --mode random --probability {p:.10f} " if p is not None else ""
            rules.append(f"-p {protocol} {comment} {chance}-j DNAT --to-destination {host}:{hport}")
        chains[name] = rules
        orig = f" --ctorigdst {node_addr}" if dst.startswith("-d ") else ""
        ours = f"-p {protocol} -m conntrack --ctstate DNAT{orig} --ctorigdstport {port} {comment}"
        post.append(f"! -o lo {ours} -j MASQUERADE")
        fwd.append(f"{ours} -j ACCEPT")
    return {node_tag: entry, post_chain(node_tag): post, fwd_chain(node_tag): fwd, **chains}


def hook_rule(builtin: str, node_tag: str) -> str:
    """The rule of a built-in chain that jumps to the node's chains (what `-I`/`-D` take after the chain)."""
    target = node_tag + {b: suffix for _, b, suffix in HOOKS}[builtin]
    return f"-m comment --comment {target} -j {target}"


def restore_text(desired: Chains, installed: Iterable[str], previous: Chains | None, hooks_missing: Iterable[str],
                 node_tag: str) -> str:
    """The `iptables-restore --noflush` input taking the kernel from what is `installed` (chain names of this
    node found there) to `desired`, one transaction per table: every chain whose rules differ from `previous`
    (what this process applied last; None: unknown, rewrite all) is declared — which flushes it — and refilled;
    chains no longer wanted are flushed and deleted after the entry chain stopped naming them; hooks missing from
    the built-in chains (`hooks_missing`: their names) are inserted first in them. Empty text: nothing to do."""
    installed = set(installed)
    rewrite = [c for c, rules in desired.items() if previous is None or c not in installed
               or previous.get(c) != rules]
    drop = sorted(c for c in installed if c not in desired)
    missing = set(hooks_missing)
    out: list[str] = []
    for table in TABLES:
        here = [c for c in rewrite if table_of(c) == table]
        gone = [c for c in drop if table_of(c) == table]
        hooks = [b for t, b, _ in HOOKS if t == table and b in missing]
        if not here and not gone and not hooks:
            continue
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in [*here, *gone]]
        for c in here:
            out += [f"-A {c} {rule}" for rule in desired[c]]
        out += [f"-I {b} 1 {hook_rule(b, node_tag)}" for b in hooks]
        out += [f"-X {c}" for c in gone]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def parse_save(text: str, prefix: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """From `iptables-save` (the `nat` and `filter` tables): the chains whose names start with `prefix`, and the
    rules of other chains that jump to one of them (`(table, chain, rule as saved after -A <chain>)`)."""
    chains: list[str] = []
    jumps: list[tuple[str, str, str]] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        if table not in TABLES:
            continue
        if line.startswith(":") and line[1:].startswith(prefix):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            words = shlex.split(line)
            chain = words[1]
            if chain.startswith(prefix):
                continue
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith(prefix):
                    jumps.append((table, chain, line.split(" ", 2)[2]))
    return chains, jumps


def removal(text: str, prefix: str) -> str:
    """The `iptables-restore --noflush` input removing every chain starting with `prefix` and every jump to one
    (`text`: `iptables-save`); empty if there is none."""
    chains, jumps = parse_save(text, prefix)
    out: list[str] = []
    for table in TABLES:
        here = [c for c in chains if table_of(c) == table]
        hooks = [(chain, rule) for t, chain, rule in jumps if t == table]
        if not here and not hooks:
            continue
        out.append(f"*{table}")
        out += [f"-D {chain} {rule}" for chain, rule in hooks]
        out += [f":{c} - [0:0]" for c in here]
        out += [f"-X {c}" for c in here]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""
