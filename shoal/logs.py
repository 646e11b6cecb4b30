"""Task logs, the pure parts shared by the agent, the dispatcher, the gateway and the CLI (docs/api.md "Logs").

A log *record* is one line of a task's output: `{"task_id", "stream": "stdout"|"stderr"|"shoal", "time",
"line"}` (`time`: seconds since the epoch; stream `shoal` is a line shoal itself writes, e.g. "node X is
down"). Records travel as NDJSON, agent → dispatcher → gateway, in chunks of at most `CHUNK_BYTES`. A `LogQuery`
is what a reader asks for. The Docker routes write each record as a stdcopy frame (`docker_frame`)."""

from __future__ import annotations

import datetime
import json
import re
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shoal.errors import InvalidArgument

MAX_TAIL = 10_000  # lines a request may ask for; `tail=all` means this many (a bound on every hop)
MAX_TASKS = 1_000  # tasks one request may name (a service's tasks on one node)
MAX_LINE = 16 * 1024  # longer lines are cut (a newline-less binary stream must not become one huge record)
CHUNK_BYTES = 64 * 1024  # one agent → dispatcher post, and the unit a dispatcher queues
PUSH_WAIT = 40.0  # seconds an agent's post may wait for a slow reader (the dispatcher gives up at 30)
STREAMS = ("stdout", "stderr", "shoal")

Record = dict[str, Any]


@dataclass(frozen=True)
class LogQuery:
    """What a reader asks of a node: which tasks, how many trailing lines (`tail`; None = all, capped at
    MAX_TAIL), only lines at or after `since` (epoch seconds), and whether to `follow` new lines."""

    task_ids: tuple[str, ...]
    tail: int | None = None
    since: float | None = None
    follow: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"task_ids": list(self.task_ids), "tail": self.tail, "since": self.since, "follow": self.follow}

    @classmethod
    def from_wire(cls, data: Any) -> LogQuery:
        if not isinstance(data, dict):
            raise InvalidArgument("logs: a log request is a JSON object")
        ids = data.get("task_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_TASKS \
                or not all(isinstance(i, str) and 0 < len(i) <= 128 for i in ids):
            raise InvalidArgument(f"logs: task_ids must list 1..{MAX_TASKS} task ids")
        tail, since, follow = data.get("tail"), data.get("since"), data.get("follow", False)
        if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool) or not 0 <= tail <= MAX_TAIL):
            raise InvalidArgument(f"logs: tail must be an integer in 0..{MAX_TAIL} or null")
        if since is not None and (not isinstance(since, int | float) or isinstance(since, bool) or since < 0):
            raise InvalidArgument("logs: since must be a non-negative number of seconds since the epoch")
        if not isinstance(follow, bool):
            raise InvalidArgument("logs: follow must be a boolean")
        return cls(tuple(ids), tail, None if since is None else float(since), follow)


