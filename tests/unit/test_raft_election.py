"""Raft core: leader election (§5.2), the election restriction (§5.4.1), terms (§5.1), PreVote and CheckQuorum
(dissertation §9.6, §6.2). Each test checks one rule on RawNodes wired by the in-memory SimNetwork."""

from __future__ import annotations

import random

import pytest

from services.raftstore.raft import (
    Config,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    ProposalDropped,
    RawNode,
    Role,
    Snapshot,
)
from tests.sim.raftnet import SimNetwork


def node(i: int = 1, peers: tuple[int, ...] = (1, 2, 3), storage: MemoryStorage | None = None,
         **kw: object) -> RawNode:
    return RawNode(Config(id=i, peers=peers, rng=random.Random(i), **kw), storage or MemoryStorage())  # type: ignore[arg-type]


def sent(n: RawNode, t: MsgType | None = None) -> list[Message]:
    msgs = list(n.raft.msgs)
    n.raft.msgs.clear()
    return [m for m in msgs if t is None or m.type == t]


def ticks(n: RawNode, k: int) -> None:
    for _ in range(k):
        n.tick()


def test_5_2_follower_campaigns_after_its_randomized_election_timeout() -> None:
    n = node(pre_vote=False)
    timeout = n.raft.randomized_election_timeout
    assert 10 <= timeout < 20
    for _ in range(timeout - 1):
        n.tick()
    assert n.role == Role.FOLLOWER
    n.tick()
    assert n.role == Role.CANDIDATE and n.term == 1 and n.raft.vote == 1
    votes = sent(n, MsgType.VOTE)
    assert {m.to for m in votes} == {2, 3} and all(m.term == 1 for m in votes)


def test_5_2_randomized_timeouts_differ_between_members() -> None:
    timeouts = {node(i, peers=tuple(range(1, 9))).raft.randomized_election_timeout for i in range(1, 9)}
    assert len(timeouts) > 1 and all(10 <= t < 20 for t in timeouts)


def test_5_2_candidate_with_a_majority_of_votes_becomes_leader() -> None:
    n = node(peers=(1, 2, 3, 4, 5), pre_vote=False)
    n.campaign()
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1))
    assert n.role == Role.CANDIDATE
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=3, term=1))
    assert n.role == Role.LEADER and n.lead == 1


def test_5_2_candidate_rejected_by_a_majority_returns_to_follower() -> None:
    n = node(pre_vote=False)
    n.campaign()
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1, reject=True))
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=3, term=1, reject=True))
    assert n.role == Role.FOLLOWER and n.term == 1


def test_5_2_each_member_votes_at_most_once_per_term() -> None:
    n = node()
    n.step(Message(MsgType.VOTE, to=1, frm=2, term=1))
    assert not sent(n, MsgType.VOTE_RESP)[0].reject
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=1))
    assert sent(n, MsgType.VOTE_RESP)[0].reject
    n.step(Message(MsgType.VOTE, to=1, frm=2, term=1))  # a retransmitted request is granted again
    assert not sent(n, MsgType.VOTE_RESP)[0].reject


def test_5_2_candidate_follows_a_leader_of_its_own_term() -> None:
    n = node(pre_vote=False)
    n.campaign()
    n.step(Message(MsgType.APP, to=1, frm=2, term=1))
    assert n.role == Role.FOLLOWER and n.lead == 2


def test_5_2_election_safety_one_leader_per_term_under_split_votes() -> None:
    # Everyone campaigns at once, repeatedly; SimNetwork.check() asserts one leader per term each step.
    for seed in range(20):
        net = SimNetwork(5, seed=seed, pre_vote=False)
        for i in net.ids:
            net.node(i).campaign()
        for _ in range(60):
            net.step()
        assert net.leader() is not None


def test_5_4_1_vote_denied_to_a_candidate_with_a_less_up_to_date_log() -> None:
    s = MemoryStorage()
    s.append([Entry(1, 1), Entry(2, 2)])
    s.set_hard_state(HardState(term=2))
    n = node(storage=s)
    # same last term, shorter log
    n.step(Message(MsgType.VOTE, to=1, frm=2, term=3, index=1, log_term=2))
    assert sent(n, MsgType.VOTE_RESP)[0].reject
    # older last term, longer log
    n.step(Message(MsgType.VOTE, to=1, frm=2, term=4, index=9, log_term=1))
    assert sent(n, MsgType.VOTE_RESP)[0].reject
    # higher last term wins even with a shorter log
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=5, index=1, log_term=3))
    assert not sent(n, MsgType.VOTE_RESP)[0].reject


