"""Raft core: log replication (§5.3), commitment (§5.4.2), the leader's no-op (§8), flow control, and the
RawNode Ready/advance contract."""

from __future__ import annotations

import random

from services.raftstore.raft import Config, Entry, HardState, MemoryStorage, Message, MsgType, RawNode, Role
from services.raftstore.raft.log import RaftLog
from tests.sim.raftnet import SimNetwork


def log_with(*terms: int) -> RaftLog:
    s = MemoryStorage()
    s.append([Entry(t, i + 1, b"%d" % (i + 1)) for i, t in enumerate(terms)])
    return RaftLog(s)


def leader_with_log(terms: list[int], term: int, peers: tuple[int, ...] = (1, 2, 3)) -> RawNode:
    """Member 1 with `terms` already in its log, just elected leader of `term`."""
    s = MemoryStorage()
    s.append([Entry(t, i + 1, b"old") for i, t in enumerate(terms)])
    s.set_hard_state(HardState(term=term - 1))
    n = RawNode(Config(id=1, peers=peers, rng=random.Random(1), pre_vote=False), s)
    n.campaign()
    for v in peers[1:]:
        n.step(Message(MsgType.VOTE_RESP, to=1, frm=v, term=term))
    assert n.role == Role.LEADER and n.term == term
    n.raft.msgs.clear()
    return n


# ---- §5.3 log matching and conflicts ----------------------------------------------------------------------
def test_5_3_follower_refuses_entries_whose_previous_entry_does_not_match() -> None:
    log = log_with(1, 1, 2)
    assert log.maybe_append(3, 3, 0, [Entry(3, 4)]) is None  # our entry 3 has term 2, not 3
    assert log.maybe_append(4, 2, 0, [Entry(3, 5)]) is None  # we have no entry 4
    assert log.maybe_append(3, 2, 0, [Entry(3, 4)]) == 4


def test_5_3_conflicting_entries_are_replaced_by_the_leaders() -> None:
    log = log_with(1, 1, 2, 2)
    assert log.maybe_append(2, 1, 0, [Entry(3, 3, b"new"), Entry(3, 4, b"new")]) == 4
    assert [e.term for e in log.slice(1, 5)] == [1, 1, 3, 3]
    assert log.unstable_offset == 3


def test_5_3_duplicate_or_stale_appends_do_not_truncate_the_log() -> None:
    log = log_with(1, 1, 2, 2)
    assert log.maybe_append(1, 1, 0, [Entry(1, 2, b"2")]) == 2
    assert log.last_index() == 4, "a matching prefix must not cut off later entries"


def test_5_3_leader_brings_divergent_followers_in_line() -> None:
    # Figure 7 in miniature: one follower missing entries, one with extra entries of an old term.
    net = SimNetwork(3, seed=1)
    net.elect(1)
    net.propose_and_deliver(1, 3, b"a")
    net.isolate(3)
    net.propose_and_deliver(1, 5, b"b")  # 3 misses these
    net.isolate(1)
    net.propose(1, b"lost")  # only on 1, never committed
    net.stabilize()
    net.heal()
    net.isolate(1)
    for _ in range(80):
        net.step()
    new = net.leader()
    assert new == 2, "3 lacks committed entries, so only 2 can win (§5.4.1)"
    net.heal()
    net.propose(2, b"c")
    for _ in range(30):
        net.step()
    logs = [[e.data for e in net.log_of(i) if e.data] for i in net.ids]
    assert logs[0] == logs[1] == logs[2]
    assert b"lost" not in logs[0] and logs[0][-1] == b"c"


def test_5_3_log_matching_holds_across_random_partitions() -> None:
    for seed in range(6):
        net = SimNetwork(5, seed=seed)
        net.drop = 0.1
        for t in range(160):
            lead = net.leader()
            if lead is not None and t % 2:
                net.propose(lead, b"%d" % t)
            if t % 40 == 0:
                side = net.rng.sample(net.ids, 2)
                net.partition(side, [i for i in net.ids if i not in side])
            net.step()  # check() runs log matching after every step


# ---- §5.4.2 and §8: what a leader may commit ---------------------------------------------------------------
def test_8_a_new_leader_appends_a_noop_of_its_term() -> None:
    n = leader_with_log([1, 1], term=3)
    last = n.raft.log.slice(3, 4)[0]
    assert (last.index, last.term, last.data) == (3, 3, b"")


