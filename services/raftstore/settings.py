"""RaftstoreSettings: SHOAL_* environment of one raftstore member (built once in __main__).

`SHOAL_RAFT_MEMBERS` lists the whole cluster as `id=api_url,peer_host:peer_port,node_id` items separated by
`;`, e.g. `1=https://127.0.0.1:4301,127.0.0.1:4311,n1;2=https://127.0.0.1:4302,127.0.0.1:4312,n2;3=...`. The
node id is the CN of that member's certificate: raft peers are recognised by it, never by their address (a
member without one cannot be peered with). Empty means a single-member cluster serving on SHOAL_HOST/SHOAL_PORT
with its peer port at SHOAL_PORT+10. It is the *bootstrap* membership: once the cluster has data, membership
lives in the log (POST/DELETE /v1/members).

`SHOAL_RAFT_JOIN=1` starts a member that joins an existing cluster (after `POST /v1/members` on it): it
waits, empty, for the leader's snapshot. Its SHOAL_RAFT_MEMBERS lists the current members and itself (like
etcd's --initial-cluster-state=existing): the addresses to answer the leader at; who votes comes with the
snapshot.
`SHOAL_FORCE_NEW_CLUSTER=1` (or `--force-new-cluster`) restarts a surviving member as a single-member cluster
with its data, for when a majority is lost for good."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoal.config import CommonSettings


@dataclass(frozen=True)
class MemberInfo:
    id: int
    api_url: str
    peer_host: str
    peer_port: int
    node_id: str = ""  # the CN of the member's certificate ("" only in data written before mutual TLS)

    @property
    def peer_addr(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "api_url": self.api_url, "peer_addr": self.peer_addr}
        if self.node_id:
            out["node_id"] = self.node_id
        return out


def parse_peer(addr: str) -> tuple[str, int]:
    """`host:port` (IPv6 hosts in brackets); raises ValueError."""
    host, port = addr.rsplit(":", 1)
    return host.strip().strip("[]"), int(port)


def parse_members(spec: str) -> list[MemberInfo]:
    """Parse SHOAL_RAFT_MEMBERS; raises ValueError with the offending item."""
    out: list[MemberInfo] = []
    for item in (x.strip() for x in spec.split(";")):
        if not item:
            continue
        try:
            ident, rest = item.split("=", 1)
            fields = [p.strip() for p in rest.split(",")]
            if len(fields) not in (2, 3):
                raise ValueError(rest)
            host, port = parse_peer(fields[1])
            node_id = fields[2] if len(fields) == 3 else ""
            member = MemberInfo(int(ident), fields[0].rstrip("/"), host, port, node_id)
        except ValueError as e:
            raise ValueError(f"SHOAL_RAFT_MEMBERS: cannot parse {item!r}: expected "
                             "'id=https://host:port,peer_host:peer_port,node_id'") from e
        if member.id <= 0 or not member.api_url.startswith(("http://", "https://")):
            raise ValueError(f"SHOAL_RAFT_MEMBERS: {item!r} needs a positive id and an http(s) API URL")
        out.append(member)
    ids = [m.id for m in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"SHOAL_RAFT_MEMBERS: duplicate member ids in {ids}")
    return sorted(out, key=lambda m: m.id)


class RaftstoreSettings(CommonSettings):
    raft_id: int = 1
    raft_members: str = ""
    data_dir: Path = Path("data/raft")
    raft_tick: float = 0.1  # seconds per tick
    raft_election_ticks: int = 6  # election timeout, randomized up to 2x (0.6-1.2 s with 0.1 s ticks)
    raft_heartbeat_ticks: int = 1
    read_timeout: float = 5.0
    snapshot_interval: int = 10_000  # applied entries between snapshots
    snapshot_tail: int = 500  # entries kept after a snapshot for slow followers
    snapshot_bytes: int = 8 << 20  # or bytes of entries applied since the last snapshot (or its size, if more)
    snapshot_tail_bytes: int = 2 << 20  # and at most this many bytes of entries kept after a snapshot
    watch_history_bytes: int = 16 << 20  # packed (compressed) events kept for watchers (shoal/store/history.py)
    fsync_in_thread: bool = False  # fsync on a worker thread while the loop keeps serving (docs/performance.md)
    disk_reserve: int = 16 << 20  # bytes free below which the leader refuses writes
    raft_max_message: int = 256 << 20  # largest raft peer message (a snapshot of the whole store) sent or taken
    list_cache_bytes: int = 256 << 20  # encoded objects kept for list answers (services/raftstore/encoded.py); 0: none
    raft_join: bool = False
    #: SHOAL_RAFT_BENCH_PLAINTEXT=1: the benchmark's control only (bench/raftstore.py --at-rest both): records are
    #: framed as usual but not encrypted (atrest.PlainSealer). Data written so opens only in this mode and data
    #: written encrypted never opens in it; the member logs a warning at every start. Never set it elsewhere.
    raft_bench_plaintext: bool = False
    force_new_cluster: bool = False

    def members(self) -> list[MemberInfo]:
        members = parse_members(self.raft_members)
        if not members:
            port = self.port or 4301
            members = [MemberInfo(self.raft_id, f"https://{self.host}:{port}", self.host, port + 10)]
        if self.raft_id not in {m.id for m in members}:
            raise ValueError(f"SHOAL_RAFT_ID={self.raft_id} is not in SHOAL_RAFT_MEMBERS "
                             f"({[m.id for m in members]})")
        return members

    def me(self) -> MemberInfo:
        return next(m for m in self.members() if m.id == self.raft_id)

    def api_port(self) -> int:
        """SHOAL_PORT, or the port of this member's API URL when SHOAL_PORT is 0."""
        if self.port:
            return self.port
        from urllib.parse import urlsplit

        return urlsplit(self.me().api_url).port or 80