def parse_tail(value: str | None) -> int | None:
    """`tail` as users write it: absent, `all` or a negative number (Docker's "all") → None; N ≥ 0 → N."""
    if value is None or value in ("", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidArgument(f"logs: tail must be a number of lines or 'all', not {value!r}") from None
    if n < 0:
        return None
    return min(n, MAX_TAIL)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")


def parse_since(value: str | None, now: float) -> float | None:
    """`since`: epoch seconds (Docker sends `<seconds>.<nanoseconds>`), an RFC 3339 time, or a duration before
    `now` (`10m`, `30s`, `2h`). Absent or `0` → None (everything)."""
    if value is None or value.strip() in ("", "0"):
        return None
    value = value.strip()
    m = _DURATION.match(value)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
    try:
        secs = float(value)
        if secs >= 0 and secs == secs and secs != float("inf"):
            return secs
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"logs: since must be epoch seconds, an RFC 3339 time or a duration like 10m, "
                              f"not {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return dt.timestamp()


def record(task_id: str, stream: str, time: float, line: str) -> Record:
    return {"task_id": task_id, "stream": stream, "time": time, "line": line[:MAX_LINE]}


def select(records: Iterable[Record], query: LogQuery) -> list[Record]:
    """The records a query wants of what exists now: at or after `since`, then the last `tail` of them (all
    of them up to MAX_TAIL) — Docker applies `since` before `tail` too."""
    keep = MAX_TAIL if query.tail is None else query.tail
    out: deque[Record] = deque(maxlen=keep)
    if keep == 0:
        return []
    for rec in records:
        if query.since is None or rec["time"] >= query.since:
            out.append(rec)
    return list(out)


def chunks(records: Iterable[Record], limit: int = CHUNK_BYTES) -> Iterator[bytes]:
    """NDJSON chunks of at most `limit` bytes (a record alone larger than that is cut to MAX_LINE first)."""
    buf = bytearray()
    for rec in records:
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if buf and len(buf) + len(line) > limit:
            yield bytes(buf)
            buf.clear()
        buf += line
    if buf:
        yield bytes(buf)


def parse_chunk(data: bytes) -> list[Record]:
    """The records of an NDJSON chunk; a malformed line is an InvalidArgument (the sender is a program)."""
    out = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            raise InvalidArgument("logs: a chunk line is not JSON") from None
        if not (isinstance(rec, dict) and isinstance(rec.get("task_id"), str) and rec.get("stream") in STREAMS
                and isinstance(rec.get("time"), int | float) and isinstance(rec.get("line"), str)):
            raise InvalidArgument("logs: a record needs task_id, stream (stdout|stderr|shoal), time and line")
        out.append(record(rec["task_id"], rec["stream"], float(rec["time"]), rec["line"]))
    return out


def split_lines(text: str) -> list[str]:
    """Lines of a piece of output, the trailing newline dropped, long lines cut to MAX_LINE."""
    return [ln[:MAX_LINE] for ln in text.splitlines()]


def rfc3339(t: float) -> str:
    """Docker's timestamp format (RFC 3339 with nanoseconds, UTC)."""
    dt = datetime.datetime.fromtimestamp(t, datetime.UTC)
    nanos = round((t - int(t)) * 1e9) % 1_000_000_000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def text_line(rec: Record, *, timestamps: bool, prefix: str = "") -> str:
    """A record as `shoal service logs` prints it: `[<time> ]<prefix> | <line>`."""
    head = f"{rfc3339(rec['time'])} " if timestamps else ""
    return f"{head}{prefix} | {rec['line']}" if prefix else f"{head}{rec['line']}"


# ---- Docker's multiplexed stream (pkg/stdcopy) ----------------------------------------------------------------
STDOUT, STDERR = 1, 2


def docker_frame(stream: int, payload: bytes) -> bytes:
    """One stdcopy frame: `[stream, 0, 0, 0, big-endian uint32 length]` then the payload."""
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def docker_details(node_id: str, service_id: str, task_id: str) -> str:
    """The `details` Docker's swarm log stream puts before every line (url-escaped `k=v` joined by commas)."""
    pairs = (("com.docker.swarm.node.id", node_id), ("com.docker.swarm.service.id", service_id),
             ("com.docker.swarm.task.id", task_id))
    return ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def docker_log_frame(rec: Record, *, node_id: str, service_id: str, timestamps: bool,
                     details: bool = True) -> bytes:
    """A record as dockerd's `/services/{id}/logs` writes it: `[<RFC3339Nano> ]<details> <line>\\n` in a
    frame of its stream (shoal's own lines go to stderr); without `details` (`docker service logs --raw`) just
    `[<RFC3339Nano> ]<line>\\n`."""
    head = f"{rfc3339(rec['time'])} " if timestamps else ""
    if details:
        head += docker_details(node_id, service_id, rec["task_id"]) + " "
    body = f"{head}{rec['line']}\n".encode()
    return docker_frame(STDOUT if rec["stream"] == "stdout" else STDERR, body)


def read_docker_frames(buf: bytearray) -> Iterator[tuple[int, bytes]]:
    """Take every complete stdcopy frame off the front of `buf` (the rest stays for the next read)."""
    while len(buf) >= 8:
        stream, size = struct.unpack(">BxxxI", bytes(buf[:8]))
        if len(buf) < 8 + size:
            return
        payload = bytes(buf[8:8 + size])
        del buf[:8 + size]
        yield stream, payload


def engine_line(stream: int, payload: bytes, task_id: str) -> Record:
    """A line of the engine's `/containers/{id}/logs?timestamps=1` as a record (`<RFC3339Nano> <line>`)."""
    text = payload.decode(errors="replace").rstrip("\n")
    stamp, _, line = text.partition(" ")
    try:
        t = datetime.datetime.fromisoformat(_trim_nanos(stamp)).timestamp()
    except ValueError:
        t, line = 0.0, text
    return record(task_id, "stderr" if stream == STDERR else "stdout", t, line)


def _trim_nanos(stamp: str) -> str:
    """Python parses at most microseconds: `2024-01-01T00:00:00.123456789Z` → `…00.123456+00:00`."""
    stamp = stamp.replace("Z", "+00:00")
    m = re.match(r"^(.*\.\d{6})\d*(.*)$", stamp)
    return m.group(1) + m.group(2) if m else stamp
