"""A lying member (issue 16): what a message may claim (raft/sanity.py) and what the core does with the rest.

Each lie of the issue on its own — a HEARTBEAT committing 2**60, a forged append from a member that does not lead,
a "transfer" vote a thousand terms ahead — then many seeded rounds of random messages of every type with
extreme values from one compromised member into a live simulated cluster, whose safety checks (election safety,
log matching, state machine safety) run after every step: nothing raises but MessageRefused, nobody applies a
forged entry, and the cluster still commits afterwards."""

from __future__ import annotations

import dataclasses
import random

import pytest

from services.raftstore.codec import decode_message, encode_message
from services.raftstore.raft import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageRefused,
    MsgType,
    Role,
    Snapshot,
)
from services.raftstore.raft.node import CAMPAIGN_TRANSFER
from services.raftstore.raft.sanity import MAX_TERM_JUMP
from tests.sim.raftnet import SimNetwork

FORGED = b"forged"


def settled(seed: int = 1) -> SimNetwork:
    net = SimNetwork(3, seed=seed)
    net.elect(1)
    assert net.propose(1, b"a") is not None
    net.stabilize()
    return net


def refused(net: SimNetwork, i: int, m: Message) -> None:
    before = (net.node(i).term, net.node(i).raft.log.committed, net.node(i).raft.log.last_index(), net.node(i).lead)
    with pytest.raises(MessageRefused):
        net.node(i).step(m)
    after = (net.node(i).term, net.node(i).raft.log.committed, net.node(i).raft.log.last_index(), net.node(i).lead)
    assert before == after


def test_a_heartbeat_committing_past_our_log_is_refused_not_fatal() -> None:
    net = settled()
    term = net.node(2).term
    refused(net, 2, Message(MsgType.HEARTBEAT, to=2, frm=1, term=term, commit=2**60))
    net.node(2).step(Message(MsgType.HEARTBEAT, to=2, frm=1, term=term, commit=1))  # control: the real one


def test_a_forged_append_from_a_member_that_does_not_lead_is_refused() -> None:
    net = settled()
    r2 = net.node(2).raft
    term, last = r2.term, r2.log.last_index()
    forged = Message(MsgType.APP, to=2, frm=3, term=term, index=last, log_term=r2.log.last_term(),
                     entries=(Entry(term, last + 1, FORGED),), commit=last + 1)
    refused(net, 2, forged)  # a second leader in the same term
    refused(net, 2, Message(MsgType.APP, to=2, frm=3, term=term + 1, index=last, log_term=r2.log.last_term(),
                            entries=(Entry(term + 1, last + 1, FORGED),), commit=last + 1))  # a term from nowhere
    refused(net, 1, Message(MsgType.APP, to=1, frm=3, term=term + 1))  # nor does the leader step down for it
    assert net.node(1).role == Role.LEADER
    # control: the same append from the leader is taken
    net.node(2).step(Message(MsgType.APP, to=2, frm=1, term=term, index=last, log_term=r2.log.last_term(),
                             entries=(Entry(term, last + 1, b"real"),), commit=last))
    assert r2.log.last_index() == last + 1


def test_a_higher_term_leader_is_followed_once_the_old_one_is_not_heard() -> None:
    net = settled()
    n2 = net.node(2)
    for _ in range(n2.raft.cfg.election_tick):  # the leader went quiet for an election timeout
        n2.raft.election_elapsed += 1
    n2.step(Message(MsgType.HEARTBEAT, to=2, frm=3, term=n2.term + 1))
    assert n2.lead == 3 and n2.role == Role.FOLLOWER


def test_a_transfer_vote_moves_the_term_by_one_at_most() -> None:
    net = settled()
    n2 = net.node(2)
    term = n2.term
    refused(net, 2, Message(MsgType.VOTE, to=2, frm=3, term=term + 1000, index=99, log_term=99,
                            context=CAMPAIGN_TRANSFER))
    n2.step(Message(MsgType.VOTE, to=2, frm=3, term=term + 1, index=99, log_term=99))
    assert n2.term == term and n2.lead == 1, "an ordinary vote is ignored in the lease"
    n2.step(Message(MsgType.VOTE, to=2, frm=3, term=term + 1, index=99, log_term=99, context=CAMPAIGN_TRANSFER))
    assert n2.term == term + 1, "control: a transferee one term ahead is heard"


def test_terms_from_nowhere_and_answers_to_questions_never_asked_are_refused() -> None:
    net = settled()
    n1, term = net.node(1), net.node(1).term
    refused(net, 1, Message(MsgType.APP_RESP, to=1, frm=2, term=term + MAX_TERM_JUMP + 1, reject=True))
    refused(net, 1, Message(MsgType.APP_RESP, to=1, frm=2, term=term, index=2**40))  # acks entries never sent
    refused(net, 2, Message(MsgType.VOTE_RESP, to=2, frm=3, term=term + 5))  # a grant never asked for
    refused(net, 2, Message(MsgType.READ_INDEX_RESP, to=2, frm=3, term=term, index=1, context=b"12345678"))
    refused(net, 2, Message(MsgType.HEARTBEAT, to=2, frm=1, term=term, context=b"x" * 1000))
    refused(net, 2, Message(MsgType.HEARTBEAT, to=2, frm=1))  # a leader's message without a term
    refused(net, 2, Message(MsgType.APP, to=2, frm=1, term=term, index=1, log_term=term,
                            entries=(Entry(term, 5, b"x"),)))  # entries that do not follow `index`
    refused(net, 2, Message(MsgType.APP, to=2, frm=1, term=term, index=1, log_term=term,
                            entries=(Entry(term, 2, b"\x07", EntryType.CONF_CHANGE),)))  # an undecodable change
    refused(net, 2, Message(MsgType.SNAP, to=2, frm=1, term=term,
                            snapshot=Snapshot(5, term, b"{}", ConfState(()))))  # a snapshot of no membership
    assert n1.role == Role.LEADER and n1.term == term


