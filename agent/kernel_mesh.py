"""The routing mesh's kernel path, shell (docs/networking.md, "Kernel path"): runs the iptables rules of
`shoal.meshrules` for the node's ingress published ports (TCP and UDP) with `iptables-restore --noflush`, one
transaction per table, rewriting only the chains that changed; finds its node's chains again after a restart
(by name) and removes them at exit. `check` says what the machine lacks for it, in a scratch chain."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from shoal import meshrules
from shoal.iptables import KernelError, Runner, restore, run, save

log = logging.getLogger(__name__)

ROUTE_LOCALNET = Path("/proc/sys/net/ipv4/conf/all/route_localnet")
TOOLS = ("iptables-save", "iptables-restore")


def check(runner: Runner = run, route_localnet: Path = ROUTE_LOCALNET) -> list[str]:
    """What the kernel path lacks on this machine (empty: it works): root, the iptables tools, a writable
    `route_localnet` (set to 1: DNAT to 127.0.0.N addresses), and the kernel taking a chain with the rules the
    mesh makes (statistic, DNAT, conntrack, MASQUERADE) — tried in a scratch chain, deleted after."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (iptables needs CAP_NET_ADMIN)")
    missing += [f"the {t} command" for t in TOOLS if shutil.which(t) is None]
    if missing:
        return missing
    try:
        if route_localnet.read_text().strip() != "1":
            route_localnet.write_text("1\n")
    except OSError as e:
        missing.append(f"net.ipv4.conf.all.route_localnet=1 ({route_localnet}: {e})")
    scratch = f"{meshrules.PREFIX}check-{os.getpid() % 100000}"
    desired = meshrules.plan(scratch, "127.0.0.2", {("tcp", 9): [("127.0.0.3", 9), ("127.0.0.4", 9)],
                                                    ("udp", 9): [("127.0.0.3", 9)]})
    try:
        restore(runner, meshrules.restore_text(desired, [], None, [], scratch))
    except KernelError as e:
        missing.append(f"the kernel's iptables nat support for the mesh's rules ({e})")
    finally:
        try:
            text = meshrules.removal(save(runner), scratch)
            if text:
                restore(runner, text)
        except KernelError as e:
            log.warning("kernel mesh: cannot remove the scratch chain %s: %s", scratch, e)
    return missing


class KernelMesh:
    """One node's kernel load balancing: `apply` the routes of each table, `remove` everything at exit."""

    def __init__(self, node_tag: str, runner: Runner = run) -> None:
        self.tag = node_tag
        self.runner = runner
        self.applied: meshrules.Chains | None = None  # what this process installed last (None: unknown)
        self.routes: dict[str, list[str]] = {}
        self.error: str | None = None

    def apply(self, node_addr: str, routes: meshrules.Routes) -> None:
        """Make the node's chains say `routes` (one iptables-restore transaction; nothing if nothing changed).
        Errors are logged and kept for the status, never raised: the next table tries again."""
        desired = meshrules.plan(self.tag, node_addr, routes)
        try:
            chains, jumps = meshrules.parse_save(save(self.runner), self.tag)
            hooked = {chain for _, chain, rule in jumps
                      if rule.split("-j ")[-1].strip() in {self.tag + suffix for _, _, suffix in meshrules.HOOKS}}
            missing = [b for _, b, _ in meshrules.HOOKS if b not in hooked]
            text = meshrules.restore_text(desired, chains, self.applied, missing, self.tag)
            if text:
                restore(self.runner, text)
                changed = [c for c in desired if self.applied is None or self.applied.get(c) != desired[c]]
                log.info("kernel mesh: chains %s rewritten%s", ", ".join(changed) or "none",
                         f", {', '.join(sorted(set(chains) - set(desired)))} removed"
                         if set(chains) - set(desired) else "")
            self.applied = desired
            self.error = None
        except KernelError as e:
            self.applied = None  # unknown now: the next table rewrites everything
            if self.error != str(e):
                log.error("kernel mesh: cannot apply the table's rules: %s", e)
            self.error = str(e)
        self.routes = {f"{p}/{port}": [f"{h}:{hp}" for h, hp in backends]
                       for (p, port), backends in sorted(routes.items()) if p in meshrules.PROTOCOLS}

    def remove(self) -> None:
        try:
            text = meshrules.removal(save(self.runner), self.tag)
            if text:
                restore(self.runner, text)
                log.info("kernel mesh: removed the chains %s*", self.tag)
        except KernelError as e:
            log.error("kernel mesh: cannot remove the chains %s*: %s", self.tag, e)
        self.applied = None

    def status(self) -> dict[str, Any]:
        return {"chains": self.tag + "*", "error": self.error, "ports": self.routes}