def test_5_1_a_higher_term_turns_a_leader_into_a_follower() -> None:
    net = SimNetwork(3, seed=2, check_quorum=False)  # with check-quorum, see test_raft_hostile.py
    net.elect(1)
    net.node(1).step(Message(MsgType.APP, to=1, frm=2, term=5))
    assert net.node(1).role == Role.FOLLOWER and net.node(1).term == 5 and net.node(1).lead == 2


def test_5_1_messages_from_an_older_term_are_ignored() -> None:
    s = MemoryStorage()
    s.append([Entry(1, 1)])
    s.set_hard_state(HardState(term=5))
    n = node(storage=s, pre_vote=False, check_quorum=False)
    n.step(Message(MsgType.APP, to=1, frm=3, term=3, index=1, log_term=1, entries=(Entry(3, 2, b"x"),)))
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=4, index=9, log_term=4))
    assert (n.term, n.lead, n.raft.log.last_index(), n.raft.vote) == (5, 0, 1, 0)
    # both are refused with our term (Figure 2, AppendEntries and RequestVote rule 1), nothing else happens
    assert [(m.type, m.to, m.term) for m in n.raft.msgs] == [(MsgType.APP_RESP, 3, 5), (MsgType.VOTE_RESP, 3, 5)]
    assert n.raft.msgs[1].reject


def test_figure_2_a_stale_leader_learns_its_term_from_a_refused_append_even_without_check_quorum() -> None:
    """Figure 2, AppendEntries rule 1: the refusal carries currentTerm "for leader to update itself". Without
    check-quorum nothing else may ever tell it: the candidates that raised the follower's term can be members
    it removed and no longer hears (issue 17, seed 53917: a stale leader of term 8 kept leading for ever)."""
    lead = node(1, peers=(1, 2), pre_vote=False, check_quorum=False)
    lead.campaign()
    lead.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1))
    assert lead.role == Role.LEADER
    (app,) = sent(lead, MsgType.APP)
    s = MemoryStorage()
    s.set_hard_state(HardState(term=9))
    follower = node(2, peers=(1, 2), storage=s, pre_vote=False, check_quorum=False)
    follower.step(app)
    (refusal,) = sent(follower, MsgType.APP_RESP)
    assert refusal.term == 9
    lead.step(refusal)
    assert lead.role == Role.FOLLOWER and lead.term == 9


def test_single_member_elects_itself_and_commits_alone() -> None:
    n = node(peers=(1,))
    for _ in range(20):
        n.tick()
    assert n.role == Role.LEADER
    idx = n.propose(b"x")
    rd = n.ready()
    assert [e.index for e in rd.committed_entries][-1] == idx


def test_prevote_does_not_change_term_or_vote() -> None:
    n = node()
    n.step(Message(MsgType.PRE_VOTE, to=1, frm=2, term=1, index=0, log_term=0))
    resp = sent(n, MsgType.PRE_VOTE_RESP)[0]
    assert not resp.reject and resp.term == 1
    assert n.term == 0 and n.raft.vote == 0


def test_prevote_a_partitioned_member_does_not_inflate_its_term_or_disrupt_the_leader() -> None:
    net = SimNetwork(3, seed=4)
    net.elect(1)
    term = net.node(1).term
    net.isolate(3)
    for _ in range(100):
        net.step()
    assert net.node(3).term == term, "pre-vote rounds never bump the term"
    net.heal()
    for _ in range(30):
        net.step()
    assert net.leader() == 1 and net.node(1).term == term


