"""What the Driver (services/raftstore/driver.py) tells the API about this member: leader or not, term,
commit and applied indexes, which peers it heard from, readiness. A part of `Driver`, which holds the state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.raftstore.raft import NONE, Role

if TYPE_CHECKING:
    from services.raftstore.driver_config import DriverConfig
    from services.raftstore.fsm import FSM
    from services.raftstore.raft import RawNode


class DriverState:
    """The read-only state methods of `Driver`; the attributes below are the driver's."""

    cfg: DriverConfig
    node: RawNode
    fsm: FSM
    role: Role
    lead: int
    _heard: dict[int, int]
    _tick_count: int

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    @property
    def leader_id(self) -> int | None:
        return self.lead or None

    @property
    def term(self) -> int:
        return self.node.term

    @property
    def commit_index(self) -> int:
        return self.node.raft.log.committed

    @property
    def applied_index(self) -> int:
        return self.fsm.applied_index

    def heard_recently(self, member_id: int) -> bool:
        """Heard from that member within the last election timeout."""
        at = self._heard.get(member_id)
        return at is not None and self._tick_count - at <= self.cfg.election_ticks

    def ready(self) -> bool:
        """Knows a leader and has applied everything it knows to be committed."""
        return self.lead != NONE and self.applied_index >= self.commit_index
