"""How each role handles the messages that survived the term check in `Raft.step` (etcd's stepLeader,
stepCandidate, stepFollower). Functions of the Raft they act on (what they use of it: `member.Member`), so each
role reads as one short page."""

from __future__ import annotations

from services.raftstore.raft.errors import ProposalDropped
from services.raftstore.raft.member import Member
from services.raftstore.raft.messages import NEED_SNAPSHOT, NONE, Message, MsgType, ReadState, Role
from services.raftstore.raft.progress import ProgressState


def step_leader(r: Member, m: Message) -> None:
    t = m.type
    if t == MsgType.BEAT:
        r.bcast_heartbeat()
    elif t == MsgType.CHECK_QUORUM:
        # Dissertation §6.2: a leader that cannot reach a majority within an election timeout steps down, so
        # a partitioned minority stops accepting (and stalling) requests.
        if not r.quorum_active():
            r.become_follower(r.term, NONE)
            return
        for v, pr in r.prs.items():
            if v != r.id:
                pr.recent_active = False
    elif t == MsgType.PROP:
        if not m.entries:
            raise ProposalDropped("raft: empty proposal")
        if r.lead_transferee != NONE:
            raise ProposalDropped(f"raft: leadership is being transferred to member {r.lead_transferee}; retry")
        r.append_entries([e.data for e in m.entries])
        r.bcast_append()
    elif t == MsgType.READ_INDEX:
        if r.committed_in_current_term():
            r.start_read(m)
        else:
            r.pending_reads.append(m)
    elif t == MsgType.APP_RESP and m.frm in r.prs:
        _leader_append_response(r, m)
    elif t == MsgType.HEARTBEAT_RESP and m.frm in r.prs:
        _leader_heartbeat_response(r, m)


def _leader_append_response(r: Member, m: Message) -> None:
    pr = r.prs[m.frm]
    pr.recent_active = True
    if m.reject and m.context == NEED_SNAPSHOT:
        if pr.state != ProgressState.SNAPSHOT:
            r.send_snapshot(m.frm, joining=True)
        return
    if m.reject:
        # §5.3: back up nextIndex and retry; the follower's hint lets us skip a whole term at once.
        hint = m.reject_hint
        if m.log_term > 0:
            hint = r.log.find_conflict_by_term(hint, m.log_term)
        if pr.maybe_decrease_to(m.index, hint):
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            r.send_append(m.frm)
        return
    was_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        return
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()  # found the match point: stream from here on
    elif pr.state == ProgressState.SNAPSHOT:
        if pr.match < pr.pending_snapshot:
            return
        pr.become_replicate()  # the snapshot is installed: stream entries after it
        was_paused = True
    else:
        pr.inflights.free_le(m.index)
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        r.send(MsgType.TIMEOUT_NOW, m.frm)  # caught up: it can win an election now
    # A new commit index is not announced on its own (§5.3: the leader "includes that index in future
    # AppendEntries RPCs (including heartbeats)"): the next append — the next write — or heartbeat carries it.
    # An immediate notice cost each follower a message, a Ready and an answer per write, on the write path of
    # nobody: the client's answer waits only for the leader's commit and apply. Except a membership change:
    # its commit is told to everyone at once, while the member it removes still has a progress (it is dropped
    # when the change is applied), so that member learns the change committed and stops campaigning (rule 7)
    # and refuses its clients as removed — no later append or heartbeat would reach it.
    committed = r.log.committed
    if r.maybe_commit() and committed < r.pending_conf_index <= r.log.committed:
        r.bcast_append()
    if was_paused:
        r.send_append(m.frm)
    while r.send_append(m.frm, send_if_empty=False):
        pass  # keep the pipe full while flow control allows


def _leader_heartbeat_response(r: Member, m: Message) -> None:
    pr = r.prs[m.frm]
    pr.recent_active = True
    pr.probe_sent = False
    if pr.state == ProgressState.SNAPSHOT:
        pr.snapshot_waits += 1
        if pr.snapshot_waits >= r.cfg.snapshot_retry:
            pr.become_probe()  # the snapshot (or its answer) was lost: start over
    if pr.state == ProgressState.REPLICATE and pr.inflights.full():
        # Acks may have been lost; let one more message through so the follower reports where it is.
        pr.inflights.free_first()
    if pr.match < r.log.last_index():
        r.send_append(m.frm)
    if m.context:
        for req in r.read_only.ack(m.context, m.frm, r.voters):
            r.answer_read(req)