def test_without_prevote_a_rejoining_member_forces_a_new_term() -> None:
    net = SimNetwork(3, seed=4, pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.node(1).term
    net.isolate(3)
    for _ in range(100):
        net.step()
    assert net.node(3).term > term + 2


def test_check_quorum_a_leader_cut_off_from_the_majority_steps_down() -> None:
    net = SimNetwork(5, seed=5)
    net.elect(1)
    net.partition([1, 2], [3, 4, 5])
    for _ in range(60):
        net.step()
    assert net.node(1).role != Role.LEADER
    assert net.leader() in (3, 4, 5)


def test_check_quorum_followers_ignore_candidates_while_the_leader_is_alive() -> None:
    net = SimNetwork(3, seed=6, pre_vote=False)
    net.elect(1)
    term = net.node(2).term
    net.node(2).step(Message(MsgType.VOTE, to=2, frm=3, term=term + 1, index=99, log_term=99))
    assert net.node(2).term == term and not net.node(2).raft.msgs, "in lease: the request is ignored"


def test_proposals_on_a_follower_are_dropped() -> None:
    net = SimNetwork(3, seed=7)
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net.node(2).propose(b"x")


def test_figure_2_adopting_a_candidates_term_does_not_restart_the_election_timer() -> None:
    """Figure 2 (Followers): the timer restarts on hearing from the current leader or on granting a vote. A
    candidate that can never win — here its log is behind ours — must not hold our campaign back with each new
    term it starts (issue 17: a stale member kept the only electable one from ever campaigning)."""
    s = MemoryStorage()
    s.append([Entry(1, 1), Entry(2, 2)])
    s.set_hard_state(HardState(term=2))
    n = node(storage=s, pre_vote=False)
    timeout = n.raft.randomized_election_timeout
    for k in range(timeout - 1):
        n.tick()
        n.step(Message(MsgType.VOTE, to=1, frm=3, term=3 + k, index=1, log_term=1))  # stale: refused
        assert n.term == 3 + k and n.raft.vote == 0
    sent(n)
    n.tick()
    assert n.role == Role.CANDIDATE and n.term == timeout + 2, "campaigned on its own schedule"
    # granting a vote does restart it
    g = node(pre_vote=False)
    for _ in range(g.raft.randomized_election_timeout - 1):
        g.tick()
    g.step(Message(MsgType.VOTE, to=1, frm=3, term=1, index=5, log_term=1))
    assert g.raft.vote == 3 and g.raft.election_elapsed == 0


def test_5_2_a_candidate_that_loses_waits_out_the_timeout_it_drew_when_its_election_started() -> None:
    """§5.2: "each candidate restarts its randomized election timeout at the start of an election, and it waits
    for that timeout to elapse before starting the next election". Losing (a majority refused) makes it a
    follower again, but its timer runs on: restarting it at every refusal pushes the refused candidate back a
    round trip each round (issue 17)."""
    n = node(pre_vote=False)
    n.campaign()
    timeout = n.raft.randomized_election_timeout
    ticks(n, 3)
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1, reject=True))
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=3, term=1, reject=True))
    assert n.role == Role.FOLLOWER and n.term == 1
    assert (n.raft.election_elapsed, n.raft.randomized_election_timeout) == (3, timeout)
    ticks(n, timeout - 4)
    assert n.role == Role.FOLLOWER
    n.tick()
    assert n.role == Role.CANDIDATE and n.term == 2, "campaigned again one timeout after its election began"


@pytest.mark.parametrize("pre_vote", [False, True])
def test_figure_2_a_refusal_of_a_newer_term_makes_a_candidate_follow_without_restarting_its_timer(
        pre_vote: bool) -> None:
    """Figure 2 (All Servers): a response of a newer term sets currentTerm and converts us to follower; the
    timer restarts only on hearing from the current leader, granting a vote or starting an election. A
    (pre-)candidate refused by a voter of a newer term campaigns again on its own schedule, in the next term."""
    n = node(pre_vote=pre_vote)
    n.campaign()
    timeout = n.raft.randomized_election_timeout
    resp = MsgType.PRE_VOTE_RESP if pre_vote else MsgType.VOTE_RESP
    ticks(n, 2)
    n.step(Message(resp, to=1, frm=2, term=5, reject=True))
    assert (n.role, n.term, n.lead) == (Role.FOLLOWER, 5, 0)
    assert (n.raft.election_elapsed, n.raft.randomized_election_timeout) == (2, timeout)
    ticks(n, timeout - 2)
    assert n.role == (Role.PRE_CANDIDATE if pre_vote else Role.CANDIDATE)
    assert n.term == (5 if pre_vote else 6)


def test_figure_2_hearing_from_a_leader_restarts_the_timer_and_a_deposed_leader_starts_one() -> None:
    """What does restart the timer: a leader's append (here to a candidate of its term), and stepping down from
    leadership (a leader runs no election timer; a fresh one starts)."""
    c = node(pre_vote=False)
    c.campaign()
    ticks(c, 4)
    c.step(Message(MsgType.HEARTBEAT, to=1, frm=2, term=1))
    assert (c.role, c.lead, c.raft.election_elapsed) == (Role.FOLLOWER, 2, 0)
    lead = node(1, peers=(1, 2), pre_vote=False, check_quorum=False)
    lead.campaign()
    lead.step(Message(MsgType.VOTE_RESP, to=1, frm=2, term=1))
    assert lead.role == Role.LEADER
    ticks(lead, 3)
    lead.step(Message(MsgType.APP_RESP, to=1, frm=2, term=4))
    assert (lead.role, lead.term, lead.raft.election_elapsed) == (Role.FOLLOWER, 4, 0)


