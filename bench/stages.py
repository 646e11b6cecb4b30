"""Where the time of a convergence round goes (bench/converge.py `--stages`), pure: from the wall-clock start of
the round, the engine's own timestamps of each container (`Created`, `State.StartedAt`) and, for shoal, the
store's events of the round's tasks (`GET /v1/events`: the time each transaction was proposed and which
subsystem wrote it), the per-container marks

    task created (orchestrator) -> pending (allocator) -> assigned (scheduler) -> container created (engine)
    -> container started (engine) -> reported (the dispatcher's last write of the task's status)

and per stage the p50 and max over the round's containers, both of the stage itself and of the time from the
start to its end. Floor and Swarm have only the engine's two marks. Every timestamp is this host's wall clock
(the cluster, the engine and the bench run on one machine)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: the marks of one container, in path order; the engine's two are the only ones every system has
SHOAL_MARKS: tuple[str, ...] = ("task created", "pending", "assigned", "container created", "container started",
                                "reported")
ENGINE_MARKS: tuple[str, ...] = ("container created", "container started")
#: the subsystem whose store write is each mark (the `actor` of the event before the `@`)
WRITERS = {"orchestrator": "task created", "allocator": "pending", "scheduler": "assigned"}


def engine_time(text: str | None) -> float | None:
    """An engine timestamp (RFC 3339 with up to nanoseconds, `Z` or an offset) as epoch seconds; None for
    a missing or zero one (`0001-01-01T00:00:00Z`: never started)."""
    if not text or text.startswith("0001-"):
        return None
    head, dot, rest = text.partition(".")
    if dot:  # keep microseconds: datetime takes at most six fractional digits
        zone = rest.lstrip("0123456789")
        digits = rest[:len(rest) - len(zone)]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Marks:
    """The marks of one container (epoch seconds; a mark not seen is absent)."""

    at: dict[str, float] = field(default_factory=dict)


def engine_marks(containers: Iterable[Mapping[str, Any]], key: str | None = None) -> dict[str, Marks]:
    """Marks from `GET /containers/{id}/json` answers, keyed by the container label `key` (the task id for
    shoal) or by container id."""
    out: dict[str, Marks] = {}
    for ct in containers:
        labels = (ct.get("Config") or {}).get("Labels") or {}
        ident = str(labels.get(key) if key is not None and labels.get(key) else ct.get("Id"))
        m = out.setdefault(ident, Marks())
        created = engine_time(ct.get("Created"))
        started = engine_time((ct.get("State") or {}).get("StartedAt"))
        if created is not None:
            m.at["container created"] = created
        if started is not None:
            m.at["container started"] = started
    return out


def add_store_marks(marks: dict[str, Marks], events: Iterable[Mapping[str, Any]]) -> None:
    """Fold the store's task events (`{"time", "kind", "action", "id", "actor"}`) into `marks` by task id: the
    first write of each of the orchestrator, allocator and scheduler, and the dispatcher's last."""
    for ev in events:
        if ev.get("kind") != "task" or ev.get("action") not in ("create", "update"):
            continue
        writer = str(ev.get("actor") or "").partition("@")[0]
        m = marks.setdefault(str(ev.get("id")), Marks())
        when = float(ev["time"])
        if writer in WRITERS:
            m.at.setdefault(WRITERS[writer], when)
        elif writer == "dispatcher":
            m.at["reported"] = when


@dataclass
class Stage:
    name: str  # "<from> -> <to>"
    took: list[float]  # the stage per container
    since_start: list[float]  # start of the round -> the stage's end, per container


def stages(t0: float, marks: Mapping[str, Marks], order: Sequence[str]) -> list[Stage]:
    """Each consecutive pair of `order` (the first from the round's start `t0`) over the containers that have
    both marks."""
    out = []
    prev = "start"
    for name in order:
        took, since = [], []
        for m in marks.values():
            end = m.at.get(name)
            begin = t0 if prev == "start" else m.at.get(prev)
            if end is None or begin is None:
                continue
            took.append(end - begin)
            since.append(end - t0)
        out.append(Stage(f"{prev} -> {name}", took, since))
        prev = name
    return out


def table(system: str, n: int, rows: Sequence[Stage]) -> str:
    """A markdown table: per stage, how many containers had it, its p50 and max, and p50/max from the start."""
    lines = [f"{system} N={n}: stage | containers | p50 s | max s | start->end p50 s | start->end max s",
             "|---|---|---|---|---|---|"]
    for s in rows:
        if not s.took:
            lines.append(f"| {s.name} | 0 | - | - | - | - |")
            continue
        lines.append(f"| {s.name} | {len(s.took)} | {statistics.median(s.took):.3f} | {max(s.took):.3f} | "
                     f"{statistics.median(s.since_start):.3f} | {max(s.since_start):.3f} |")
    return "\n".join(lines)
