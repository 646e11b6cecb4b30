"""Member: one raftstore member composed from its parts — snapshot and WAL replay, FSM, Driver and
PeerTransport — with start/stop. `__main__` builds one from settings; tests build several in one process.
Its credentials are a raftstore certificate whose CN is this member's node id (SHOAL_RAFT_MEMBERS' third
field); every other bootstrap member must name its node id too, since raft peers are known by certificate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from services.raftstore import snapfile
from services.raftstore.atrest import KEK_AUTOLOCK, DataKeys, PlainSealer, parse_unlock_key
from services.raftstore.driver import Driver, DriverConfig
from services.raftstore.fsm import FSM
from services.raftstore.membership import Membership
from services.raftstore.raft import ConfChange, ConfChangeType, Entry, EntryType, HardState
from services.raftstore.settings import MemberInfo, RaftstoreSettings
from services.raftstore.transport import PEER_COMPONENT, PeerAddr, PeerTransport
from services.raftstore.wal import WAL, Replayed
from shoal import pki, unlockkey
from shoal.errors import NotFound
from shoal.metrics import Registry
from shoal.store.memory import MemoryStore
from shoal.store.txn import TxnResult
from shoal.transport import Credentials, TransportError

log = logging.getLogger(__name__)

#: the cluster's unlock key while autolock is on: `{"id": "unlock-key", "key": "SWMKEY-1-..."}` in kind `ca`,
#: written only by the CA (services/ca) and read here from this member's own state machine
UNLOCK_KIND, UNLOCK_ID = unlockkey.KIND, unlockkey.OBJECT_ID


class Member:
    def __init__(self, settings: RaftstoreSettings, creds: Credentials, *, rng: random.Random | None = None,
                 metrics: Registry | None = None, unlock_key: bytes | None = None,
                 keys: DataKeys | None = None) -> None:
        """Raises atrest.Locked when autolock is on and no `unlock_key` is given, atrest.WrongKey for a wrong
        one, WalCorrupt for damaged or tampered data. `keys`: the data keys already opened (and `creds` opened
        with them: `DataKeys.open_credentials`)."""
        self.settings = settings
        self.creds = creds
        bootstrap = bootstrap_members(settings.members(), settings.raft_id, creds)
        self.me = next(m for m in bootstrap if m.id == settings.raft_id)
        self.metrics = metrics or Registry()
        #: the data keys sealing the WAL and the snapshot, wrapped by the KEK beside the TLS key (atrest)
        self.keys = keys if keys is not None else DataKeys.load(settings.data_dir, creds.dir, unlock_key)
        # the TLS key as autolock wants it on disk: encrypted under the unlock key, or plain (shoal.keyfile)
        self.keys.settle_tls_key(creds)
        sealer = self.keys.sealer()
        if settings.raft_bench_plaintext:
            log.warning("raftstore %d: SHOAL_RAFT_BENCH_PLAINTEXT is set: the WAL and snapshot are NOT encrypted "
                        "(the benchmark's control; never use it for a real cluster)", settings.raft_id)
            sealer = PlainSealer()
        self.wal, replayed = WAL.open(settings.data_dir, sealer)
        try:
            snap = snapfile.load(settings.data_dir, sealer)
        except BaseException:
            self.wal.close()
            raise
        log.info("raftstore %d: replayed %d entries from %s (term %d, commit %d, snapshot at %d)", self.me.id,
                 len(replayed.entries), self.wal.path, replayed.hard_state.term, replayed.hard_state.commit,
                 snap.index if snap else 0)
        if settings.force_new_cluster:
            force_new_cluster(self.wal, replayed, self.me.id)
        # A joining member knows where the others are (to answer the leader) but not who votes: that comes with
        # the leader's snapshot.
        membership = Membership(bootstrap)
        peers = [] if settings.raft_join else [m.id for m in bootstrap]
        self.transport = PeerTransport(self.me.id, {}, deliver=lambda _m: None, creds=creds, metrics=self.metrics,
                                       max_message=settings.raft_max_message)
        cfg = DriverConfig(tick=settings.raft_tick, election_ticks=settings.raft_election_ticks,
                           heartbeat_ticks=settings.raft_heartbeat_ticks, read_timeout=settings.read_timeout,
                           snapshot_interval=settings.snapshot_interval, snapshot_tail=settings.snapshot_tail,
                           snapshot_bytes=settings.snapshot_bytes, snapshot_tail_bytes=settings.snapshot_tail_bytes,
                           disk_reserve=settings.disk_reserve, fsync_in_thread=settings.fsync_in_thread)
        fsm = FSM(MemoryStore(history_bytes=settings.watch_history_bytes))
        self.driver = Driver(self.me.id, peers, self.wal, replayed, fsm, self.transport, cfg, rng=rng,
                             metrics=self.metrics, snapshot=snap, membership=membership)
        self.transport.deliver = self.driver.receive
        self.driver.on_resealed = self._resealed
        self.driver.on_commit = self._committed
        self._follow_autolock()
        if self.keys.rotation_owed:  # autolock was turned on and the rotation that goes with it did not finish
            self.rotate_data_key()
        self.driver.on_membership = self._membership_changed
        self._follow_membership(self.driver.membership)
        self._task: asyncio.Task[None] | None = None
        #: called if the driver dies of an exception (a broken invariant): its state can no longer be trusted
        self.on_crash: Callable[[BaseException], None] | None = None

    @property
    def members(self) -> list[MemberInfo]:
        return self.driver.membership.all()

    def member(self, member_id: int | None) -> MemberInfo | None:
        return self.driver.membership.get(member_id)

    def _membership_changed(self, membership: Membership) -> None:
        self._follow_membership(membership)
        self._follow_autolock()  # after an installed snapshot, which may carry a new unlock key (no commit says so)

    def _follow_membership(self, membership: Membership) -> None:
        self.transport.blocked = set(membership.removed)
        self.transport.set_peers({m.id: PeerAddr(m.peer_host, m.peer_port, m.node_id) for m in membership.all()})

    def rotate_data_key(self) -> None:
        """A new data key for new records; the snapshot and the WAL are re-encrypted under it at the next
        Ready, and then the old key is forgotten (`_resealed`)."""
        self.driver.reseal(self.keys.rotate())
        log.info("raftstore %d: data key rotated to key %d; re-encrypting the snapshot and the WAL", self.me.id,
                 self.keys.current)

    def _committed(self, result: TxnResult) -> None:
        if any(c.kind == UNLOCK_KIND and c.id == UNLOCK_ID for c in result.changes):
            self._follow_autolock()

    def _follow_autolock(self) -> None:
        """Wrap the data keys as the cluster says: under its unlock key (object `ca/unlock-key`, written by the
        CA when autolock is turned on or the key rotated) or, without one, under the KEK file. Turning autolock
        on also rotates the data key (as SwarmKit): the snapshot and WAL are re-encrypted under a key that was
        never wrapped by a KEK on disk."""
        try:
            text = self.driver.fsm.mem.get(UNLOCK_KIND, UNLOCK_ID).get("key")
        except NotFound:
            text = None
        try:
            key = parse_unlock_key(text) if isinstance(text, str) else None
        except ValueError:
            log.error("raftstore %d: the cluster's unlock key is malformed; keeping the keys as they are",
                      self.me.id)
            return
        have = self.keys.kek if self.keys.mode == KEK_AUTOLOCK else None
        if key == have:
            return
        turning_on = have is None
        self.keys.set_autolock(key, owe_rotation=turning_on, creds=self.creds)
        if key is None:
            log.warning("raftstore %d: autolock is off: the data keys are wrapped by %s again", self.me.id,
                        self.keys.kek_path)
        elif turning_on:
            log.warning("raftstore %d: autolock is on: the data keys and the TLS key are wrapped by the unlock "
                        "key, which is not on disk; a restart will need `shoal swarm unlock`", self.me.id)
            self.rotate_data_key()
        else:
            log.warning("raftstore %d: the unlock key was rotated; the data keys are wrapped by the new one",
                        self.me.id)

    def _resealed(self) -> None:
        if self.keys.retire():
            log.info("raftstore %d: the snapshot and the WAL are sealed under data key %d only; older keys "
                     "forgotten", self.me.id, self.keys.current)

    async def start(self) -> None:
        await self.transport.start(self.me.peer_host, self.me.peer_port)
        self._task = asyncio.create_task(self.driver.run(), name="raft.driver")
        self._task.add_done_callback(self._driver_done)

    def _driver_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        assert err is not None
        log.critical("raftstore %d: the raft driver failed: %r", self.me.id, err, exc_info=err)
        if self.on_crash is not None:
            self.on_crash(err)

    async def stop(self) -> None:
        self.driver.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        await self.transport.stop()
        self.wal.close()


def bootstrap_members(members: list[MemberInfo], me: int, creds: Credentials) -> list[MemberInfo]:
    """SHOAL_RAFT_MEMBERS checked against this member's certificate: it must be a manager's raftstore
    certificate, its CN this member's node id (filled in when the spec leaves it out), and every other member
    must name its node id. Raises TransportError (a start-up error) otherwise."""
    ident = creds.identity
    if ident.role != pki.MANAGER or ident.component != PEER_COMPONENT:
        raise TransportError(f"raftstore: {creds.cert_file} is the certificate of the {ident.describe()}; a raft "
                             "member needs a manager's raftstore certificate")
    out = []
    for m in members:
        if m.id == me:
            if m.node_id and m.node_id != ident.node_id:
                raise TransportError(f"raftstore: SHOAL_RAFT_MEMBERS names member {me}'s node {m.node_id!r}, but "
                                     f"its certificate is node {ident.node_id!r}")
            m = MemberInfo(m.id, m.api_url, m.peer_host, m.peer_port, ident.node_id)
        elif not m.node_id:
            raise TransportError(f"raftstore: SHOAL_RAFT_MEMBERS gives no node id for member {m.id} "
                                 "('id=api_url,peer_host:port,node_id'): raft peers are known by the node id in "
                                 "their certificate")
        out.append(m)
    return out


def force_new_cluster(wal: WAL, replayed: Replayed, me: int) -> None:
    """--force-new-cluster: make this member, with its data, a cluster of one (for a majority lost for good).
    Entries past the commit index are dropped (no quorum ever acknowledged them as far as we know) and a
    committed FORCE_NEW_CLUSTER change is written after the rest: every other id is removed for good."""
    hs = replayed.hard_state
    index = hs.commit + 1
    entry = Entry(hs.term, index, ConfChange(ConfChangeType.FORCE_NEW_CLUSTER, me).encode(), EntryType.CONF_CHANGE)
    new_hs = HardState(hs.term, me, index)
    wal.save(new_hs, [entry])  # an entry at `index` replaces whatever followed the commit index (on replay too)
    replayed.entries = [e for e in replayed.entries if e.index < index] + [entry]
    replayed.hard_state = new_hs
    log.warning("raftstore %d: --force-new-cluster: this member is now a cluster of one, from its data up to "
                "entry %d; every other member id is removed for good", me, hs.commit)
