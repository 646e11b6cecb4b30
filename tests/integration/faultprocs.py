"""FaultyRaftProcs: RaftProcs with a fault-injecting proxy on every directed peer link, SIGSTOP/SIGCONT, and
size-limited tmpfs data directories.

Each member dials its peers at the addresses of its own SHOAL_RAFT_MEMBERS and listens on the peer port of its
own entry, so member i gets a members string in which every other member j's peer address is the proxy port of
the link i→j (`tests/tools/faultproxy.py`). One link per direction gives isolation, splits and one-way drops
without touching the product. API URLs stay direct (write forwarding between members is not proxied).

That string is only the bootstrap membership: a member that installs a snapshot from the leader (or restarts
from one) adopts the member table inside it — the leader's view, i.e. the leader's links. Its traffic still
flows through proxies, but under other links' names; `cut()`/`partition()` check for that first
(`check_routing`) rather than silently cut the wrong links."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

from tests.integration.raftprocs import RaftProcs, free_ports
from tests.tools.faultproxy import Mode, ProxyControl, ProxyProcess


def link_name(src: int, dst: int) -> str:
    return f"{src}->{dst}"


class FaultyRaftProcs(RaftProcs):
    def __init__(self, base: Path, members: int = 3, *, tick: float = 0.05, election_ticks: int = 12,
                 extra_env: dict[str, str] | None = None, proxy: ProxyControl | None = None) -> None:
        super().__init__(base, members, tick=tick, election_ticks=election_ticks, nats_url="", extra_env=extra_env)
        # Every port this cluster listens on, chosen at once below the kernel's ephemeral range: a port picked
        # free in that range can be taken by an outgoing connection (or a proxy link) before its member binds it.
        links = [(i, j) for i in self.ids for j in self.ids if i != j]
        ports = quiet_ports(2 * members + len(links))
        self.api_ports = {i: ports[i - 1] for i in self.ids}
        self.peer_ports = {i: ports[members + i - 1] for i in self.ids}
        self.spec = self.spec_of({i: self.peer_ports[i] for i in self.ids})
        self.env_common["SHOAL_RAFT_MEMBERS"] = self.spec
        self.mounts: list[Path] = []
        self.paused: set[int] = set()
        self.proxy: ProxyControl = proxy or ProxyProcess(log=base / "logs" / "faultproxy.log")
        try:
            self.link_ports = {
                (i, j): self.proxy.add_link(link_name(i, j), "127.0.0.1", self.peer_ports[j], ports[2 * members + k])
                for k, (i, j) in enumerate(links)}
        except BaseException:
            self.proxy.close()
            raise

    def members_spec(self, i: int) -> str:
        def peer_port(j: int) -> int:
            return self.peer_ports[j] if j == i else self.link_ports[(i, j)]

        return self.spec_of({j: peer_port(j) for j in self.ids})

    def routing_drift(self) -> dict[int, dict[int, str]]:
        """Live members that no longer dial their peers through their own links, with the table they use. The
        members string is only the *bootstrap* membership: a member that installs a leader's snapshot (or
        restarts from one) takes the member table of that snapshot, whose peer addresses are the links of the
        member that wrote it, and a link fault would then cut other traffic than its name says."""
        drift: dict[int, dict[int, str]] = {}
        for i in self.live():
            st = self.status(i)
            if st is None:
                continue
            table = {int(m["id"]): m["peer_addr"] for m in st.get("members", [])}
            want = {j: f"127.0.0.1:{self.peer_ports[j] if j == i else self.link_ports[(i, j)]}" for j in self.ids}
            if table != want:
                drift[i] = table
        return drift

    def check_routing(self) -> None:
        drift = self.routing_drift()
        assert not drift, (f"members {sorted(drift)} no longer dial their peers through their own proxy links "
                           f"(they took another member's table from a snapshot): {drift}")

    # ---- network faults -----------------------------------------------------------------------------------
    def links(self, src: Iterable[int], dst: Iterable[int]) -> list[str]:
        dsts = list(dst)
        return [link_name(i, j) for i in src for j in dsts if i != j]

    def cut(self, src: Iterable[int], dst: Iterable[int], *, both_ways: bool = True,
            mode: Mode = Mode.DROP) -> None:
        """Stop traffic from `src` to `dst` (and back, unless `both_ways` is False)."""
        a, b = list(src), list(dst)
        names = self.links(a, b) + (self.links(b, a) if both_ways else [])
        self.check_routing()
        self.proxy.set(names, mode)

    def isolate(self, i: int, mode: Mode = Mode.DROP) -> None:
        self.cut([i], [j for j in self.ids if j != i], mode=mode)

    def partition(self, *groups: Iterable[int], mode: Mode = Mode.DROP) -> None:
        """Split the cluster: no traffic between members of different groups (members in no group are alone)."""
        sides = [set(g) for g in groups]
        side = {i: k for k, g in enumerate(sides) for i in g}
        names = [link_name(i, j) for i in self.ids for j in self.ids
                 if i != j and side.get(i, -i) != side.get(j, -j)]
        self.check_routing()
        self.proxy.set(names, mode)

    def delay(self, delay_ms: float, jitter_ms: float = 0.0, names: Iterable[str] | None = None) -> None:
        self.proxy.set(names, delay_ms=delay_ms, jitter_ms=jitter_ms)

    def heal(self) -> None:
        self.proxy.heal()

    # ---- process faults -----------------------------------------------------------------------------------
    def pause(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def live(self) -> list[int]:
        return [i for i in self.ids if self.alive(i) and i not in self.paused]

    # ---- disks --------------------------------------------------------------------------------------------
    def mount_tmpfs(self, i: int, size: str = "2m") -> Path:
        """Put member i's data directory on its own tmpfs of `size` (before starting it); unmounted by close()."""
        d = self.data_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], check=True,
                       capture_output=True)
        self.mounts.append(d)
        return d

    def close(self) -> None:
        try:
            for i in list(self.paused):
                with contextlib.suppress(OSError):
                    self.resume(i)
            super().close()
        finally:
            self.proxy.close()
            for d in reversed(self.mounts):
                done = subprocess.run(["umount", str(d)], capture_output=True)
                if done.returncode != 0:  # still busy (a child not yet reaped): detach it now, freed when idle
                    subprocess.run(["umount", "-l", str(d)], capture_output=True)
            self.mounts.clear()


def quiet_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports that are free now, below the ephemeral port range when there is room for them."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low - 10000 < 4 * n:
        return free_ports(n)
    socks: list[socket.socket] = []
    try:
        for port in random.sample(range(10000, low), min(low - 10000, 50 * n)):
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
            if len(socks) == n:
                return [x.getsockname()[1] for x in socks]
        raise RuntimeError(f"no {n} free ports below {low}")
    finally:
        for x in socks:
            x.close()


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `directory` with a file, leaving about `leave` bytes; returns the file (delete it
    to free the space)."""
    path = directory / "filler"
    with open(path, "wb") as f:
        chunk = b"\0" * 65536
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(chunk[: max(1, min(len(chunk), free - leave))])
                f.flush()
            except OSError:
                break
    return path