def test_an_append_rewriting_committed_entries_changes_nothing_even_from_the_leader() -> None:
    net = settled()
    r2 = net.node(2).raft
    term, committed = r2.term, r2.log.committed
    net.node(2).step(Message(MsgType.APP, to=2, frm=1, term=term, index=committed - 1,
                             log_term=r2.log.term(committed - 1), entries=(Entry(term, committed, FORGED),)))
    assert r2.log.slice(committed, committed + 1)[0].data != FORGED and r2.log.committed == committed


def test_a_refusal_one_term_ahead_deposes_the_leader() -> None:
    """What a lying member can still do: a member ahead of the leader refuses its appends; the leader must
    step down for it (or the member could never rejoin), so it steps down for the liar too."""
    net = settled()
    term = net.node(1).term
    refused(net, 1, Message(MsgType.APP_RESP, to=1, frm=3, term=term + MAX_TERM_JUMP + 1))
    net.node(1).step(Message(MsgType.APP_RESP, to=1, frm=3, term=term + 5))  # the answer to a stale append
    assert net.node(1).role == Role.FOLLOWER and net.node(1).term == term + 5


# ---- random lies from one compromised member ----------------------------------------------------------------
EXTREME = [0, 1, 2, 3, 7, 2**31, 2**32 + 5, 2**60, 2**62, 2**63, 2**64 - 1]


def lie(rng: random.Random, net: SimNetwork, frm: int, to: int) -> Message:
    """A message of any wire type from `frm`, every field near our state or extreme; it survives the codec."""
    r = net.node(to).raft

    def num(base: int) -> int:
        return min(2**64 - 1, rng.choice([*EXTREME, *(max(0, base + d) for d in (-2, -1, 0, 1, 2, 1000))]))

    t = rng.choice([t for t in MsgType if t not in (MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM)])
    term = num(r.term)
    index = num(r.log.last_index())
    entries: tuple[Entry, ...] = ()
    if t == MsgType.APP and rng.random() < 0.7:
        n = rng.randint(1, 3)
        etype = rng.choice([EntryType.NORMAL, EntryType.NORMAL, EntryType.CONF_CHANGE])
        data = FORGED if etype == EntryType.NORMAL else ConfChange(
            rng.choice(list(ConfChangeType)), rng.choice([1, 2, 3, 4, 2**62])).encode()
        follow = rng.random() < 0.7
        entries = tuple(Entry(term if follow else num(term), min(2**64 - 1, index + 1 + k) if follow else num(index),
                              data, etype) for k in range(n))
    snapshot = None
    if t == MsgType.SNAP:
        snapshot = Snapshot(num(r.log.committed), num(term), b'{"store":{}}',
                            ConfState(tuple(rng.sample([1, 2, 3, 9, 2**63], rng.randint(0, 3)))))
    m = Message(t, to=to, frm=frm, term=term, log_term=num(r.log.last_term()), index=index, entries=entries,
                commit=num(r.log.committed), reject=rng.random() < 0.5, reject_hint=num(index),
                context=rng.choice([b"", CAMPAIGN_TRANSFER, b"\x00" * 8, b"need-snapshot", b"x" * 65]),
                snapshot=snapshot)
    if m.type == MsgType.APP_RESP and m.term > r.term:
        # The one lie Raft's trust model lets through (sanity.py): it deposes the leader, and after an election
        # timeout without one the liar may pose as the next (test_a_refusal_one_term_ahead_deposes_the_leader).
        m = dataclasses.replace(m, term=r.term)
    return decode_message(encode_message(m))


@pytest.mark.parametrize("seed", range(12))
def test_random_lies_from_a_member_never_kill_or_split_the_others(seed: int) -> None:
    rng = random.Random(seed)
    net = settled(seed)
    liar = 3
    for round_ in range(300):
        to = rng.choice([1, 2])
        net.send(lie(rng, net, liar, to))
        if round_ % 10 == 0:
            net.propose(net.leader() or 1, f"p{round_}".encode())
        net.step()  # raises SafetyViolation on any split; anything but MessageRefused propagates
    net.calm()
    for _ in range(200):
        net.step()
    leader = net.leader()
    assert leader is not None
    assert net.propose(leader, b"after") is not None
    for _ in range(300):
        net.step()
    for i in (1, 2):
        assert FORGED not in net.applied_data(i), f"member {i} applied a forged entry"
        assert b"after" in net.applied_data(i)
    assert net.refused > 0