def _member(i: int, voters: tuple[int, ...], learners: tuple[int, ...], last: int, pre_vote: bool = False) -> RawNode:
    """A member whose log ends at `last` (term 1) and whose configuration is (voters, learners)."""
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(index=last, term=1, conf=ConfState(voters, learners)))
    s.set_hard_state(HardState(term=1, commit=last))
    return RawNode(Config(id=i, peers=(), pre_vote=pre_vote, rng=random.Random(i)), s)


def _ticks_until_the_able_candidate_leads(seed: int, limit: int, pre_vote: bool = False) -> int | None:
    voter = _member(1, voters=(2, 3, 4), learners=(1,), last=5, pre_vote=pre_vote)  # a learner: never campaigns
    nodes = {1: voter,
             2: _member(2, voters=(1, 2, 4, 5, 6), learners=(), last=5, pre_vote=pre_vote),  # 4, 5, 6 long gone
             3: _member(3, voters=(1, 3), learners=(), last=7, pre_vote=pre_vote)}
    rng = random.Random(seed)
    for n in nodes.values():
        n.raft.cfg.rng.seed(rng.random())
        ticks(n, rng.randrange(10))  # members come to this state at different times
    in_flight: list[Message] = []
    for t in range(limit):
        for m in in_flight:  # a message takes a tick each way
            if m.to in nodes:
                nodes[m.to].step(m)
        in_flight = [m for n in nodes.values() for m in sent(n)]
        if nodes[3].role == Role.LEADER:
            return t
        for n in nodes.values():
            n.tick()
    return None


def test_5_2_a_candidate_granted_votes_it_cannot_win_with_does_not_starve_the_one_that_can() -> None:
    """Issue 17 (seeds 49633, 73951, 877143718, membership 876320343), reduced: voter 1 has not applied the
    changes that made it a voter of {1, 3} and removed member 2, so it still grants 2 — whose configuration it
    can never win in — and 3, whose log is longer, needs 1's vote. Without pre-vote both campaign in every new
    term, and 1 votes for whichever asks first. A refused candidate that restarted its timer on the refusal fell
    a round trip further behind the granted one every round (4 of these 40 seeds found no leader within 600
    ticks, 60 election timeouts); waiting out the timeout drawn at the start of its election it races the other
    on its own timer (all 40 within 475 ticks, median 44). The race is still tilted against 3: it learns 2's
    term only from 1's refusals and then waits out its whole timeout, so it wins a round only when 2 stays
    silent for all of it — hence the long tail. Pre-vote, on in production, avoids the race altogether (test
    below); a member whose own log holds its removal campaigns only by pre-vote (test_raft_snapshots_membership,
    §4.1)."""
    late = [s for s in range(40) if _ticks_until_the_able_candidate_leads(s, 600) is None]
    assert not late, f"member 3 never won member 1's vote within 600 ticks for seeds {late}"


def test_9_6_with_pre_vote_a_candidate_that_cannot_win_never_takes_the_vote_the_able_one_needs() -> None:
    """Dissertation §9.6: member 2 never wins a pre-vote among its voters, so it never starts a real election
    and member 1 never spends its vote on it: member 3 leads after its first timeout (at most 2 election
    timeouts plus the 10 ticks of head start and a few round trips)."""
    took = [_ticks_until_the_able_candidate_leads(s, 600, pre_vote=True) for s in range(40)]
    assert all(t is not None and t <= 2 * 10 + 10 + 6 for t in took), took


def test_figure_2_a_vote_request_of_an_older_term_is_refused_with_ours_so_the_candidate_catches_up() -> None:
    """Figure 2, RequestVote rule 1: "reply false if term < currentTerm", the reply carrying currentTerm "for the
    candidate to update itself" (etcd stays silent). A candidate that only hears from members of newer terms
    through their refusals must learn those terms, or it campaigns a term behind for ever."""
    voter = node(1, storage=MemoryStorage(), pre_vote=False)
    voter.step(Message(MsgType.VOTE, to=1, frm=2, term=7, index=0, log_term=0))  # term 7, voted for 2
    sent(voter)
    cand = node(3, pre_vote=False)
    cand.campaign()
    (req, _) = sorted(sent(cand, MsgType.VOTE), key=lambda m: m.to)
    voter.step(req)
    (refusal,) = sent(voter, MsgType.VOTE_RESP)
    assert refusal.reject and refusal.term == 7
    cand.step(refusal)
    assert cand.role == Role.FOLLOWER and cand.term == 7
    cand.campaign()
    assert cand.term == 8, "its next campaign is of a term the voter can still vote in"
