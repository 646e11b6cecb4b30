"""The pure log helpers (shoal/logs.py), the dispatcher's broker bounds and the agent's file rotation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.logs import file_records, rotate
from services.dispatcher import logs as broker_logs
from services.dispatcher.logs import Gone, LogBroker
from shoal import logs
from shoal.errors import InvalidArgument


def recs(n: int, t0: float = 100.0) -> list[logs.Record]:
    return [logs.record("t1", "stdout", t0 + i, f"l{i}") for i in range(n)]


def test_select_applies_since_then_tail() -> None:
    q = logs.LogQuery(("t1",), tail=2, since=103.0)
    assert [r["line"] for r in logs.select(recs(10), q)] == ["l8", "l9"]
    assert [r["line"] for r in logs.select(recs(5), logs.LogQuery(("t1",), since=103.0))] == ["l3", "l4"]
    assert logs.select(recs(5), logs.LogQuery(("t1",), tail=0)) == []


def test_tail_and_since_parsing() -> None:
    assert logs.parse_tail("all") is None and logs.parse_tail("-1") is None
    assert logs.parse_tail("99999999") == logs.MAX_TAIL
    with pytest.raises(InvalidArgument):
        logs.parse_tail("many")
    assert logs.parse_since("10m", 1000.0) == 400.0
    assert logs.parse_since("1700000000.500000000", 0) == 1700000000.5
    assert logs.parse_since("1970-01-01T00:01:00Z", 0) == 60.0
    assert logs.parse_since("0", 5) is None
    with pytest.raises(InvalidArgument):
        logs.parse_since("yesterday", 0)


def test_chunks_are_bounded_and_round_trip() -> None:
    many = recs(5000)
    parts = list(logs.chunks(many, limit=4096))
    assert all(len(p) <= 4096 for p in parts)
    assert [r for p in parts for r in logs.parse_chunk(p)] == many
    with pytest.raises(InvalidArgument):
        logs.parse_chunk(b'{"task_id": "x", "stream": "tty", "time": 1, "line": ""}\n')


def test_docker_frame_layout_matches_dockerd() -> None:
    rec = logs.record("tk", "stdout", 0.5, "hello")
    frame = logs.docker_log_frame(rec, node_id="nd", service_id="sv", timestamps=False)
    payload = b"com.docker.swarm.node.id=nd,com.docker.swarm.service.id=sv,com.docker.swarm.task.id=tk hello\n"
    assert frame == bytes([1, 0, 0, 0, 0, 0, 0, len(payload)]) + payload
    err = logs.docker_log_frame(logs.record("tk", "shoal", 0.5, "x"), node_id="n", service_id="s", timestamps=True)
    assert err[0] == 2 and err[8:].startswith(b"1970-01-01T00:00:00.500000000Z ")
    buf = bytearray(frame + frame[:5])
    assert [s for s, _ in logs.read_docker_frames(buf)] == [1] and len(buf) == 5
    # `docker service logs --raw` asks without details: only the (optional) time and the line
    raw = logs.docker_log_frame(rec, node_id="nd", service_id="sv", timestamps=True, details=False)
    assert raw[8:] == b"1970-01-01T00:00:00.500000000Z hello\n"


def test_engine_line_parses_nanosecond_times() -> None:
    rec = logs.engine_line(2, b"2024-01-02T03:04:05.123456789Z boom\n", "t")
    assert rec["stream"] == "stderr" and rec["line"] == "boom" and abs(rec["time"] - 1704164645.123456) < 1e-5


def test_rotation_keeps_a_task_bounded(tmp_path: Path) -> None:
    path = tmp_path / "t1.log"
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(5000)))
    assert rotate(tmp_path, limit=1000) == ["t1"]
    assert path.stat().st_size == 0 and (tmp_path / "t1.log.1").stat().st_size <= 1000
    with open(path, "ab") as f:
        f.write(b"after\n")
    lines = [r["line"] for r in file_records("t1", path)]
    assert lines[-2:] == ["line 4999", "after"]


def test_broker_back_pressure_and_gone() -> None:
    async def main() -> None:
        broker = LogBroker()
        req = broker.open("n1", logs.LogQuery(("t1",)))
        assert [r["id"] for r in await broker.poll("n1", 0.0)] == [req.id]
        for _ in range(4):
            await broker.push("n1", req.id, b"x")
        blocked = asyncio.create_task(broker.push("n1", req.id, b"y"))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # the queue is full: the agent's post waits for the reader
        broker.close(req.id)  # the reader went away
        blocked.cancel()
        with pytest.raises(Gone):
            await broker.push("n1", req.id, b"z")
        with pytest.raises(Gone):
            await broker.push("n2", broker.open("n1", logs.LogQuery(("t1",))).id, b"z")  # not n2's request

    asyncio.run(main())


def test_broker_ends_a_request_whose_agent_goes_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that picked a request up but whose posts never arrive (seen: a TLS name mismatch on its chunk
    posts) must not hold the reader for ever: after SILENCE_TIMEOUT without even a keep-alive, one notice, end."""
    monkeypatch.setattr(broker_logs, "SILENCE_TIMEOUT", 0.2)

    async def main() -> list[bytes]:
        broker = LogBroker()
        req = broker.open("n1", logs.LogQuery(("t1",), follow=True))
        await broker.poll("n1", 0.0)
        await broker.push("n1", req.id, b"first\n")
        got = []
        async for chunk in broker.stream(req):
            got.append(chunk)
        with pytest.raises(Gone):  # closed: a late post is told to stop
            await broker.push("n1", req.id, b"late")
        return got

    got = asyncio.run(asyncio.wait_for(main(), 5))
    assert got[0] == b"first\n" and len(got) == 2
    notice = logs.parse_chunk(got[1])[0]
    assert notice["stream"] == "shoal" and "sent nothing for 0s" in notice["line"]


def test_the_live_pump_merges_sources_a_failing_one_ends_alone_and_a_gone_reader_stops_the_rest() -> None:
    from agent.logs import _pump

    async def source(lines: list[str], fail: bool = False) -> AsyncIterator[list[logs.Record]]:
        for line in lines:
            yield [logs.record("t1", "stdout", 1.0, line)]
            await asyncio.sleep(0)
        if fail:
            raise OSError("disk gone")

    async def forever() -> AsyncIterator[list[logs.Record]]:
        while True:
            yield [logs.record("t2", "stdout", 1.0, "again")]
            await asyncio.sleep(0.001)

    posted: list[bytes] = []

    async def post(chunk: bytes, done: bool) -> bool:
        posted.append(chunk)
        return len(posted) < 50

    async def go() -> tuple[bool, bool]:
        whole = await _pump([source(["a", "b"]), source(["c"], fail=True)], post)
        text = b"".join(posted)
        assert all(x in text for x in (b'"a"', b'"b"', b'"c"', b"log source failed: disk gone")), text
        posted.clear()
        cut = await _pump([forever(), source(["d"])], post)  # the reader goes after 50 chunks
        return whole, cut

    assert asyncio.run(go()) == (True, False)
    assert len(posted) == 50
