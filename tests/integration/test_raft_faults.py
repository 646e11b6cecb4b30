"""Fault injection on real raftstore processes (3 and 5 members) under concurrent writers.

Every scenario runs the register workload of faultload.py (writers pinned to each member plus failing-over
ones; creates, overwrites, compare-and-sets and linearizable reads), injects its faults — kill -9, SIGSTOP,
partitions and one-way drops through per-link proxies (faultprocs.py), slow links, full disks — heals them, and
then checks that (a) the history is linearizable, (b) no acknowledged write was lost, (c) every live member
converged to the same state_hash. Raft timing is short (50 ms ticks, elections after 0.6-1.2 s).

Full disks (each data directory on its own tmpfs; needs root) are held to docs/raftstore.md: a leader under
SHOAL_DISK_RESERVE refuses writes with a 503 and stays up, reads go on; a member whose WAL write fails may exit
(fail-stop, as etcd) but leaves a WAL that replays whole; either way writes end in definite errors instead of
hanging or timing out, nothing acknowledged is lost, and the members converge once space is freed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faultload import Op, Workload, verify
from tests.integration.faultprocs import FaultyRaftProcs, fill
from tests.integration.raftprocs import eventually
from tests.tools.faultproxy import Mode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

Make = Callable[..., FaultyRaftProcs]
NEMESIS_SECONDS = 12.0  # the default tier's random-fault run
#: the soak tier's random-fault run; CI's bounded form keeps the default, a real soak sets e.g. 1800
SOAK_SECONDS = float(os.environ.get("SHOAL_SOAK_SECONDS") or 45)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Make]:
    made: list[FaultyRaftProcs] = []

    def make(members: int = 3, **kwargs: Any) -> FaultyRaftProcs:
        c = FaultyRaftProcs(tmp_path / f"cluster{len(made)}", members, **kwargs)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@contextlib.asynccontextmanager
async def running(cluster: FaultyRaftProcs, warmup: int = 30, **kwargs: Any) -> AsyncIterator[Workload]:
    """Start the cluster and the writers; yield once `warmup` writes were acknowledged."""
    await asyncio.to_thread(cluster.start_all)
    await asyncio.to_thread(cluster.wait_leader, 20)
    wl = Workload(cluster, **kwargs)
    try:
        await wl.setup()
        wl.start()
        await wl.progress(warmup, 30, "before any fault")
        yield wl
    finally:
        wl.dump(cluster.base / "history.json")  # for a failed test (verify() writes it again with its final reads)
        await wl.close()


async def last_writes_then_verify(cluster: FaultyRaftProcs, wl: Workload, n: int, timeout: float, what: str,
                                  max_op_seconds: float | None = 20) -> None:
    """How a scenario ends once its faults are healed: `n` more writes acknowledged within `timeout` s, the
    writers stopped, then the checks (a)-(c) of the module doc."""
    await wl.progress(n, timeout, what)
    await wl.stop()
    await verify(cluster, wl, max_op_seconds=max_op_seconds)


async def leader(cluster: FaultyRaftProcs, among: list[int] | None = None, timeout: float = 20) -> int:
    return await asyncio.to_thread(cluster.wait_leader, timeout, among)


async def until(what: str, pred: Callable[[], Any], timeout: float) -> Any:
    return await asyncio.to_thread(eventually, pred, timeout, what, 0.1)


def others(cluster: FaultyRaftProcs, *excluded: int) -> list[int]:
    return [i for i in cluster.ids if i not in excluded]


async def settled(c: FaultyRaftProcs, wl: Workload, quiet: float = 2.0, timeout: float = 30.0) -> None:
    """Wait until no member started or exited and no write was acknowledged for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last: tuple[object, ...] = ()
    since = time.monotonic()
    while time.monotonic() < deadline:
        now = (tuple(c.alive(i) for i in c.ids), wl.acked_writes)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the cluster did not settle within {timeout}s (alive, acked: {last})")


