"""Raft: one member's consensus state machine. It never performs I/O: inputs are `tick()` and `step(msg)`,
outputs accumulate in `msgs` (to send) and `read_states`, and the log's unstable entries and commit index.

Role-specific message handling lives in `roles.py`; this module holds the state, the term rules every message
goes through first (Figure 2, "Rules for Servers"), role transitions, elections and replication helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.raftstore.raft import roles
from services.raftstore.raft.config import Config
from services.raftstore.raft.errors import LogCompacted, ProposalDropped
from services.raftstore.raft.log import RaftLog
from services.raftstore.raft.messages import (
    CAMPAIGN_TRANSFER,
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    vote_response_type,
)
from services.raftstore.raft.progress import Progress, ProgressState
from services.raftstore.raft.quorum import VoteResult, committed_index, has_quorum, vote_result
from services.raftstore.raft.readonly import ReadOnly, ReadRequest
from services.raftstore.raft.storage import Storage

# Messages that are never stamped with the sender's term: local inputs and requests forwarded to the leader.
_UNTERMED = frozenset({MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM, MsgType.PROP, MsgType.READ_INDEX})


class Raft:
    def __init__(self, cfg: Config, storage: Storage) -> None:
        cfg.validate()
        self.cfg = cfg
        self.id = cfg.id
        self.log = RaftLog(storage)
        conf = storage.snapshot().conf
        self.voters: tuple[int, ...] = conf.voters if conf.voters else tuple(sorted(cfg.peers))
        self.learners: tuple[int, ...] = conf.learners if conf.voters else ()
        # The index of the last membership change in the log: another is refused until it is applied (one
        # change at a time, dissertation §4.1), and a new leader refuses one until its first entry is applied.
        self.pending_conf_index = 0
        # leadership transfer in progress to this member (dissertation §3.10), NONE otherwise
        self.lead_transferee = NONE
        # a follower needs a snapshot the storage does not have yet (see send_snapshot)
        self.snapshot_wanted = False
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.msgs: list[Message] = []
        #: how many of `msgs` a Ready has handed out (RawNode.ready .. advance): those are not changed any more
        self.msgs_taken = 0
        self.read_states: list[ReadState] = []
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.read_only = ReadOnly()
        # Read-index requests that arrived before this leader committed an entry of its own term: until then
        # it does not know the commit index of the cluster (dissertation §6.4, step 1).
        self.pending_reads: list[Message] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = cfg.election_tick
        hs = storage.initial_state()
        if not hs.is_empty():
            self.term, self.vote = hs.term, hs.vote
            self.log.commit_to(max(hs.commit, self.log.committed))
        # Membership changes committed after the snapshot are in force at once (the driver re-applies them
        # with the rest of the log; applying one twice changes nothing).
        for e in self.log.slice(self.log.first_index(), self.log.committed + 1):
            if e.type == EntryType.CONF_CHANGE:
                self._change_conf(ConfChange.decode(e.data))
        self._reset(self.term)  # a follower of no known leader, with a freshly randomized election timeout

    # ---- reported state -----------------------------------------------------------------------------------
    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def quorum_active(self) -> bool:
        return has_quorum(self.voters, {v for v, pr in self.prs.items() if v == self.id or pr.recent_active})

    def conf_state(self) -> ConfState:
        return ConfState(self.voters, self.learners)

    def others(self) -> list[int]:
        """Every member we replicate to: voters and learners but ourselves."""
        return [v for v in (*self.voters, *self.learners) if v != self.id]

    # ---- sending ------------------------------------------------------------------------------------------
    def send(self, type: MsgType, to: int, **fields: Any) -> None:
        """Queue a message. Its term is ours unless given (vote traffic sets it explicitly)."""
        if "term" not in fields and type not in _UNTERMED:
            fields["term"] = self.term
        self.msgs.append(Message(type, to=to, frm=self.id, **fields))

    def ack_append(self, to: int, index: int) -> None:
        """Acknowledge appends up to `index` to the leader `to`. Acks are cumulative (the leader keeps the highest
        match it heard), so an ack queued right before this one, to the same leader in the same term and not yet
        handed out, is raised to `index` instead of sending a second message: a follower that took several
        appends in one turn answers once."""
        msgs = self.msgs
        if len(msgs) > self.msgs_taken:
            prev = msgs[-1]
            if prev.type == MsgType.APP_RESP and prev.to == to and prev.term == self.term and not prev.reject \
                    and not prev.context and prev.index <= index:
                msgs[-1] = Message(MsgType.APP_RESP, to=to, frm=self.id, term=self.term, index=index)
                return
        self.send(MsgType.APP_RESP, to, index=index)

    # ---- role transitions ---------------------------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        # Randomized timeouts make split votes rare (§5.2): [election_tick, 2*election_tick).
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.cfg.rng.randrange(et)
        self.votes = {}
        last = self.log.last_index()
        self.prs = {v: Progress(last + 1, self.cfg.max_inflight) for v in (*self.voters, *self.learners)}
        if self.id in self.prs:
            self.prs[self.id].match = last
        self.read_only.reset()
        self.pending_reads = []
        self.lead_transferee = NONE

    def become_follower(self, term: int, lead: int) -> None:
        """Follow `lead` (NONE: no leader known yet) in `term`.

        Figure 2 / §5.2: the election timer restarts when we hear from a leader, grant a vote or start a
        campaign — not when a (pre-)election is lost, nor when a message of a newer term without a leader
        (a vote request, a refusal) makes us a follower. Each candidate waits out the randomized timeout it drew
        when its election started (§5.2's answer to split votes); restarting it on a refusal pushes back, round
        after round, the candidate that is refused (the one the voter does not pick first) while a candidate
        that is granted votes but can never win keeps its rhythm — and takes the shared voter's vote first in
        every new term: no leader ever again (issue 17: a removed member whose removal that voter had not
        applied yet, or a member with a stale configuration, always ahead of the one candidate able to win). A
        leader that steps down had no election timer running: it starts one."""
        keep = lead == NONE and self.role != Role.LEADER
        elapsed, timeout = self.election_elapsed, self.randomized_election_timeout
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        if keep:
            self.election_elapsed, self.randomized_election_timeout = elapsed, timeout

    def become_pre_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("raft: a leader cannot become a pre-candidate")
        # A pre-vote round changes neither term nor vote: a partitioned member cannot inflate its term
        # and disrupt the cluster when it comes back (dissertation §9.6).
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role == Role.LEADER:
            raise AssertionError("raft: a leader cannot become a candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        if self.role == Role.FOLLOWER:
            raise AssertionError("raft: a follower cannot become leader without an election")
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        self.prs[self.id].become_replicate()
        # §8: a new leader appends a blank no-op entry of its own term; committing it commits everything
        # before it (§5.4.2) and tells the leader the cluster's commit index (needed for ReadIndex).
        # No membership change is taken before the no-op is applied: a change proposed earlier, by an old
        # leader, may still be in the log (the single-server-change bug fix of Ongaro's 2015 note).
        self.pending_conf_index = self.append_entries([b""])

    # ---- elections ----------------------------------------------------------------------------------------
    def promotable(self) -> bool:
        return self.id in self.voters

    def logged_conf(self) -> tuple[ConfState, int]:
        """Dissertation §4.1: the latest configuration in our log, committed or not — the applied one with every
        membership change after the applied index folded in — and the index of the newest such change (0: none
        past the applied index). Computed afresh from the log, so a change that is truncated no longer counts."""
        voters, learners = self.voters, self.learners
        newest = 0
        lo = max(self.log.applied + 1, self.log.first_index())
        for e in self.log.slice(lo, self.log.last_index() + 1):
            if e.type == EntryType.CONF_CHANGE:
                voters, learners = changed_conf(voters, learners, ConfChange.decode(e.data))
                newest = e.index
        return ConfState(voters, learners), newest

    def hup(self) -> None:
        """The election timer fired (or a campaign was asked for). Membership changes are in force when applied,
        as in etcd, but a member whose own log already holds the change that leaves it out of the voters — the
        latest configuration in its log, §4.1 — is leaving:
        - that change committed (as far as it knows): it does not campaign at all (LogCabin's startNewElection
          does the same; etcd refuses to campaign while any committed change is unapplied). It applies soon.
        - not known committed: it campaigns only through a pre-vote round (§9.6), whatever `Config.pre_vote`
          says, so it takes nobody's vote and moves nobody's term unless a majority of its applied configuration
          would elect it. Issue 17 (seed 79054, no pre-vote): member 1 held its removal uncommitted while the
          others had committed it; it could never win — the member it needed had applied the removal and
          dropped its messages — yet in every new term it took the vote of a lagging voter that the one member
          able to win needed too. Not campaigning at all would be wrong here: a leader that appended its own
          removal and then lost leadership (crashed) before replicating it may hold the longest log, and
          the remaining voters may need its vote, which it cannot give them (§5.4.1) — it must lead once more
          to commit its removal (`test_raft_election.py`)."""
        if self.role == Role.LEADER:
            return
        conf, newest = self.logged_conf()
        if self.id in conf.voters:
            self.campaign(pre_vote=self.cfg.pre_vote)
        elif newest > self.log.committed:
            self.campaign(pre_vote=True)

    def campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self.become_pre_candidate()
            req, term = MsgType.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            req, term = MsgType.VOTE, self.term
        if self.poll(self.id, vote_response_type(req), granted=True) == VoteResult.WON:
            return  # a single-member cluster wins at once
        last_index, last_term = self.log.last_index(), self.log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in self.voters:
            if v != self.id:
                self.send(req, v, term=term, index=last_index, log_term=last_term, context=ctx)

    def poll(self, frm: int, resp: MsgType, granted: bool) -> VoteResult:
        """Count a (pre-)vote and act on the outcome: a won pre-vote starts the real election."""
        self.votes.setdefault(frm, granted)
        result = vote_result(self.voters, self.votes)
        if result == VoteResult.WON:
            if resp == MsgType.PRE_VOTE_RESP:
                self.campaign(pre_vote=False)
            else:
                self.become_leader()
                self.bcast_append()
        elif result == VoteResult.LOST:
            self.become_follower(self.term, NONE)
        return result

    def handle_vote_request(self, m: Message) -> None:
        """RequestVote receiver (Figure 2) and its pre-vote twin: grant if we may still vote in that term and
        the candidate's log is at least as up to date as ours (§5.4.1)."""
        resp = vote_response_type(m.type)
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The grant carries the requested term, not ours: for a pre-vote we have not moved to it.
            self.send(resp, m.frm, term=m.term)
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(resp, m.frm, term=self.term, reject=True)

    # ---- time ---------------------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MsgType.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            self.lead_transferee = NONE  # a transfer that did not finish within an election timeout is abandoned
            if self.cfg.check_quorum:
                self.step(Message(MsgType.CHECK_QUORUM, frm=self.id))
                if self.role != Role.LEADER:
                    return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MsgType.BEAT, frm=self.id))

    # ---- the entry point ----------------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if not self._check_term(m):
            return
        if m.type == MsgType.HUP:
            self.hup()
        elif m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self.handle_vote_request(m)
        elif self.role == Role.LEADER:
            roles.step_leader(self, m)
        elif self.role == Role.FOLLOWER:
            roles.step_follower(self, m)
        else:
            roles.step_candidate(self, m)

    def _check_term(self, m: Message) -> bool:
        """Figure 2: a higher term makes us a follower of that term; a lower term is stale. Returns whether
        the message should be processed further."""
        if m.term == 0 or m.term == self.term:
            return True
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
                # Leader stickiness (dissertation §4.2.3 / §6.2): while we hear from a live leader, ignore
                # candidates; otherwise a member that only lost contact with us could depose it. A transferee
                # (TIMEOUT_NOW) campaigns one term past the leader it was caught up with: a "transfer" vote of
                # any other term is an ordinary one (it cannot move our term by a thousand).
                in_lease = (self.cfg.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.cfg.election_tick
                            and not (m.context == CAMPAIGN_TRANSFER and m.term == self.term + 1))
                if in_lease:
                    return False
            if m.type == MsgType.PRE_VOTE or (m.type == MsgType.PRE_VOTE_RESP and not m.reject):
                return True  # pre-votes never move terms; a granted one carries the term we would campaign at
            leader = m.frm if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP) else NONE
            # Without a leader (a vote request, a refusal of ours) the election timer keeps running: adopting
            # a newer term does not restart it (become_follower, Figure 2). Otherwise a candidate that can never
            # win (a stale log, a configuration others have moved past) would hold back, with each new term, the
            # timer of the member that could — and no leader is ever elected.
            self.become_follower(m.term, leader)
            return True
        # m.term < self.term: stale.
        if m.type in (MsgType.HEARTBEAT, MsgType.APP):
            # Figure 2, AppendEntries rule 1: reply false with our term, "for leader to update itself". A leader
            # of an older term that we ignore would otherwise never learn it is stale: pre-vote/check-quorum keep
            # us from forcing elections, and without them the candidates that raised our term may be ones it
            # no longer hears (a removed member, whose messages it drops) — etcd answers only with those on.
            self.send(MsgType.APP_RESP, m.frm)
        elif m.type in (MsgType.PRE_VOTE, MsgType.VOTE):
            # Figure 2, RequestVote rule 1: reply false with our term, "for the candidate to update itself". A
            # candidate cut off from the members with newer terms (a removed one still campaigning among them)
            # would otherwise keep campaigning a term behind, losing every race it could win.
            self.send(vote_response_type(m.type), m.frm, term=self.term, reject=True)
        return False

    # ---- leader: log and replication ----------------------------------------------------------------------
    def append_entries(self, datas: Sequence[bytes]) -> int:
        """Leader: append new entries of the current term; returns the last index."""
        first = self.log.last_index() + 1
        last = self.log.append([Entry(self.term, first + i, d) for i, d in enumerate(datas)])
        self.prs[self.id].maybe_update(last)
        self.maybe_commit()
        return last

    def committed_in_current_term(self) -> bool:
        return self.log.match_term(self.log.committed, self.term)

    def maybe_commit(self) -> bool:
        idx = committed_index(self.voters, {v: pr.match for v, pr in self.prs.items()})
        if not self.log.maybe_commit(idx, self.term):
            return False
        if self.pending_reads and self.committed_in_current_term():
            waiting, self.pending_reads = self.pending_reads, []
            for m in waiting:
                self.start_read(m)
        return True

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        """Send `to` the entries it lacks (§5.3) unless flow control holds it back; returns whether sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        try:
            prev_term = self.log.term(prev)
            ents = self.log.entries_from(pr.next, self.cfg.max_size_per_msg)
        except LogCompacted:
            return self.send_snapshot(to)
        if not ents and not send_if_empty:
            return False
        self.send(MsgType.APP, to, index=prev, log_term=prev_term, entries=tuple(ents),
                  commit=self.log.committed)
        if ents:
            pr.sent_entries(ents[-1].index)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def send_snapshot(self, to: int, *, joining: bool = False) -> bool:
        """InstallSnapshot (§7): the follower needs entries we compacted, or it is a new member that knows no
        membership yet (`joining`). The transport streams it in chunks."""
        snap = self.log.storage.snapshot()
        if snap.index == 0 or (joining and to not in snap.conf.members()):
            # No snapshot yet, or one older than the change that added this member (it would not learn the
            # membership from it): ask the driver for a fresh one (Ready.want_snapshot); the next heartbeat
            # answer brings us back here.
            self.snapshot_wanted = True
            return False
        self.send(MsgType.SNAP, to, snapshot=snap)
        self.prs[to].become_snapshot(snap.index)
        return True

    def bcast_append(self) -> None:
        for v in self.others():
            self.send_append(v)

    def bcast_heartbeat(self, context: bytes | None = None) -> None:
        # A heartbeat carries the commit index only up to what the follower is known to hold (§5.3 log
        # matching then makes it safe to commit), and the newest pending read context so a lost round of
        # read-index acks is retried by the next heartbeat.
        ctx = self.read_only.last_context() if context is None else context
        for v in self.others():
            commit = min(self.prs[v].match, self.log.committed)
            self.send(MsgType.HEARTBEAT, v, commit=commit, context=ctx)

    # ---- leader: reads ------------------------------------------------------------------------------------
    def start_read(self, m: Message) -> None:
        """Dissertation §6.4: remember the commit index, then confirm leadership with a heartbeat round."""
        self.read_only.add(m.context, self.log.committed, m.frm, self.id)
        if len(self.voters) == 1:
            for req in self.read_only.ack(m.context, self.id, self.voters):
                self.answer_read(req)
            return
        self.bcast_heartbeat(m.context)

    def answer_read(self, req: ReadRequest) -> None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(req.index, req.context))
        else:
            self.send(MsgType.READ_INDEX_RESP, req.frm, index=req.index, context=req.context)

    # ---- snapshots (§7) -----------------------------------------------------------------------------------
    def restore(self, snap: Snapshot) -> bool:
        """A snapshot from the leader: adopt it unless our log already holds its last entry. Returns whether
        the log was replaced (the driver then persists and loads it)."""
        if snap.index <= self.log.committed:
            return False
        if self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we have the entries: just learn that they are committed
            return False
        self.log.restore(snap)
        if snap.conf.voters:
            self.voters, self.learners = snap.conf.voters, snap.conf.learners
            self.prs = {v: Progress(self.log.last_index() + 1, self.cfg.max_inflight)
                        for v in (*self.voters, *self.learners)}
        return True

    # ---- membership (dissertation §4) ---------------------------------------------------------------------
    def propose_conf_change(self, cc: ConfChange) -> int:
        """Leader: append a membership change. One at a time: refused while an earlier one is not applied."""
        if self.role != Role.LEADER:
            raise ProposalDropped(f"raft: member {self.id} is not the leader (leader: {self.lead or 'unknown'})")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"raft: leadership is being transferred to {self.lead_transferee}")
        if self.pending_conf_index > self.log.applied:
            raise ProposalDropped(
                f"raft: another membership change (entry {self.pending_conf_index}) is not applied yet; "
                "one change at a time")
        self._check_conf_change(cc)
        first = self.log.last_index() + 1
        last = self.log.append([Entry(self.term, first, cc.encode(), EntryType.CONF_CHANGE)])
        self.prs[self.id].maybe_update(last)
        self.maybe_commit()
        self.pending_conf_index = last
        self.bcast_append()
        return last

    def _check_conf_change(self, cc: ConfChange) -> None:
        t, node = cc.type, cc.node_id
        if node <= 0:
            raise ValueError(f"raft: member id must be positive, got {node}")
        if t == ConfChangeType.ADD_LEARNER and node in (*self.voters, *self.learners):
            raise ValueError(f"raft: member {node} is already in the cluster")
        if t == ConfChangeType.PROMOTE:
            if node not in self.learners:
                raise ValueError(f"raft: member {node} is not a learner; only learners are promoted")
            if self.prs[node].match == 0:
                raise ValueError(f"raft: learner {node} has not received the leader's snapshot yet")
        if t == ConfChangeType.REMOVE:
            if node not in (*self.voters, *self.learners):
                raise ValueError(f"raft: member {node} is not in the cluster")
            if node in self.voters and len(self.voters) == 1:
                raise ValueError("raft: cannot remove the last voter")
        if t == ConfChangeType.FORCE_NEW_CLUSTER:
            raise ValueError("raft: force-new-cluster is a startup option, not a proposal")

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """A committed membership change, applied in log order (the driver calls this as it applies the
        entry). Idempotent: the log re-applies changes already folded in at start."""
        self._change_conf(cc)
        if self.role == Role.LEADER:
            if self.id not in self.voters:
                self.become_follower(self.term, NONE)  # removed: step down (transfer first to avoid the gap)
            else:
                last = self.log.last_index()
                for v in self.others():
                    self.prs.setdefault(v, Progress(last + 1, self.cfg.max_inflight))
                for v in [v for v in self.prs if v not in self.voters and v not in self.learners]:
                    del self.prs[v]
                if self.lead_transferee not in self.voters:
                    self.lead_transferee = NONE
                if self.maybe_commit():  # a smaller quorum may commit at once
                    self.bcast_append()
                else:
                    for v in self.others():
                        self.send_append(v, send_if_empty=False)
        else:
            for v in [v for v in self.prs if v not in self.voters and v not in self.learners]:
                del self.prs[v]
        return self.conf_state()

    def _change_conf(self, cc: ConfChange) -> None:
        self.voters, self.learners = changed_conf(self.voters, self.learners, cc)

    # ---- leadership transfer (dissertation §3.10) ---------------------------------------------------------
    def transfer_leader(self, to: int) -> None:
        """Leader: bring `to` up to date, then tell it to campaign at once. Proposals are refused meanwhile; the
        transfer is abandoned after an election timeout."""
        if self.role != Role.LEADER:
            raise ProposalDropped(f"raft: member {self.id} is not the leader (leader: {self.lead or 'unknown'})")
        if to == self.id:
            return
        if to not in self.voters:
            raise ValueError(f"raft: member {to} is not a voter; leadership can only go to a voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer's deadline
        if self.prs[to].match == self.log.last_index():
            self.send(MsgType.TIMEOUT_NOW, to)
        else:
            self.send_append(to)


def changed_conf(voters: tuple[int, ...], learners: tuple[int, ...],
                 cc: ConfChange) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The configuration (voters, learners) after one membership change. Applying a change twice changes
    nothing more (ids never come back once removed)."""
    vs, ls = set(voters), set(learners)
    t, node = cc.type, cc.node_id
    if t == ConfChangeType.ADD_LEARNER:
        if node not in vs:
            ls.add(node)
    elif t == ConfChangeType.PROMOTE:
        ls.discard(node)
        vs.add(node)
    elif t == ConfChangeType.REMOVE:
        vs.discard(node)
        ls.discard(node)
    elif t == ConfChangeType.FORCE_NEW_CLUSTER:
        vs, ls = {node}, set()
    return tuple(sorted(vs)), tuple(sorted(ls))
