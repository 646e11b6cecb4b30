"""A concurrent register workload for fault-injection tests, its history, and the checks run after the faults.

Writers (asyncio tasks, each with its own StoreClient) create distinct keys, overwrite and compare-and-set a
few shared keys, and read keys back with linearizable GETs. Some writers are pinned to one member (writes go
through that member's forwarding; a dead member only gives that writer errors), the rest fail over across all
members. Every operation is recorded with its invoke/return times (one monotonic clock, one process) and its
outcome: ``ok``, ``fail`` (a definite error: it did not happen) or ``unknown`` (timed out or the connection
dropped after sending: it may happen at any later time, or never).

`verify()` then checks, once the faults are healed:
(a) the history — plus a final read of every key through every live member — is linearizable
    (tests/tools/lincheck.py), each key a register: creates and updates are writes, a check+update transaction
    is a compare-and-set, a 404 reads as None;
(b) no acknowledged write is lost: every acked create is present with its value, and every shared key's final
    version is at least the revision of its last acknowledged write (nothing acked rolled back);
(c) every live member applies the same index with the same `state_hash` (checked first: the reads of (a) and
    (b) are then the same through every member);
plus no operation hung (each returned within the client's bounds) and no 503'd write was applied anyway
(a retried create would then find its own key: AlreadyExists)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shoal.errors import (
    AlreadyExists,
    NotFound,
    OutcomeUnknown,
    PreconditionFailed,
    ShoalError,
    Unavailable,
)
from shoal.store import txn as t
from shoal.store.client import StoreClient
from tests.integration.raftprocs import RaftProcs, eventually
from tests.tools import lincheck

KIND = "task"
SERVICE = "faults"  # every object of the workload has this service_id (one filtered list reads them all)
INIT = "init"


def register(key: str, value: str) -> dict[str, Any]:
    return {"id": key, "service_id": SERVICE, "node_id": None, "desired_state": "running", "value": value}


@dataclass
class Op:
    client: int
    kind: str  # "write" (create or update), "cas", "read"
    key: str
    input: Any
    call: float
    ret: float | None = None
    outcome: str = ""  # "ok" | "fail" | "unknown"
    output: Any = None
    revision: int | None = None
    create: bool = False
    error: str = ""
    member: str = ""

    @property
    def duration(self) -> float:
        return (self.ret if self.ret is not None else self.call) - self.call

    def linop(self) -> lincheck.Operation | None:
        if self.outcome == "fail":
            return None  # a definite error: it did not happen
        ret = self.ret if self.outcome == "ok" else None
        if self.kind == "read":
            return None if ret is None else lincheck.Operation(self.client, self.key, "read", None, self.output,
                                                                self.call, ret)
        if self.kind == "cas":
            return lincheck.Operation(self.client, self.key, "cas", tuple(self.input),
                                      self.output if ret is not None else None, self.call, ret)
        return lincheck.Operation(self.client, self.key, "write", self.input, None, self.call, ret)


@dataclass
class Counters:
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    duplicate_creates: list[str] = field(default_factory=list)  # created twice: a "failed" attempt had applied
    unexpected: list[str] = field(default_factory=list)  # errors no fault explains (bad request, not found...)


class Workload:
    def __init__(self, cluster: RaftProcs, *, writers: int | None = None, shared_keys: int = 4,
                 timeout: float = 4.0, retry_for: float = 4.0, seed: int | None = None,
                 pause: float = 0.0, value_bytes: int = 0) -> None:
        self.cluster = cluster
        self.n_writers = writers if writers is not None else max(6, cluster.n + 2)
        self.shared = [f"s{k}" for k in range(shared_keys)]
        self.timeout = timeout
        self.retry_for = retry_for
        self.seed = seed if seed is not None else random.randrange(1 << 30)
        self.pause = pause  # seconds each writer waits between operations
        self.pad = "x" * value_bytes  # makes every written value (and log entry) bigger
        self.ops: list[Op] = []
        self.counters = Counters()
        self.acked_writes = 0
        self.created: list[str] = []  # acknowledged distinct keys, for cross-reads
        self.probes = 0
        self._seq: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http = cluster.certs.async_http(timeout=timeout)
        self._progress = asyncio.Event()

    # ---- running ------------------------------------------------------------------------------------------
    def client_for(self, k: int) -> StoreClient:
        """Writers 0..n-1 pinned to member k+1; the others fail over across all members, starting at one."""
        urls = self.cluster.urls
        members = [urls[k]] if k < len(urls) else urls[k % len(urls):] + urls[:k % len(urls)]
        return StoreClient(members, timeout=self.timeout, retry_for=self.retry_for, client=self._http)

    async def setup(self) -> None:
        """Create the shared keys (value INIT) before any fault; recorded like every other write."""
        client = StoreClient(self.cluster.urls, timeout=10, retry_for=30, client=self._http)
        for key in self.shared:
            op = Op(-1, "write", key, INIT, time.monotonic(), create=True)
            res = await client.txn([t.create(KIND, register(key, INIT))])
            op.ret, op.outcome, op.revision = time.monotonic(), "ok", res.revision
            self.ops.append(op)

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._writer(k), name=f"writer-{k}") for k in range(self.n_writers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def close(self) -> None:
        if self._tasks:
            await self.stop()
        await self._http.aclose()

    async def progress(self, n: int, timeout: float, what: str = "") -> None:
        """Wait until `n` more writes are acknowledged; fail after `timeout` s."""
        target = self.acked_writes + n
        start = self.acked_writes
        deadline = time.monotonic() + timeout
        while self.acked_writes < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"writes did not progress {what}: {self.acked_writes - start} of {n} acked "
                                     f"in {timeout}s; counters {self.counters}; last errors "
                                     f"{[o.error for o in self.ops[-5:] if o.error]}")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def _writer(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        client = self.client_for(k)
        seen: dict[str, str] = dict.fromkeys(self.shared, INIT)
        while not self._stop.is_set():
            seq = self._seq[k] = self._seq.get(k, 0) + 1  # unique keys and values across restarts of the writers
            value = f"{k}.{seq}"
            roll = rng.random()
            if roll < 0.35:
                op = await self._write(client, k, f"d{k}.{seq}", value, create=True)
                if op.outcome == "ok":
                    self.created.append(op.key)
            elif roll < 0.60:
                key = rng.choice(self.shared)
                op = await self._write(client, k, key, value, create=False)
            elif roll < 0.70:
                key = rng.choice(self.shared)
                op = await self._cas(client, k, key, seen[key], value)
            elif roll < 0.93 or not self.created:
                key = rng.choice(self.shared)
                op = await self._read(client, k, key)
            else:
                op = await self._read(client, k, rng.choice(self.created[-50:]))
            if op.outcome == "ok" and op.key in seen:
                if op.kind == "read" and op.output is not None:
                    seen[op.key] = op.output
                elif op.kind == "write" or (op.kind == "cas" and op.output):
                    seen[op.key] = value
            if op.outcome != "ok":
                await asyncio.sleep(0.05)  # no hot loop against a member that refuses
            elif self.pause:
                await asyncio.sleep(self.pause)

    async def probe(self, member: int, timeout: float = 30.0) -> list[Op]:
        """A create and a shared-key write sent straight to `member` with a long timeout (e.g. queued at a
        SIGSTOPped leader, so that it answers them after SIGCONT), recorded like the workload's own."""
        client = StoreClient([self.cluster.url(member)], creds=self.cluster.certs.client(), timeout=timeout,
                             retry_for=1.0)
        k = 500 + member
        self.probes += 1
        try:
            create = self._write(client, k, f"p{member}.{self.probes}", f"p{member}.{self.probes}", create=True)
            update = self._write(client, k, self.shared[0], f"p{member}.{self.probes}u", create=False)
            return list(await asyncio.gather(create, update))
        finally:
            await client.close()

    async def once(self, member: int, kind: str, key: str, value: str = "", *, stale: bool = False) -> Op:
        """One recorded operation ("write" or "read") through `member` only; `stale` reads skip ReadIndex."""
        client = StoreClient([self.cluster.url(member)], timeout=self.timeout, retry_for=self.retry_for,
                             stale_reads=stale, client=self._http)
        k = 700 + member
        if kind == "read":
            return await self._read(client, k, key)
        return await self._write(client, k, key, value, create=key not in self.shared)

    def _begin(self, op: Op, client: StoreClient) -> Op:
        op.member = client.members[client._current]
        self.ops.append(op)
        return op

    def _end(self, op: Op, outcome: str, error: BaseException | None = None) -> Op:
        op.ret = time.monotonic()
        op.outcome = outcome
        if error is not None:
            op.error = f"{type(error).__name__}: {error}"[:300]
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
        if outcome == "ok" and op.kind != "read":
            self.acked_writes += 1
            self._progress.set()
        return op

    def _write_failed(self, op: Op, what: str, e: Exception) -> Op:
        """The end of a write (or compare-and-set) whose call raised `e`: `unknown` when it may have been applied
        (the store said so, or the answer was lost), `fail` when the store refused it; an error the contract does
        not allow is also counted as unexpected (a store error: refused; anything else: we cannot tell)."""
        if isinstance(e, (OutcomeUnknown, httpx.HTTPError, TimeoutError)):
            return self._end(op, "unknown", e)
        if isinstance(e, Unavailable):
            return self._end(op, "fail", e)
        self.counters.unexpected.append(f"{what}: {e!r}")
        return self._end(op, "fail" if isinstance(e, ShoalError) else "unknown", e)

    async def _write(self, client: StoreClient, k: int, key: str, value: str, *, create: bool) -> Op:
        op = self._begin(Op(k, "write", key, value, time.monotonic(), create=create), client)
        obj = register(key, value + self.pad)
        try:
            res = await client.txn([t.create(KIND, obj) if create else t.update(KIND, obj, expect_version=None)])
        except AlreadyExists as e:
            # Our key is unique, so an earlier attempt of this very call applied although it was answered with
            # a retryable error: the write took effect within the call, but the error contract was broken.
            self.counters.duplicate_creates.append(f"{key}: {e}")
            return self._end(op, "ok", e)
        except Exception as e:
            return self._write_failed(op, f"write {key}", e)
        op.revision = res.revision
        return self._end(op, "ok")

    async def _cas(self, client: StoreClient, k: int, key: str, expected: str, value: str) -> Op:
        op = self._begin(Op(k, "cas", key, (expected, value), time.monotonic()), client)
        ops = [t.check(KIND, key, value=expected + self.pad if expected != INIT else INIT),
               t.update(KIND, register(key, value + self.pad), expect_version=None)]
        try:
            res = await client.txn(ops)
        except PreconditionFailed:
            op.output = False
            return self._end(op, "ok")
        except Exception as e:
            return self._write_failed(op, f"cas {key}", e)
        op.output, op.revision = True, res.revision
        return self._end(op, "ok")

    async def _read(self, client: StoreClient, k: int, key: str) -> Op:
        op = self._begin(Op(k, "read", key, None, time.monotonic()), client)
        try:
            obj = await client.get(KIND, key)
        except NotFound:
            op.output = None
            return self._end(op, "ok")
        except Exception as e:  # a failed read constrains nothing
            return self._end(op, "fail", e)
        op.output = self._unpad(obj.get("value"))
        return self._end(op, "ok")

    def _unpad(self, value: Any) -> Any:
        if self.pad and isinstance(value, str) and value.endswith(self.pad) and value != INIT:
            return value[: -len(self.pad)]
        return value

    # ---- checking -----------------------------------------------------------------------------------------
    async def final_reads(self, members: list[int]) -> dict[int, dict[str, Any]]:
        """Read every workload key through each member (one linearizable list each), recorded as reads."""
        keys = {o.key for o in self.ops}
        out: dict[int, dict[str, Any]] = {}
        for i in members:
            client = StoreClient([self.cluster.url(i)], timeout=10, retry_for=30, client=self._http)
            call = time.monotonic()
            _, items = await client.list(KIND, service_id=SERVICE)
            ret = time.monotonic()
            found = {o["id"]: o for o in items}
            out[i] = found
            for key in sorted(keys):
                obj = found.get(key)
                value = self._unpad(obj["value"]) if obj is not None else None
                self.ops.append(Op(1000 + i, "read", key, None, call, ret, "ok", value, member=self.cluster.url(i)))
        return out

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps([asdict(o) for o in self.ops], default=str))