def writes_since(wl: Workload, t0: float) -> list[Op]:
    """The workload's writes invoked after `t0` that have returned."""
    return [o for o in wl.ops if o.kind != "read" and o.call > t0 and o.ret is not None and o.client < 500]


def log_of(c: FaultyRaftProcs, i: int) -> str:
    path = c.base / "logs" / f"raftstore-{i}.log"
    return path.read_text(errors="replace") if path.exists() else ""


def assert_clean_wal(c: FaultyRaftProcs, i: int, since: int) -> None:
    """Member i's log after byte `since` (its restart) shows a WAL that replayed whole: no WalCorrupt, and no
    torn tail (a failed write cuts its partial batch off before the member exits, docs/raftstore.md)."""
    text = log_of(c, i)[since:]
    assert "WalCorrupt" not in text and "refusing to start" not in text, text[-3000:]
    assert "torn tail" not in text, f"member {i} left a torn WAL tail behind: {text[-3000:]}"


# ---- crashes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("members", [3, 5])
async def test_kill_9_the_leader_under_writes_then_restart_it(make_cluster: Make, members: int) -> None:
    c = make_cluster(members)
    async with running(c) as wl:
        lead = await leader(c)
        c.kill(lead)
        new = await leader(c, others(c, lead))
        assert new != lead
        await wl.progress(30, 30, "under the new leader")
        c.start(lead)
        await last_writes_then_verify(c, wl, 20, 30, "after the old leader restarted")


