"""The raftstore's membership policy, out of its routes (services/raftstore/membership.py): which member may be
added (ids never come back, addresses and node ids are unique), which may be removed (not the last voter, not
below a reachable quorum), which learner is promoted; and `RaftConfig`, the routes' typed view of the Raft
configuration."""

from __future__ import annotations

import pytest

from services.raftstore.membership import Membership, check_addable, check_removable, promotable
from services.raftstore.settings import MemberInfo
from services.raftstore.status import RaftConfig
from shoal.errors import Conflict, NotFound


def cluster(n: int = 3, removed: tuple[int, ...] = ()) -> Membership:
    return Membership([MemberInfo(i, f"https://10.0.0.{i}:4301", f"10.0.0.{i}", 4311, f"node{i}")
                       for i in range(1, n + 1)], removed)


def test_a_new_member_needs_a_fresh_id_and_its_own_addresses_and_node_id() -> None:
    ms = cluster(removed=(7,))
    check_addable(ms, 4, "https://10.0.0.4:4301", "10.0.0.4:4311", "node4")  # fine
    with pytest.raises(Conflict, match="can never come back"):
        check_addable(ms, 7, "https://10.0.0.7:4301", "10.0.0.7:4311", "node7")
    with pytest.raises(Conflict, match="already in the cluster"):
        check_addable(ms, 2, "https://10.0.0.9:4301", "10.0.0.9:4311", "node9")
    for api, peer, node in (("https://10.0.0.1:4301", "10.0.0.9:4311", "node9"),
                            ("https://10.0.0.9:4301", "10.0.0.1:4311", "node9"),
                            ("https://10.0.0.9:4301", "10.0.0.9:4311", "node1")):
        with pytest.raises(Conflict, match="member 1 already uses"):
            check_addable(ms, 4, api, peer, node)
    assert ms.next_id() == 8


def test_removal_refuses_unknown_and_removed_members_with_404() -> None:
    ms = cluster(removed=(5,))
    with pytest.raises(NotFound, match="already removed"):
        check_removable((1, 2, 3), (), ms, 5, lambda _: True)
    with pytest.raises(NotFound, match=r"members are \[1, 2, 3\]"):
        check_removable((1, 2, 3), (), ms, 9, lambda _: True)


def test_removal_keeps_a_reachable_quorum_and_a_last_voter() -> None:
    ms = cluster()
    check_removable((1, 2, 3), (), ms, 3, lambda _: True)
    check_removable((1, 2, 3), (4,), ms, 4, lambda _: False)  # a learner never counts toward quorum
    with pytest.raises(Conflict, match="short of the quorum of 2"):
        check_removable((1, 2, 3), (), ms, 3, lambda v: v == 1)
    with pytest.raises(Conflict, match="last voter"):
        check_removable((1,), (), ms, 1, lambda _: True)


def test_the_first_caught_up_learner_is_promoted() -> None:
    assert promotable((4, 5), {4: 10, 5: 990}, 1000, 64) == 5
    assert promotable((4, 5), {4: 950, 5: 990}, 1000, 64) == 4
    assert promotable((4,), {4: 0}, 10, 64) is None  # nothing replicated yet
    assert promotable((4,), {}, 10, 64) is None  # a follower knows no progress


def test_raft_config_names_each_members_role() -> None:
    conf = RaftConfig((1, 2), (3,), {1: 5})
    assert [conf.role_of(i) for i in (1, 3, 9)] == ["voter", "learner", "unknown"]
    assert conf.has(3) and not conf.has(9)
