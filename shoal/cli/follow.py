"""`shoal service create|update|scale|rollback` follow the change until the service has converged, its update
paused or failed, or its tasks stay pending with a reason (the verdicts of shoal/cli/progress.py): a live table
(rich) when stdout is a terminal, one plain line per change otherwise. `--detach` skips this; `--quiet` follows
without printing the progress. A failure raises CliError with the reason (exit 1)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from shoal.cli import table
from shoal.cli.client import ApiError, CliError, Gateway
from shoal.cli.progress import Slot, Tracker, Verdict
from shoal.models.duration import parse_duration

POLL_INTERVAL = 0.5
#: how long the gateway may be unavailable (503: no store leader during an election...) while following
UNAVAILABLE_FOR = 30.0
DEFAULT_PENDING_TIMEOUT = 30.0


class Renderer(Protocol):
    def show(self, name: str, slots: list[Slot], verdict: Verdict, nodes: dict[str, str]) -> None: ...

    def close(self) -> None: ...


def _slot_text(s: Slot, nodes: dict[str, str]) -> str:
    where = f" on {nodes.get(s.node, s.node[:12])}" if s.node else ""
    old = "" if s.current else " (previous spec)"
    return f"{s.label}: {s.state}{old}{where}" + (f": {s.message}" if s.message else "")


class PlainRenderer:
    """One line for each change of the summary or of a slot (not a terminal: logs, CI, pipes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.summary = ""
        self.slots: dict[str, str] = {}

    def show(self, name: str, slots: list[Slot], verdict: Verdict, nodes: dict[str, str]) -> None:
        for s in slots:
            text = _slot_text(s, nodes)
            if self.slots.get(s.label) != text:
                self.slots[s.label] = text
                print(f"  {text}", file=self.out, flush=True)
        if verdict.summary != self.summary:
            self.summary = verdict.summary
            print(f"{name}: {verdict.summary}", file=self.out, flush=True)

    def close(self) -> None:
        return None


class LiveRenderer:
    """A table redrawn in place (rich), like Docker's per-slot progress bars."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(file=out), auto_refresh=False, transient=False)
        self.live.start()

    def show(self, name: str, slots: list[Slot], verdict: Verdict, nodes: dict[str, str]) -> None:
        from rich.table import Table

        t = Table(title=f"{name}: {verdict.summary}", title_justify="left", box=None, pad_edge=False)
        for col in ("TASK", "STATE", "NODE", "MESSAGE"):
            t.add_column(col)
        for s in slots:
            colour = "green" if s.state == "running" and s.current else \
                "red" if s.state in ("failed", "rejected") else "yellow"
            t.add_row(s.label, f"[{colour}]{s.state}[/]" + ("" if s.current else " (previous spec)"),
                      nodes.get(s.node, s.node[:12]), s.message)
        self.live.update(t, refresh=True)

    def close(self) -> None:
        self.live.stop()


class NoRenderer:
    def show(self, name: str, slots: list[Slot], verdict: Verdict, nodes: dict[str, str]) -> None:
        return None

    def close(self) -> None:
        return None


def renderer_for(a: argparse.Namespace, out: TextIO) -> Renderer:
    if getattr(a, "quiet", False):
        return NoRenderer()
    return LiveRenderer(out) if out.isatty() else PlainRenderer(out)


def follow(gw: Gateway, ref: str, tracker: Tracker, renderer: Renderer, *, out: TextIO,
           interval: float = POLL_INTERVAL, now: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll the service and its tasks until the tracker's verdict is final; CliError when it failed."""
    nodes: dict[str, str] = {}
    unavailable_since: float | None = None
    try:
        while True:
            try:
                service: dict[str, Any] = gw.get(f"/v1/services/{ref}")
                tasks = gw.items("/v1/tasks", service=service["id"])
                if any(t.get("node_id") and t["node_id"] not in nodes for t in tasks):
                    nodes = {n["id"]: table.hostname(n) or table.short_id(n["id"]) for n in gw.items("/v1/nodes")}
            except ApiError as e:
                if e.status != 503:
                    raise
                unavailable_since = unavailable_since if unavailable_since is not None else now()
                if now() - unavailable_since > UNAVAILABLE_FOR:
                    raise
                sleep(interval)
                continue
            unavailable_since = None
            slots, verdict = tracker.observe(service, tasks, now())
            renderer.show(str(service["spec"]["name"]), slots, verdict, nodes)
            if verdict.done:
                break
            sleep(interval)
    finally:
        renderer.close()
    if not verdict.ok:
        raise CliError(verdict.reason)
    print(f"verify: service {service['spec']['name']} converged", file=out, flush=True)


def follow_service(gw: Gateway, a: argparse.Namespace, ref: str, *, rollback: bool = False) -> None:
    """What every following command does after its change (unless `--detach`)."""
    if getattr(a, "detach", False):
        return
    tracker = Tracker(pending_bound=a.pending_timeout, rollback=rollback)
    out = sys.stdout
    follow(gw, ref, tracker, renderer_for(a, out), out=out)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}; e.g. 30s, 2m") from None


def add_follow_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--detach", action="store_true",
                   help="return at once instead of following the change until the service has converged")
    p.add_argument("-q", "--quiet", action="store_true", help="follow without printing the progress")
    p.add_argument("--pending-timeout", type=_duration, default=DEFAULT_PENDING_TIMEOUT, metavar="DURATION",
                   help="fail when a task stays pending with a reason this long (default 30s)")