def test_5_4_2_leader_never_commits_an_older_term_entry_by_counting_replicas() -> None:
    n = leader_with_log([1, 2], term=3)  # entry 2 is from term 2; the no-op is index 3
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=3, index=2))
    assert n.raft.log.committed == 0, "replicated on a majority but of an older term: not committed"
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=3, index=3))
    assert n.raft.log.committed == 3, "committing the current-term no-op commits everything before it"


def test_5_4_2_commit_needs_a_majority() -> None:
    n = leader_with_log([], term=1, peers=(1, 2, 3, 4, 5))
    idx = n.propose(b"x")
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=1, index=idx))
    assert n.raft.log.committed < idx
    n.step(Message(MsgType.APP_RESP, to=1, frm=3, term=1, index=idx))
    assert n.raft.log.committed == idx


def test_followers_learn_the_commit_index_and_apply() -> None:
    """§5.3: the leader sends no message of its own for a new commit index; the next append carries it (or the
    next heartbeat, when no write follows)."""
    net = SimNetwork(3, seed=2)
    net.elect(1)
    net.propose(1, b"x")
    net.stabilize()
    assert net.applied_data(1) == [b"x"]
    assert net.applied_data(2) == net.applied_data(3) == []  # no separate commit notice was sent
    net.propose(1, b"y")
    net.stabilize()
    assert net.applied_data(2) == net.applied_data(3) == [b"x"]  # the append of y carried x's commit
    net.tick(1)  # a heartbeat carries y's
    net.stabilize()
    assert all(net.applied_data(i) == [b"x", b"y"] for i in net.ids)


def test_a_commit_notice_costs_no_message() -> None:
    """One write on a settled 3-member cluster: one append to each follower and one answer from each, nothing
    else (before: a second, empty append per follower announcing the commit, and its answer)."""
    net = SimNetwork(3, seed=2)
    net.elect(1)
    sent: list[Message] = []
    send = net.send

    def counting(m: Message) -> None:
        sent.append(m)
        send(m)

    net.send = counting  # type: ignore[method-assign]
    net.propose(1, b"x")
    net.stabilize()
    assert sorted((m.type.name, m.frm, m.to) for m in sent) == [
        ("APP", 1, 2), ("APP", 1, 3), ("APP_RESP", 2, 1), ("APP_RESP", 3, 1)]


def test_a_minority_cannot_commit() -> None:
    net = SimNetwork(3, seed=3)
    net.elect(1)
    net.partition([1], [2, 3])
    net.propose(1, b"x")
    net.stabilize()
    assert net.node(1).raft.log.committed < net.node(1).raft.log.last_index()
    assert b"x" not in net.applied_data(1)


# ---- flow control -----------------------------------------------------------------------------------------
def test_replicate_state_limits_unacknowledged_appends() -> None:
    n = leader_with_log([], term=1)
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=1, index=1))  # probe -> replicate
    n.raft.msgs.clear()
    for k in range(400):
        n.propose(b"%d" % k)
    apps = [m for m in n.raft.msgs if m.type == MsgType.APP and m.to == 2]
    assert len(apps) == n.raft.cfg.max_inflight


def test_probe_state_sends_one_append_at_a_time() -> None:
    n = leader_with_log([], term=1)  # its first probe to 2 is out, unanswered
    for k in range(5):
        n.propose(b"%d" % k)
    assert not [m for m in n.raft.msgs if m.type == MsgType.APP and m.to == 2]
    n.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=1))  # alive: probe again, once
    assert len([m for m in n.raft.msgs if m.type == MsgType.APP and m.to == 2]) == 1


def test_a_batch_of_proposals_goes_out_as_one_append_per_follower() -> None:
    n = leader_with_log([], term=1)
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=1, index=1))
    n.step(Message(MsgType.APP_RESP, to=1, frm=3, term=1, index=1))
    n.raft.msgs.clear()
    n.propose_many([b"a", b"b", b"c"])
    apps = [m for m in n.raft.msgs if m.type == MsgType.APP]
    assert sorted(m.to for m in apps) == [2, 3] and all(len(m.entries) == 3 for m in apps)


