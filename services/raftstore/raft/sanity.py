"""What a message from a peer may claim: `impossible(raft, msg)` names why a message cannot be true, or None.

Peers are authenticated raftstore members, but a buggy or compromised member sends the same bytes an attacker
would (issue 16). Raft does not tolerate a lying member — a member can always vote as it likes, or win an
election and then propose what it wants — but a lie must never kill a member, and must never make one member
apply what the others do not (a divergence no later message repairs). So before a message reaches the core,
everything it claims that no honest member could is refused here, without touching any state:

- numbers past MAX_VALUE (every term and index fits u64 with room for `+1`), a term more than MAX_TERM_JUMP
  ahead of ours (no cluster runs four billion elections while one member is away), long contexts, a term of 0
  on a message that must carry one;
- fields on the wrong kind (entries outside APP, a SNAP without a snapshot), entries that do not follow
  `index` one by one, terms past the message's, membership changes that do not decode;
- a second leader in a term (Election Safety, §5.2): leader traffic at our term from anyone but the leader we
  know; and, while we hear from our leader (check-quorum lease, dissertation §6.2), leader traffic at a newer
  term from another member — a legitimate new leader needs votes that members in a lease do not give, so the
  member has won no election we could know of (after a leadership transfer every voter moved to the new term
  with the vote request, which leaves the lease);
- while we hear our leader, any term more than one past ours but on an append answer: an honest member gets
  ahead of a live leader only by campaigning once for a transfer (a stale leader cut off from the majority
  steps down by itself within an election timeout, check-quorum). The answer to a stale append (Figure 2) is
  the exception: a member far ahead (pushed there while it heard no leader) must be able to make the leader
  step down, or it could never rejoin;
- a HEARTBEAT committing past our last entry (a leader sends at most the follower's match index), an append
  acknowledgement of entries the leader does not hold, an answer to a heartbeat of a term it never sent, a granted
  vote for a term we did not ask about, a transfer campaign the leader did not start, vote answers of a newer term
  to a member not campaigning, a read index answer from anyone but our leader.

What a lying member can still do (Raft is not Byzantine fault tolerant): vote as it likes, win an election its
log qualifies it for, ack entries it does not hold, and answer an append with a term past the leader's — which
makes a leader step down, as it must for a member that is ahead. Members that then
hear no leader for an election timeout are out of the lease and, as in any election, follow whoever claims the
next term; that member can then send them entries the others never see.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from services.raftstore.raft.messages import CAMPAIGN_TRANSFER, NONE, ConfChange, EntryType, Message, MsgType, Role

if TYPE_CHECKING:
    from services.raftstore.raft.node import Raft

#: no term, index or member id may exceed this (u64 on the wire; room left for arithmetic)
MAX_VALUE = 1 << 62
#: a message's term may be at most this far ahead of ours
MAX_TERM_JUMP = 1 << 32
#: longest context (read-index tags are 8 bytes, the transfer and need-snapshot marks a dozen)
MAX_CONTEXT = 64
#: most members a snapshot's membership may list
MAX_MEMBERS = 256

_LEADER_TRAFFIC = frozenset({MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP, MsgType.TIMEOUT_NOW})
_WIRE_UNTERMED = frozenset({MsgType.READ_INDEX})


def impossible(r: Raft, m: Message) -> str | None:
    """Why `m` (from a peer) cannot be true given our state, or None if it may be."""
    return _shape(m) or _claims(r, m)


def _shape(m: Message) -> str | None:
    """Checks that need no state: ranges, fields on the right kinds, entries in order."""
    if max(m.term, m.log_term, m.index, m.commit, m.reject_hint, m.frm, m.to) > MAX_VALUE:
        return "a term, index or id past the largest a cluster can reach"
    if len(m.context) > MAX_CONTEXT:
        return f"a context of {len(m.context)} bytes"
    if (m.term == 0) != (m.type in _WIRE_UNTERMED):
        return f"a {m.type.name} with term {m.term}" if m.term else f"a {m.type.name} without a term"
    if m.entries and m.type != MsgType.APP:
        return f"entries on a {m.type.name}"
    if (m.snapshot is not None) != (m.type == MsgType.SNAP):
        return "a snapshot on a message that is not SNAP, or a SNAP without one"
    if m.type == MsgType.APP:
        return _append_shape(m)
    if m.type == MsgType.SNAP:
        return _snapshot_shape(m)
    return None


def _append_shape(m: Message) -> str | None:
    if m.log_term > m.term:
        return f"an append whose previous entry's term {m.log_term} is past its own term {m.term}"
    prev_term = m.log_term
    for k, e in enumerate(m.entries):
        if e.index != m.index + 1 + k:
            return f"entry {k} of an append after {m.index} has index {e.index}"
        if not prev_term <= e.term <= m.term:
            return f"entry {e.index}'s term {e.term} is outside [{prev_term}, {m.term}]"
        prev_term = e.term
        if e.type == EntryType.CONF_CHANGE:
            try:
                cc = ConfChange.decode(e.data)
            except (struct.error, ValueError) as err:
                return f"entry {e.index} is a membership change that does not decode: {err}"
            if not 0 < cc.node_id <= MAX_VALUE:
                return f"entry {e.index} changes member {cc.node_id}"
    return None


def _snapshot_shape(m: Message) -> str | None:
    snap = m.snapshot
    if snap is None:
        return "a SNAP without a snapshot"
    conf = snap.conf
    ids = (*conf.voters, *conf.learners)
    if not 0 < snap.index <= MAX_VALUE or not 0 < snap.term <= m.term:
        return f"a snapshot at index {snap.index}, term {snap.term} (message term {m.term})"
    if not conf.voters or len(ids) > MAX_MEMBERS or len(set(ids)) != len(ids) \
            or any(not 0 < i <= MAX_VALUE for i in ids):
        return "a snapshot whose membership is empty, repeats a member or names an impossible one"
    return None


def _claims(r: Raft, m: Message) -> str | None:
    """Checks against our state: terms, leaders, commit and match claims."""
    if m.term > r.term + MAX_TERM_JUMP:
        return f"term {m.term}, more than {MAX_TERM_JUMP} past ours ({r.term})"
    if m.term > r.term + 1 and in_lease(r) and not (m.type in _LEADER_TRAFFIC and m.frm == r.lead) \
            and m.type != MsgType.APP_RESP:
        return f"term {m.term} while member {r.lead} leads term {r.term} and is heard"
    if m.type in _LEADER_TRAFFIC:
        if m.term == r.term and r.lead not in (NONE, m.frm):
            return f"a second leader in term {m.term} (we follow member {r.lead})"
        if m.term > r.term and r.lead not in (NONE, m.frm) and in_lease(r):
            return f"leader traffic at term {m.term} while member {r.lead} leads term {r.term} and is heard"
        if m.type == MsgType.HEARTBEAT and m.commit > r.log.last_index() and m.term >= r.term:
            return f"a heartbeat committing {m.commit}, past our last entry {r.log.last_index()}"
    elif m.type == MsgType.VOTE and m.context == CAMPAIGN_TRANSFER and r.role == Role.LEADER \
            and r.lead_transferee != m.frm:
        return f"a transfer campaign by member {m.frm}, to whom we hand no leadership"
    elif m.type == MsgType.HEARTBEAT_RESP and m.term > r.term:
        # a member answers a heartbeat it took at the sender's term (a stale one gets an APP_RESP of its own)
        return f"an answer to a heartbeat of term {m.term}, which we never sent"
    elif m.type == MsgType.APP_RESP and not m.reject and m.term == r.term and r.role == Role.LEADER \
            and m.index > r.log.last_index():
        return f"an acknowledgement of entry {m.index}, past our last entry {r.log.last_index()}"
    elif m.type in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP) and m.term > r.term \
            and r.role in (Role.LEADER, Role.FOLLOWER):
        return f"a {m.type.name} in term {m.term} to a {r.role.label}, which asked for no vote"
    elif m.type == MsgType.VOTE_RESP and not m.reject and m.term > r.term:
        return f"a vote granted in term {m.term}, which we did not ask for (we are at {r.term})"
    elif m.type == MsgType.PRE_VOTE_RESP and not m.reject and m.term > r.term + 1:
        return f"a pre-vote granted for term {m.term}, which we did not ask for (we are at {r.term})"
    elif m.type == MsgType.READ_INDEX_RESP and (m.frm != r.lead or m.term != r.term):
        return f"a read index answer from member {m.frm}, not our leader {r.lead or 'none'} of term {r.term}"
    return None


def in_lease(r: Raft) -> bool:
    """We heard from a live leader within the election timeout (dissertation §4.2.3 / §6.2)."""
    if not r.cfg.check_quorum or r.lead == NONE:
        return False
    return r.role == Role.LEADER or r.election_elapsed < r.cfg.election_tick