async def verify(cluster: RaftProcs, wl: Workload, *, converge_timeout: float = 60.0,
                 max_op_seconds: float | None = None) -> str:
    """Checks (a)-(c) of the module doc on the live members; returns their common state hash."""
    live = [i for i in cluster.ids if cluster.alive(i) and i not in getattr(cluster, "paused", set())]
    assert live, "no live member to check"
    digest: str = await asyncio.to_thread(eventually, lambda: cluster.converged(live), converge_timeout,
                                          f"members {live} to apply the same index with the same state_hash", 0.2)
    finals = await wl.final_reads(live)
    wl.dump(cluster.base / "history.json")

    # (a) linearizable
    history = [lo for o in wl.ops if (lo := o.linop()) is not None]
    started = time.monotonic()
    ok, bad_key = await asyncio.to_thread(lincheck.check, history)
    check_s = time.monotonic() - started
    if not ok:
        sub = sorted((o for o in wl.ops if o.key == bad_key), key=lambda o: o.call)
        lines = "\n".join(f"  c{o.client} {o.kind} {o.input!r}->{o.output!r} {o.outcome} "
                          f"[{o.call:.3f}, {o.ret if o.ret is None else round(o.ret, 3)}] {o.member} {o.error}"
                          for o in sub[-40:])
        raise AssertionError(f"history not linearizable on key {bad_key!r} (history.json in {cluster.base}):\n"
                             f"{lines}")

    # (b) nothing acknowledged was lost (on every live member), nothing 503'd was applied
    for i, found in finals.items():
        for o in wl.ops:
            if o.outcome != "ok" or o.kind == "read":
                continue
            obj = found.get(o.key)
            assert obj is not None, f"member {i}: acknowledged write of {o.key!r} (rev {o.revision}) is missing"
            if o.create and o.key not in wl.shared:
                assert wl._unpad(obj["value"]) == o.input, f"member {i}: {o.key!r} holds {obj['value']!r}"
            if o.revision is not None:
                assert obj["meta"]["version"] >= o.revision, (
                    f"member {i}: {o.key!r} is at version {obj['meta']['version']}, older than the acknowledged "
                    f"write at revision {o.revision}: an acknowledged write was rolled back")
    assert not wl.counters.duplicate_creates, f"writes answered 503 were applied: {wl.counters.duplicate_creates}"
    assert not wl.counters.unexpected, f"unexpected errors: {wl.counters.unexpected[:5]}"

    if max_op_seconds is not None:
        slowest = max(wl.ops, key=lambda o: o.duration)
        assert slowest.duration <= max_op_seconds, f"an operation hung for {slowest.duration:.1f}s: {slowest}"
    assert all(o.ret is not None for o in wl.ops), "an operation never returned"
    print(f"history: {len(wl.ops)} ops, {wl.counters.ok} ok / {wl.counters.fail} fail / {wl.counters.unknown} "
          f"unknown, {wl.acked_writes} acked writes; lincheck {check_s:.2f}s; seed {wl.seed}")
    return digest


Fault = Callable[[Workload], Awaitable[None]]
