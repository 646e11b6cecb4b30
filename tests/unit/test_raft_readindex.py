"""Raft core: ReadIndex linearizable reads (dissertation §6.4) — the leader records its commit index, confirms it
still leads with a heartbeat round, and only then answers; followers ask the leader."""

from __future__ import annotations

import random

import pytest

from services.raftstore.raft import Config, MemoryStorage, Message, MsgType, ProposalDropped, RawNode
from tests.sim.raftnet import SimNetwork


def test_6_4_leader_answers_only_after_a_majority_acknowledges_the_heartbeat() -> None:
    net = SimNetwork(5, seed=1)
    net.elect(1)
    net.propose(1, b"x")
    net.stabilize()
    lead = net.node(1)
    lead.read_index(b"r1")
    beats = [m for m in lead.raft.msgs if m.type == MsgType.HEARTBEAT]
    assert {m.to for m in beats} == {2, 3, 4, 5} and all(m.context == b"r1" for m in beats)
    lead.raft.msgs.clear()
    lead.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=lead.term, context=b"r1"))
    assert not lead.raft.read_states, "2 of 5 is not a majority"
    lead.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=3, term=lead.term, context=b"r1"))
    [rs] = lead.raft.read_states
    assert rs.context == b"r1" and rs.index == lead.raft.log.committed


def test_6_4_a_confirmed_round_also_confirms_earlier_pending_reads() -> None:
    net = SimNetwork(3, seed=2)
    net.elect(1)
    lead = net.node(1)
    lead.read_index(b"a")
    lead.read_index(b"b")
    lead.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=lead.term, context=b"b"))
    assert [rs.context for rs in lead.raft.read_states] == [b"a", b"b"]


def test_6_4_new_leader_answers_reads_only_after_committing_an_entry_of_its_term() -> None:
    n = RawNode(Config(id=1, peers=(1, 2, 3), rng=random.Random(0), pre_vote=False), MemoryStorage())
    n.campaign()
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1))
    n.raft.msgs.clear()
    n.read_index(b"early")
    assert not [m for m in n.raft.msgs if m.type == MsgType.HEARTBEAT], "postponed until the no-op commits"
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=1, index=1))  # the no-op commits
    beats = [m for m in n.raft.msgs if m.type == MsgType.HEARTBEAT and m.context == b"early"]
    assert beats
    n.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=1, context=b"early"))
    assert [(rs.index, rs.context) for rs in n.raft.read_states] == [(1, b"early")]


def test_6_4_follower_forwards_the_read_to_the_leader_and_gets_its_commit_index() -> None:
    net = SimNetwork(3, seed=3)
    net.elect(1)
    net.propose(1, b"x")
    net.stabilize()
    net.node(2).read_index(b"f")
    net.stabilize()
    assert net.members[2].read_states == [(net.node(1).raft.log.committed, b"f")]


def test_6_4_read_without_a_known_leader_is_refused() -> None:
    n = RawNode(Config(id=1, peers=(1, 2, 3), rng=random.Random(0)), MemoryStorage())
    with pytest.raises(ProposalDropped):
        n.read_index(b"x")


def test_6_4_single_member_answers_at_once() -> None:
    n = RawNode(Config(id=1, peers=(1,), rng=random.Random(0)), MemoryStorage())
    n.campaign()
    n.read_index(b"solo")
    assert [rs.context for rs in n.ready().read_states] == [b"solo"]


@pytest.mark.parametrize("check_quorum", [True, False])
def test_6_4_a_deposed_leader_cut_off_from_the_majority_never_confirms_a_read(check_quorum: bool) -> None:
    net = SimNetwork(3, seed=4, check_quorum=check_quorum)
    net.elect(1)
    net.partition([1], [2, 3])
    net.node(1).read_index(b"stale")  # 1 still believes it leads
    for _ in range(60):
        net.step()
    new = net.leader()
    assert new in (2, 3)
    net.propose(new, b"newer")
    for _ in range(40):
        net.step()
    assert not net.members[1].read_states
