"""Typed views of a member's Raft state for the API: `RaftConfig` (voters, learners, and — on the leader — each
member's match index) is the one place the routes read the Raft core's configuration, and `Status` is what
`GET /v1/status` answers (the contract in shoal/store/client.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.raftstore.driver import Driver
from services.raftstore.member import Member


@dataclass(frozen=True)
class RaftConfig:
    """The Raft configuration as this member knows it. `match` is filled on the leader only (followers do not
    track their peers' progress)."""

    voters: tuple[int, ...]
    learners: tuple[int, ...]
    match: Mapping[int, int] = field(default_factory=dict)

    def role_of(self, member_id: int) -> str:
        return "voter" if member_id in self.voters else "learner" if member_id in self.learners else "unknown"

    def has(self, member_id: int) -> bool:
        return member_id in self.voters or member_id in self.learners


def raft_config(driver: Driver) -> RaftConfig:
    raft = driver.node.raft
    match = {m: pr.match for m, pr in raft.prs.items()} if driver.is_leader else {}
    return RaftConfig(tuple(raft.voters), tuple(raft.learners), match)


@dataclass(frozen=True)
class Status:
    """`GET /v1/status` of one member."""

    id: int
    role: str
    leader: int | None
    leader_url: str | None
    term: int
    commit_index: int
    applied_index: int
    state_hash: str | None
    members: list[dict[str, Any]]
    voters: list[int]
    learners: list[int]
    removed: list[int]
    snapshot_index: int
    first_index: int
    peers_connected: dict[int, bool]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status_of(member: Member, state_hash: str | None) -> Status:
    driver = member.driver
    leader = member.member(driver.leader_id)
    conf = raft_config(driver)
    return Status(
        id=member.me.id, role=driver.role.label, leader=driver.leader_id,
        leader_url=leader.api_url if leader else None, term=driver.term, commit_index=driver.commit_index,
        applied_index=driver.applied_index, state_hash=state_hash, members=[m.to_json() for m in member.members],
        voters=list(conf.voters), learners=list(conf.learners), removed=sorted(driver.membership.removed),
        snapshot_index=driver.storage.snapshot().index, first_index=driver.storage.first_index(),
        peers_connected=member.transport.connected())