async def test_kill_9_a_follower_under_writes_then_restart_it(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        lead = await leader(c)
        follower = others(c, lead)[0]
        c.kill(follower)
        await wl.progress(30, 30, "with a follower down")
        c.start(follower)
        await last_writes_then_verify(c, wl, 20, 30, "after the follower restarted")


@pytest.mark.parametrize("members", [3, 5])
async def test_kill_9_a_majority_then_restart_it(make_cluster: Make, members: int) -> None:
    c = make_cluster(members)
    async with running(c) as wl:
        lead = await leader(c)
        victims = [lead, *others(c, lead)][: members // 2 + 1]  # the leader and enough followers to lose quorum
        for i in victims:
            c.kill(i)
        survivors = others(c, *victims)
        # No survivor can lead: writes invoked from now on fail (or time out) instead of being acknowledged.
        # (Writes committed before the kill may still be acknowledged late, through a survivor.)
        await until("the survivors to know there is no leader", lambda: all(
            (s := c.status(i)) and s["leader"] is None for i in survivors), 10)
        window = time.monotonic()
        await asyncio.sleep(2.0)
        late = [o for o in writes_since(wl, window) if o.outcome == "ok"]
        assert not late, f"writes acknowledged without a quorum: {late}"
        for i in victims:
            c.start(i)
        await leader(c)
        await last_writes_then_verify(c, wl, 30, 40, "after the majority restarted")


async def test_all_members_killed_at_once_then_restarted_lose_no_acknowledged_write(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c, warmup=60) as wl:
        for i in c.ids:
            c.procs[i].kill()  # all at once: no member sees another one stop
        for i in c.ids:
            c.procs[i].wait(10)
        await asyncio.sleep(0.5)
        for i in c.ids:
            c.start(i)
        await leader(c)
        await last_writes_then_verify(c, wl, 30, 40, "after the whole cluster restarted")


# ---- a frozen leader ----------------------------------------------------------------------------------------
async def test_sigstop_the_leader_past_the_election_timeout_then_sigcont(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        old = await leader(c)
        term = (await asyncio.to_thread(c.status, old) or {})["term"]
        c.pause(old)
        new = await leader(c, others(c, old))
        assert new != old
        await wl.progress(30, 30, "while the old leader is frozen")
        # Writes sent to the frozen leader wait in its socket; it handles them after SIGCONT, still believing it
        # leads until it hears the new term: none of them may be acknowledged and then lost.
        probes = [asyncio.create_task(wl.probe(old)) for _ in range(3)]
        await asyncio.sleep(0.3)
        c.resume(old)
        results = [op for ops in await asyncio.gather(*probes) for op in ops]
        await until("the old leader to learn the new term and step down", lambda: (s := c.status(old)) and
                    s["term"] > term and s["role"] != "leader", 15)
        await leader(c)  # one leader, every member agrees
        await last_writes_then_verify(c, wl, 20, 30, "after the old leader resumed", max_op_seconds=35)
        print("probes at the resumed leader:", [(o.outcome, o.error[:60]) for o in results])


# ---- partitions ---------------------------------------------------------------------------------------------
async def test_isolated_leader_steps_down_and_the_majority_carries_on(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        old = await leader(c)
        c.isolate(old)
        started = time.monotonic()
        await until("the isolated leader to step down (CheckQuorum)",
                    lambda: (s := c.status(old)) and s["role"] != "leader", 10)
        stepped_down = time.monotonic() - started
        new = await leader(c, others(c, old))
        assert new != old
        await wl.progress(30, 30, "on the majority side")
        c.heal()
        await leader(c)  # the old leader rejoins: one leader, every member agrees
        await last_writes_then_verify(c, wl, 20, 30, "after healing")
        assert stepped_down < 5, f"the isolated leader stepped down only after {stepped_down:.1f}s"


async def test_five_members_split_two_three_with_the_leader_in_the_minority(make_cluster: Make) -> None:
    c = make_cluster(5)
    async with running(c) as wl:
        old = await leader(c)
        minority = [old, others(c, old)[0]]
        majority = others(c, *minority)
        c.partition(minority, majority, mode=Mode.REJECT)
        await until("the minority leader to step down",
                    lambda: (s := c.status(old)) and s["role"] != "leader", 10)
        new = await leader(c, majority)
        assert new in majority
        await wl.progress(30, 30, "on the majority side")
        c.heal()
        await leader(c)
        await last_writes_then_verify(c, wl, 20, 30, "after healing")


async def test_one_way_drop_from_the_leader_to_a_follower(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        lead = await leader(c)
        deaf = others(c, lead)[0]
        c.cut([lead], [deaf], both_ways=False)  # the follower still talks to the leader but never hears back
        await asyncio.sleep(2.0)  # several election timeouts: its pre-votes must not unseat the leader
        await wl.progress(30, 30, "with one deaf follower")
        c.heal()
        # the writers go on, so the members' applied indexes are never seen equal in one poll; catching up means
        # reaching what the leader had committed at the heal (verify() checks equal states once writers stop)
        healed_at = await until("the leader's commit index", lambda: (s := c.status(lead)) and s["commit_index"], 10)
        await until("the deaf follower to catch up",
                    lambda: (s := c.status(deaf)) and s["applied_index"] >= healed_at, 30)
        await last_writes_then_verify(c, wl, 20, 30, "after healing")


async def test_stalled_leader_links_deliver_stale_messages_late(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        old = await leader(c)
        c.cut([old], others(c, old), both_ways=False, mode=Mode.STALL)  # its appends wait in the sockets
        new = await leader(c, others(c, old))
        assert new != old
        await until("the old leader to step down", lambda: (s := c.status(old)) and s["role"] != "leader", 15)
        await wl.progress(30, 30, "under the new leader")
        c.heal()  # the old term's appends and heartbeats arrive now
        await last_writes_then_verify(c, wl, 20, 30, "after the stale messages arrived")


async def test_slow_links_under_load_still_converge(make_cluster: Make) -> None:
    c = make_cluster(3)
    async with running(c) as wl:
        c.delay(100, 50)  # 50-150 ms per chunk on every peer link
        await wl.progress(40, 40, "with slow links")
        await asyncio.sleep(1.0)
        c.heal()
        await last_writes_then_verify(c, wl, 20, 30, "after healing")


# ---- the checks themselves ----------------------------------------------------------------------------------
async def test_the_checks_catch_a_stale_read_from_a_cut_off_member(make_cluster: Make) -> None:
    """The harness has teeth: reads with stale=true from a partitioned member after the majority overwrote every
    shared key must make the history non-linearizable."""
    c = make_cluster(3)
    async with running(c) as wl:
        old = await leader(c)
        c.isolate(old)
        new = await leader(c, others(c, old))
        await wl.stop()
        for key in wl.shared:
            assert (await wl.once(new, "write", key, f"fresh-{key}")).outcome == "ok"
        for key in wl.shared:
            assert (await wl.once(old, "read", key, stale=True)).outcome == "ok"
        c.heal()
        with pytest.raises(AssertionError, match="not linearizable"):
            await verify(c, wl)


# ---- disks --------------------------------------------------------------------------------------------------
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
RESERVE = 1 << 20  # SHOAL_DISK_RESERVE for the tmpfs tests (the 16 MiB default is more than the whole tmpfs)


@needs_root
async def test_a_leader_under_its_disk_reserve_refuses_writes_then_recovers_when_space_is_freed(
        make_cluster: Make) -> None:
    c = make_cluster(3, extra_env={"SHOAL_DISK_RESERVE": str(RESERVE)})
    for i in c.ids:
        c.mount_tmpfs(i, "4m")
    async with running(c, retry_for=1.0) as wl:  # a refused write fails after 1 s of retries; a hung one in 4 s
        lead = await leader(c)
        term = (await asyncio.to_thread(c.status, lead) or {})["term"]
        filler = fill(c.data_dir(lead), leave=RESERVE // 4)  # under the reserve; the WAL could still grow
        started = time.monotonic()
        refused = await until("the leader to refuse a write for lack of disk", lambda: (
            r := c.http.post(c.url(lead) + "/v1/txn", json={"ops": [{"op": "create", "kind": "task", "object": {
                "id": f"probe-{time.monotonic()}", "service_id": "probe"}}]})).status_code == 503 and r, 10)
        assert "disk" in refused.json()["message"], refused.text
        window = time.monotonic()
        for i in c.ids:  # reads keep working, through every member
            assert (await wl.once(i, "read", wl.shared[0])).outcome == "ok"
        await asyncio.sleep(6.0)
        st = await asyncio.to_thread(c.status, lead)
        if st is not None and st["role"] == "leader" and st["term"] == term:  # it led the whole time
            late = writes_since(wl, window)
            assert late, "no write attempt returned while the leader was out of disk space"
            assert all(o.outcome == "fail" for o in late), (
                "writes to a leader out of disk space must fail with a definite error (not be acknowledged, not "
                f"time out): {[o for o in late if o.outcome != 'fail'][:3]}")
        filler.unlink()
        await wl.progress(30, 30, "after the space was freed")
        assert all(c.alive(i) for i in c.ids), "no member may exit for a disk under the reserve"
        await wl.stop()
        await verify(c, wl, max_op_seconds=20)
        print(f"refused after {window - started:.1f}s: {refused.json()['message']}")


@needs_root
async def test_a_follower_whose_disk_fills_up_recovers_with_an_intact_wal(make_cluster: Make) -> None:
    c = make_cluster(3, extra_env={"SHOAL_DISK_RESERVE": str(RESERVE)})
    for i in c.ids:
        c.mount_tmpfs(i, "4m")
    async with running(c) as wl:
        lead = await leader(c)
        f = others(c, lead)[0]
        filler = fill(c.data_dir(f))  # completely: its next WAL write fails
        await wl.progress(30, 30, "with a follower's disk full")  # the leader and the other follower suffice
        await asyncio.sleep(1.0)
        exited = None if c.alive(f) else c.procs[f].returncode
        filler.unlink()
        since = len(log_of(c, f))
        if exited is not None:
            c.start(f)  # what a supervisor does
        await until(f"member {f} to answer again", lambda: c.healthy(f), 30)
        await last_writes_then_verify(c, wl, 20, 30, "after the space was freed")
        assert_clean_wal(c, f, since)
        print(f"follower {f} with a full disk: exit code {exited}")


@needs_root
async def test_every_disk_full_without_a_reserve_errors_promptly_and_loses_nothing(make_cluster: Make) -> None:
    """The reserve off (0): the leader's WAL write itself fails. Writes must end in errors, not hang; after the
    space is freed and the members restarted, every WAL replays whole and nothing acknowledged is lost."""
    c = make_cluster(3, extra_env={"SHOAL_DISK_RESERVE": "0"})
    for i in c.ids:
        c.mount_tmpfs(i, "4m")
    async with running(c, retry_for=1.0) as wl:  # a refused write fails after 1 s of retries; a hung one in 4 s
        fillers = [fill(c.data_dir(i)) for i in c.ids]
        # Writes in flight meanwhile may end either way (a leader that fails its WAL write exits; a successor
        # may get elected on a few bytes of slack and exit in turn): wait until that has played out.
        await settled(c, wl)
        window = time.monotonic()
        await asyncio.sleep(6.0)
        late = writes_since(wl, window)
        assert late, "no write attempt returned while every disk was full"
        assert all(o.outcome == "fail" for o in late), (
            f"with every disk full writes must fail with a definite error: {[o for o in late if o.outcome != 'fail']}")
        exits = {i: c.procs[i].returncode for i in c.ids if not c.alive(i)}
        for p in fillers:
            p.unlink()
        since = {i: len(log_of(c, i)) for i in c.ids}
        for i in exits:
            c.start(i)
        await leader(c, timeout=30)
        await last_writes_then_verify(c, wl, 30, 40, "after the space was freed")
        for i in c.ids:
            assert_clean_wal(c, i, since[i])
        print(f"members that exited with a full disk: {exits}")


# ---- snapshots ----------------------------------------------------------------------------------------------
SNAPSHOTS = {"SHOAL_SNAPSHOT_INTERVAL": "200", "SHOAL_SNAPSHOT_TAIL": "50"}


def metric(c: FaultyRaftProcs, i: int, name: str) -> float:
    text = c.http.get(c.url(i) + "/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
              or line.startswith(name + "{")]
    return sum(values)


async def test_a_follower_down_past_compaction_catches_up_from_a_snapshot(make_cluster: Make) -> None:
    c = make_cluster(3, extra_env=SNAPSHOTS)
    async with running(c) as wl:
        lead = await leader(c)
        f = others(c, lead)[0]
        c.kill(f)
        behind = (await asyncio.to_thread(c.status, lead) or {})["commit_index"]
        await wl.progress(450, 90, "with a follower down")  # > interval + tail entries past where it stopped
        lead = await leader(c, others(c, f))
        first = await until("the leader to compact its log past the stopped follower", lambda: (
            (st := c.status(lead)) and st.get("first_index", 0) > behind + 1 and st["first_index"]), 30)
        c.start(f)
        await until(f"member {f} to install a snapshot", lambda: metric(c, f, "shoal_raft_snapshots_installed_total")
                    >= 1, 30)
        await last_writes_then_verify(c, wl, 30, 30, "after the follower came back")
        assert metric(c, lead, "shoal_raft_compactions_total") >= 1
        # and the whole cluster restarts from snapshot + tail of the log
        for i in c.ids:
            c.procs[i].kill()
        for i in c.ids:
            c.procs[i].wait(10)
        for i in c.ids:
            c.start(i)
        await leader(c, timeout=30)
        wl.start()
        await last_writes_then_verify(c, wl, 30, 30, "after a whole-cluster restart from snapshots")
        print(f"leader log starts at {first}; follower stopped at {behind}")


# ---- everything at once -------------------------------------------------------------------------------------
ALL_FAULTS = ("isolate", "split", "one-way", "stall", "slow", "kill", "pause")
ROUTING_FREE = ("slow", "kill", "pause")  # faults that do not rely on each member dialling through its own links


async def nemesis(c: FaultyRaftProcs, rng: random.Random, duration: float,
                  faults: tuple[str, ...] = ALL_FAULTS) -> list[str]:
    """Random faults, one at a time, each held 0.5-2 s and then undone, for `duration` seconds."""
    done: list[str] = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        live = c.live()
        fault = rng.choice(faults)
        if fault not in ROUTING_FREE and c.routing_drift():  # a member took the leader's table from a snapshot
            fault = rng.choice(ROUTING_FREE)
        victim = rng.choice(live)
        if fault == "isolate":
            c.isolate(victim, mode=rng.choice([Mode.DROP, Mode.REJECT]))
        elif fault == "split":
            ids = c.ids[:]
            rng.shuffle(ids)
            c.partition(ids[: len(ids) // 2], ids[len(ids) // 2:], mode=rng.choice([Mode.DROP, Mode.REJECT]))
        elif fault == "one-way":
            c.cut([victim], [rng.choice(others(c, victim))], both_ways=False)
        elif fault == "stall":
            c.cut([victim], others(c, victim), both_ways=False, mode=Mode.STALL)
        elif fault == "slow":
            c.delay(rng.uniform(20, 150), rng.uniform(0, 50))
        elif fault == "kill":
            c.kill(victim)
        else:
            c.pause(victim)
        done.append(f"{fault} {victim}" if fault not in ("split", "slow") else fault)
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        c.heal()
        for i in list(c.paused):
            c.resume(i)
        for i in c.ids:
            if not c.alive(i):
                c.start(i)
        await asyncio.sleep(rng.uniform(0.2, 1.0))
    return done


@pytest.mark.parametrize("members", [3, pytest.param(5, marks=pytest.mark.soak)])  # 5 members: CI run only
async def test_random_faults_one_after_another(make_cluster: Make, members: int) -> None:
    seed = int(os.environ.get("SHOAL_FAULT_SEED") or random.randrange(1 << 30))
    print(f"nemesis seed {seed} (SHOAL_FAULT_SEED={seed} replays the fault schedule)")
    c = make_cluster(members)
    async with running(c, seed=seed) as wl:
        done = await nemesis(c, random.Random(seed), NEMESIS_SECONDS)
        await leader(c, timeout=30)
        await last_writes_then_verify(c, wl, 30, 40, f"after the faults {done}", max_op_seconds=35)
        print("faults:", ", ".join(done))


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("members", [3, 5])
async def test_random_faults_for_minutes(make_cluster: Make, members: int) -> None:
    seed = int(os.environ.get("SHOAL_FAULT_SEED") or random.randrange(1 << 30))
    print(f"nemesis seed {seed}")
    c = make_cluster(members)
    async with running(c, seed=seed) as wl:
        done = await nemesis(c, random.Random(seed), SOAK_SECONDS)
        await leader(c, timeout=30)
        await wl.progress(30, 40, "after the faults")
        await wl.stop()
        await verify(c, wl, max_op_seconds=35, converge_timeout=120)
        print(f"{len(done)} faults:", ", ".join(done))


async def test_snapshots_and_compaction_under_random_faults(make_cluster: Make) -> None:
    """Snapshots every 200 entries, so lagging members install them while faults go on. (Once a member installed
    one it dials through the leader's links: from then on only faults that need no per-link routing.)"""
    seed = int(os.environ.get("SHOAL_FAULT_SEED") or random.randrange(1 << 30))
    print(f"nemesis seed {seed}")
    c = make_cluster(3, extra_env=SNAPSHOTS)
    async with running(c, seed=seed) as wl:
        done = await nemesis(c, random.Random(seed), NEMESIS_SECONDS)
        await leader(c, timeout=30)
        await last_writes_then_verify(c, wl, 30, 40, f"after the faults {done}", max_op_seconds=35)
        taken = sum(metric(c, i, "shoal_raft_snapshots_taken_total") for i in c.ids)
        installed = sum(metric(c, i, "shoal_raft_snapshots_installed_total") for i in c.ids)
        print(f"faults: {', '.join(done)}; snapshots taken {taken} (since the last restarts), installed {installed}")