def step_candidate(r: Member, m: Message) -> None:
    """Both PRE_CANDIDATE and CANDIDATE: a leader of our term (or a newer one) makes us follow it (§5.2)."""
    t = m.type
    mine = MsgType.PRE_VOTE_RESP if r.role == Role.PRE_CANDIDATE else MsgType.VOTE_RESP
    if t == MsgType.PROP:
        raise ProposalDropped(f"raft: member {r.id} is campaigning; no leader to take the proposal")
    if t == MsgType.READ_INDEX:
        if m.frm == r.id:
            raise ProposalDropped(f"raft: member {r.id} is campaigning; no leader to confirm the read")
    elif t == MsgType.APP:
        r.become_follower(m.term, m.frm)
        handle_append(r, m)
    elif t == MsgType.HEARTBEAT:
        r.become_follower(m.term, m.frm)
        handle_heartbeat(r, m)
    elif t == MsgType.SNAP:
        r.become_follower(m.term, m.frm)
        handle_snapshot(r, m)
    elif t == mine:
        r.poll(m.frm, t, granted=not m.reject)


def step_follower(r: Member, m: Message) -> None:
    t = m.type
    if t == MsgType.PROP:
        # Writes are forwarded to the leader by the API layer, never through Raft.
        raise ProposalDropped(f"raft: member {r.id} is not the leader (leader: {r.lead or 'unknown'})")
    if t == MsgType.APP:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_append(r, m)
    elif t == MsgType.HEARTBEAT:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_heartbeat(r, m)
    elif t == MsgType.READ_INDEX:
        if m.frm != r.id:
            return  # the asker thought we lead; it will time out and ask again
        if r.lead == NONE:
            raise ProposalDropped(f"raft: member {r.id} knows no leader to confirm the read")
        r.send(MsgType.READ_INDEX, r.lead, context=m.context)
    elif t == MsgType.SNAP:
        r.election_elapsed = 0
        r.lead = m.frm
        handle_snapshot(r, m)
    elif t == MsgType.TIMEOUT_NOW:
        if r.promotable():
            # The leader handed over: campaign at once, without pre-vote, past the voters' leader stickiness.
            r.campaign(pre_vote=False, transfer=True)
    elif t == MsgType.READ_INDEX_RESP:
        r.read_states.append(ReadState(m.index, m.context))


def handle_append(r: Member, m: Message) -> None:
    """AppendEntries receiver (Figure 2)."""
    if not r.voters:
        # A joining member knows no membership: replaying the log from index 1 would not tell it (the bootstrap
        # membership lives in snapshots), so it takes nothing but a snapshot.
        r.send(MsgType.APP_RESP, m.frm, index=m.index, reject=True, context=NEED_SNAPSHOT)
        return
    if m.index < r.log.committed:
        # Everything up to our commit index is known to match; say so instead of re-checking old entries.
        r.send(MsgType.APP_RESP, m.frm, index=r.log.committed)
        return
    last = r.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    if last is not None:
        r.ack_append(m.frm, last)
        return
    hint = r.log.find_conflict_by_term(min(m.index, r.log.last_index()), m.log_term)
    r.send(MsgType.APP_RESP, m.frm, index=m.index, reject=True, reject_hint=hint,
           log_term=r.log.term(hint))


def handle_snapshot(r: Member, m: Message) -> None:
    """InstallSnapshot receiver (§7, Figure 13). Answers with the index we now hold, like an append."""
    if m.snapshot is None:
        return  # sanity.py refuses a SNAP without one before it gets here
    if r.restore(m.snapshot):
        r.send(MsgType.APP_RESP, m.frm, index=r.log.last_index())
    else:
        r.send(MsgType.APP_RESP, m.frm, index=r.log.committed)


def handle_heartbeat(r: Member, m: Message) -> None:
    r.log.commit_to(m.commit)
    r.send(MsgType.HEARTBEAT_RESP, m.frm, context=m.context)
