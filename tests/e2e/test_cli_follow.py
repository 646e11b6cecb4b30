"""`shoal service create|update|scale|rollback` follow the change on a real `shoal up` cluster (process
runtime), as a script runs them (stdout not a terminal: plain lines): a service that converges exits 0 saying so;
an impossible constraint exits 1 within `--pending-timeout` with the scheduler's reason; an update whose new
tasks fail, with failure action pause, exits 1 naming the task error; `--detach` returns at once; on a
terminal (a pty) the progress is the live table. `shoal events` shows who made the changes."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# The task fails at once when V is "bad": an update that sets it is an update to a failing command.
GUARDED = ["sh", "-c", 'test "$V" != bad || exit 3; exec sleep 300']


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The session's shared cluster (tests/e2e/conftest.py): this module only creates its own objects and reads."""
    return shared


def test_create_and_scale_follow_until_converged(cluster: Cluster) -> None:
    start = cluster.http.get("/v1/services").json()["revision"]
    done = cluster.cli("service", "create", "--name", "web", "--replicas", "2", "--restart-delay", "1s",
                       "--stop-grace-period", "1s", "--", "sleep", "300", timeout=90)
    lines = done.stdout.splitlines()
    assert len(lines[0]) == 25 and lines[0].isalnum(), lines  # the id first, like docker
    assert "web: 2/2 running" in lines and lines[-1] == "verify: service web converged", lines
    assert any(line.startswith("  web.1: running on ") for line in lines), lines
    assert "\x1b[" not in done.stdout, "no terminal: plain lines, no live view"
    assert len(cluster.running("web")) == 2

    scaled = cluster.cli("service", "scale", "web=3", timeout=90)
    assert scaled.stdout.splitlines()[0] == "web scaled to 3"
    assert "web: 3/3 running" in scaled.stdout and scaled.stdout.endswith("verify: service web converged\n")

    # `shoal events`: the two changes, made through the gateway (its certificate: the actor), tasks by the
    # orchestrator, their states reported through the dispatcher
    until = cluster.http.get("/v1/services").json()["revision"]
    ev = cluster.cli("events", "--since", str(start), "--until", str(until), "--filter", "type=service")
    seen = [(line.split(" ")[2], re.search(r"\(name=web, actor=(\w+)@\S+, rev=\d+\)$", line))
            for line in ev.stdout.splitlines()]
    assert all(m for _, m in seen), ev.stdout
    by = [(action, m.group(1)) for action, m in seen if m]
    assert by[0] == ("create", "gateway") and ("update", "gateway") in by, by  # the create and the scale
    assert {who for _, who in by} <= {"gateway", "allocator", "orchestrator"}, by  # endpoint, update status
    tasks = cluster.cli("events", "--since", str(start), "--until", str(until), "--filter", "type=task", "--json")
    actors = {json.loads(line)["actor"].split("@")[0] for line in tasks.stdout.splitlines()}
    assert {"orchestrator", "dispatcher"} <= actors, actors

    started = time.monotonic()
    detached = cluster.cli("service", "scale", "--detach", "web=1")
    assert detached.stdout == "web scaled to 1\n" and time.monotonic() - started < 10
    cluster.cli("service", "rm", "web")


def test_an_impossible_constraint_fails_within_the_bound_with_the_pending_reason(cluster: Cluster) -> None:
    started = time.monotonic()
    done = cluster.cli("service", "create", "--name", "nowhere", "--replicas", "1", "--constraint",
                       "node.labels.zone==mars", "--pending-timeout", "3s", "--", "sleep", "300", check=False,
                       timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 1, done
    assert re.match(r"error: nowhere: task nowhere\.1 is still pending after \d+s \(the bound is 3s\): "
                    r"no suitable node \(constraint node\.labels\.zone==mars not satisfied", done.stderr), done.stderr
    assert took < 30, f"took {took:.1f}s"
    cluster.cli("service", "rm", "nowhere")


def test_a_failing_update_with_failure_action_pause_names_the_task_error(cluster: Cluster) -> None:
    cluster.cli("service", "create", "--name", "guard", "--replicas", "2", "-e", "V=1",
                "--update-failure-action", "pause", "--update-monitor", "2s", "--restart-delay", "1s",
                "--stop-grace-period", "1s", "--", *GUARDED, timeout=90)
    done = cluster.cli("service", "update", "--env-add", "V=bad", "guard", check=False, timeout=90)
    assert done.returncode == 1, done
    assert done.stdout.splitlines()[0] == "guard"
    assert "error: guard: update paused: update paused due to failure or early termination of task" in done.stderr
    assert "task: non-zero exit (3)" in done.stderr, done.stderr
    cluster.cli("service", "rm", "guard")


def test_on_a_terminal_the_progress_is_a_live_table(cluster: Cluster) -> None:
    exe = Path(sys.executable).parent / "shoal"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "shoal.cli"]
    env = {**os.environ, "SHOAL_URL": cluster.layout.gateway_url, "SHOAL_CERT_PATH": str(cluster.layout.client_dir),
           "TERM": "xterm", "COLUMNS": "120"}
    master, slave = pty.openpty()
    proc = subprocess.Popen([*argv, "service", "create", "--name", "tty", "--replicas", "2", "--", "sleep", "300"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the command exited
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=30) == 0, out
    text = out.decode(errors="replace")
    assert "\x1b[" in text, "a terminal gets the live (redrawn, coloured) view"
    assert "TASK" in text and "STATE" in text and "tty: 2/2 running" in text, text
    assert "verify: service tty converged" in text
    cluster.cli("service", "rm", "tty")