def test_messages_respect_the_size_limit() -> None:
    net = SimNetwork(3, seed=4, max_size_per_msg=1000)
    net.elect(1)
    for k in range(20):
        net.propose(1, bytes(300) + b"%d" % k)
    for i in net.ids:
        while net.process(i):
            pass
    apps = [m for _, _, m in net._queue if m.type == MsgType.APP]
    assert apps and all(sum(len(e.data) for e in m.entries) <= 1000 or len(m.entries) == 1 for m in apps)
    net.stabilize()
    net.tick(1)  # the last commit index reaches the followers with the next heartbeat
    net.stabilize()
    assert len(net.applied_data(3)) == 20


# ---- Ready / advance --------------------------------------------------------------------------------------
def test_ready_carries_what_to_persist_send_and_apply_and_advance_consumes_it() -> None:
    n = RawNode(Config(id=1, peers=(1,), rng=random.Random(0)), MemoryStorage())
    n.campaign()
    rd = n.ready()
    assert rd.soft_state is not None and rd.soft_state.role == Role.LEADER
    assert rd.hard_state == HardState(term=1, vote=1, commit=1) and rd.must_sync
    assert [e.index for e in rd.entries] == [1] and [e.index for e in rd.committed_entries] == [1]
    storage = n.raft.log.storage
    assert isinstance(storage, MemoryStorage)
    storage.append(rd.entries)
    storage.set_hard_state(rd.hard_state)
    n.advance(rd)
    assert not n.has_ready()
    assert n.raft.log.applied == 1 and not n.raft.log.unstable


def test_restart_restores_term_vote_commit_and_reapplies_committed_entries() -> None:
    s = MemoryStorage()
    s.append([Entry(1, 1), Entry(1, 2, b"x"), Entry(2, 3, b"y")])
    s.set_hard_state(HardState(term=2, vote=3, commit=2))
    n = RawNode(Config(id=1, peers=(1, 2, 3), rng=random.Random(0)), s)
    assert (n.term, n.raft.vote, n.raft.log.committed) == (2, 3, 2)
    rd = n.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"x"]
    assert rd.hard_state is None and not rd.entries


def test_a_long_committed_log_is_handed_out_in_slices() -> None:
    s = MemoryStorage()
    s.append([Entry(1, i, bytes(100)) for i in range(1, 51)])
    s.set_hard_state(HardState(term=1, commit=50))
    n = RawNode(Config(id=1, peers=(1, 2, 3), rng=random.Random(0), max_committed_size_per_ready=1000), s)
    sizes = []
    while n.has_ready():
        rd = n.ready()
        sizes.append(len(rd.committed_entries))
        n.advance(rd)
    assert sum(sizes) == 50 and max(sizes) == 10


def test_a_follower_answers_appends_taken_in_one_turn_once() -> None:
    """Acks are cumulative: appends a follower takes before its next Ready get one answer, for the highest index
    (after persisting them all); an answer already handed out in a Ready is never changed."""
    s = MemoryStorage()
    s.set_hard_state(HardState(term=1))
    n = RawNode(Config(id=2, peers=(1, 2, 3), rng=random.Random(1)), s)
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=0, log_term=0, entries=(Entry(1, 1, b"a"),)))
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=1, log_term=1, entries=(Entry(1, 2, b"b"),)))
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=2, log_term=1, entries=(Entry(1, 3, b"c"),)))
    rd = n.ready()
    assert [(m.type, m.index) for m in rd.messages] == [(MsgType.APP_RESP, 3)]
    assert [e.index for e in rd.entries] == [1, 2, 3]
    # taken by a Ready: a later append gets an answer of its own, the one handed out stays as it was
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=3, log_term=1, entries=(Entry(1, 4, b"d"),)))
    assert rd.messages[0].index == 3
    s.append(rd.entries)
    n.advance(rd)
    rd2 = n.ready()
    assert [(m.type, m.index) for m in rd2.messages] == [(MsgType.APP_RESP, 4)]
    # a refusal is never folded into an ack, nor an ack into a refusal
    s.append(rd2.entries)
    n.advance(rd2)
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=9, log_term=1, entries=(Entry(1, 10, b"x"),)))
    n.step(Message(MsgType.APP, to=2, frm=1, term=1, index=4, log_term=1, entries=(Entry(1, 5, b"e"),)))
    assert [(m.reject, m.index) for m in n.ready().messages] == [(True, 9), (False, 5)]
