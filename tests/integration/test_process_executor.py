"""Process executor: real processes in their own process group — exit codes, SIGTERM then SIGKILL after the
stop grace period (the whole group), logs and environment, pre-start checks, and finding a process again
after an agent restart."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.executors.base import ExecutorError, ExitError
from agent.executors.process import ProcessController, ProcessExecutor, describe_exit, proc_start_time
from shoal.workloads import Owner, TaskMarks, stop_cluster_processes, task_marks

pytestmark = pytest.mark.timeout(30)


def task(command: list[str], **process: Any) -> dict[str, Any]:
    return {"id": "t" + str(abs(hash(tuple(command))) % 10_000), "service_id": "s", "service_name": "web",
            "slot": 1, "node_id": "n1", "desired_state": "running", "runtime": "process",
            "spec": {"process": {"command": command, **process}}, "status": {"state": "assigned"}}


def cluster_of(tmp_path: Path) -> str:
    """A cluster id of the test's own, so parallel runs on the machine never share marks."""
    return "unit-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]


def marks(tmp_path: Path) -> TaskMarks:
    return task_marks(Owner(cluster_of(tmp_path), "host"))


def executor(tmp_path: Path) -> ProcessExecutor:
    return ProcessExecutor(tmp_path / "logs", marks=marks(tmp_path))


@pytest.fixture(autouse=True)
def _nothing_left(tmp_path: Path) -> Iterator[None]:
    yield
    assert stop_cluster_processes(cluster_of(tmp_path)) == [], "a test left task processes running"


def controller(tmp_path: Path, command: list[str], **process: Any) -> ProcessController:
    return executor(tmp_path).controller(task(command, **process), node_id="n1")


def alive(pid: int) -> bool:
    return proc_start_time(pid) is not None


async def started(ctl: ProcessController) -> int:
    await ctl.prepare()
    await ctl.start()
    assert ctl.pid is not None
    return ctl.pid


async def test_exit_zero_and_non_zero(tmp_path: Path) -> None:
    ok = controller(tmp_path, ["true"])
    await started(ok)
    await ok.wait()
    assert ok.exit_code == 0

    bad = controller(tmp_path, ["sh", "-c", "exit 3"])
    await started(bad)
    with pytest.raises(ExitError) as e:
        await bad.wait()
    assert e.value.exit_code == 3 and str(e.value) == "exit status 3"


async def test_killed_process_reports_the_signal(tmp_path: Path) -> None:
    ctl = controller(tmp_path, ["sleep", "30"])
    pid = await started(ctl)
    assert os.getpgid(pid) == pid  # its own process group
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExitError) as e:
        await ctl.wait()
    assert e.value.exit_code == 137 and "SIGKILL" in str(e.value)


async def test_shutdown_sends_sigterm(tmp_path: Path) -> None:
    ctl = controller(tmp_path, ["sleep", "30"], stop_grace_period=5)
    pid = await started(ctl)
    t0 = time.monotonic()
    await ctl.shutdown()
    assert time.monotonic() - t0 < 2
    assert not alive(pid) and ctl.exit_code == 128 + signal.SIGTERM


async def test_shutdown_kills_after_the_grace_period_and_takes_the_group(tmp_path: Path) -> None:
    # The shell ignores SIGTERM and so does its child; only SIGKILL to the group ends both.
    script = "trap '' TERM; sleep 30 & echo $! > child.pid; wait"
    ctl = controller(tmp_path, ["sh", "-c", script], stop_grace_period="300ms", dir=str(tmp_path))
    pid = await started(ctl)
    for _ in range(100):
        if (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text().strip():
            break
        await asyncio.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    t0 = time.monotonic()
    await ctl.shutdown()
    took = time.monotonic() - t0
    assert 0.3 <= took < 3, took
    assert ctl.exit_code == 137
    await asyncio.sleep(0.05)
    assert not alive(pid) and not alive(child)


async def test_logs_and_environment(tmp_path: Path) -> None:
    ctl = controller(tmp_path, ["sh", "-c", 'echo "$GREETING $SHOAL_TASK_ID $SHOAL_NODE_ID"; echo oops >&2'],
                     env={"GREETING": "hello"})
    await started(ctl)
    await ctl.wait()
    assert ctl.log_path.read_text() == f"hello {ctl.task['id']} n1\noops\n"
    await ctl.remove()
    assert not ctl.log_path.exists()


async def test_tasks_never_inherit_the_agents_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 9 point 8: the agent's certificate directory, join token and anything else it was started with
    monkeypatch.setenv("SHOAL_CERT_DIR", "/secret/certs")
    monkeypatch.setenv("SHOAL_JOIN_TOKEN", "SWMTKN-1-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    ctl = controller(tmp_path, ["env"], env={"MINE": "1"})
    await started(ctl)
    await ctl.wait()
    env = dict(line.split("=", 1) for line in ctl.log_path.read_text().splitlines())
    env.pop("PWD", None)  # set by the /bin/sh that puts the task in its mark (the working directory, nothing else)
    assert set(env) == {"PATH", "HOME", "USER", "LOGNAME", "LANG", "MINE", "SHOAL_TASK_ID", "SHOAL_TASK_NAME",
                        "SHOAL_TASK_SLOT", "SHOAL_SERVICE_ID", "SHOAL_SERVICE_NAME", "SHOAL_NODE_ID"}


@pytest.mark.skipif(os.geteuid() != 0, reason="switching user needs root")
async def test_a_task_runs_as_its_spec_user(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    ctl = controller(tmp_path, ["sh", "-c", 'id -u; id -g; echo "$USER $HOME"; id -G'], user="nobody")
    await started(ctl)
    await ctl.wait()
    import pwd

    nobody = pwd.getpwnam("nobody")
    uid, gid, who, groups = ctl.log_path.read_text().splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert who == f"nobody {nobody.pw_dir}" and groups.split() == [str(nobody.pw_gid)]  # root's groups dropped
    numeric = controller(tmp_path, ["sh", "-c", "id -u; id -g"], user="4321:4322")
    await started(numeric)
    await numeric.wait()
    assert numeric.log_path.read_text().split() == ["4321", "4322"]


async def test_an_unknown_user_or_an_unprivileged_switch_is_refused(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ExecutorError, match="unknown user"):
        await controller(tmp_path, ["true"], user="no-such-user-xyz").prepare()
    with pytest.raises(ExecutorError, match="unknown group"):
        await controller(tmp_path, ["true"], user="0:no-such-group-xyz").prepare()
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    with pytest.raises(ExecutorError, match="needs an agent running as root"):
        await controller(tmp_path, ["true"], user="0").prepare()
    with pytest.raises(ExecutorError, match=r"invalid spec\.process"):
        await controller(tmp_path, ["true"], user="a b").prepare()


async def test_prepare_refuses_what_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="not found"):
        await controller(tmp_path, ["no-such-binary-xyz"]).prepare()
    with pytest.raises(ExecutorError, match="does not exist"):
        await controller(tmp_path, ["true"], dir=str(tmp_path / "missing")).prepare()
    with pytest.raises(ExecutorError, match=r"invalid spec\.process"):
        await controller(tmp_path, []).prepare()


async def test_a_restarted_agent_finds_its_process_again(tmp_path: Path) -> None:
    first = controller(tmp_path, ["sleep", "30"], stop_grace_period=5)
    pid = await started(first)
    again = executor(tmp_path).controller(first.task, node_id="n1", saved=first.saved())
    assert again.pid == pid
    await again.start()  # idempotent: already running, nothing new started
    assert again.pid == pid
    waiter = asyncio.create_task(again.wait())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await again.shutdown()
    with pytest.raises(ExitError, match="exit status unknown"):
        await asyncio.wait_for(waiter, 2)
    assert not alive(pid)
    await first.terminate()  # the original handle sees it gone and does not signal a stranger


async def test_a_saved_pid_of_another_process_is_never_signalled(tmp_path: Path) -> None:
    stranger = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
    try:
        real = proc_start_time(stranger.pid)
        assert real is not None
        ctl = executor(tmp_path).controller(task(["sleep", "1"]), node_id="n1",
                                                   saved={"pid": stranger.pid, "start_time": real + 1})
        with pytest.raises(ExitError):
            await ctl.wait()  # the pid was reused by someone else: our process is gone
        await ctl.shutdown()
        await ctl.remove()
        assert alive(stranger.pid)
    finally:
        stranger.kill()
        await stranger.wait()


def test_describe_exit() -> None:
    assert describe_exit(0) == (0, "exit status 0")
    assert describe_exit(-15) == (143, "killed by signal 15 (SIGTERM)")


# ---- health checks ----------------------------------------------------------------------------------------

def checked(tmp_path: Path, test: list[str], **health: Any) -> ProcessController:
    return controller(tmp_path, ["sleep", "30"], dir=str(tmp_path), stop_grace_period=2,
                      healthcheck={"test": test, "interval": "50ms", "timeout": "1s", **health})


async def test_starting_lasts_until_the_first_healthy_check(tmp_path: Path) -> None:
    ctl = checked(tmp_path, ["CMD-SHELL", "test -f ready"], retries=100)
    await ctl.prepare()
    starting = asyncio.create_task(ctl.start())
    await asyncio.sleep(0.3)
    assert not starting.done() and ctl.health == "starting"
    (tmp_path / "ready").touch()
    await asyncio.wait_for(starting, 2)
    assert ctl.health == "healthy"
    await ctl.shutdown()


async def test_an_unhealthy_process_is_stopped_and_fails(tmp_path: Path) -> None:
    (tmp_path / "ok").touch()
    ctl = checked(tmp_path, ["CMD", "test", "-f", "ok"], retries=2)
    pid = await started(ctl)
    waiter = asyncio.create_task(ctl.wait())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    (tmp_path / "ok").unlink()
    with pytest.raises(ExecutorError, match="unhealthy: 2 consecutive"):
        await asyncio.wait_for(waiter, 3)
    assert not alive(pid) and ctl.exit_code == 143


async def test_never_healthy_fails_the_start(tmp_path: Path) -> None:
    ctl = checked(tmp_path, ["CMD", "false"], retries=2)
    await ctl.prepare()
    with pytest.raises(ExecutorError, match="unhealthy"):
        await asyncio.wait_for(ctl.start(), 3)
    assert ctl.pid is not None and not alive(ctl.pid)


async def test_failures_in_the_start_period_do_not_count(tmp_path: Path) -> None:
    ctl = checked(tmp_path, ["CMD-SHELL", "test -f ready"], retries=1, start_period="1s")
    await ctl.prepare()
    starting = asyncio.create_task(ctl.start())
    await asyncio.sleep(0.4)  # several failed probes, none counted
    (tmp_path / "ready").touch()
    await asyncio.wait_for(starting, 2)
    assert ctl.health == "healthy"
    await ctl.shutdown()


async def test_a_task_waiting_for_health_can_still_be_shut_down(tmp_path: Path) -> None:
    from agent.task import TaskManager
    from shoal.clock import SystemClock

    ctl = checked(tmp_path, ["CMD", "false"], retries=1000)
    reports: list[str] = []
    t = {**ctl.task, "status": {"state": "assigned"}}
    mgr = TaskManager(t, t["status"], ctl, on_status=lambda m, r: reports.append(m.state), clock=SystemClock())
    mgr.start()
    for _ in range(100):
        if reports and reports[-1] == "starting" and ctl.pid:
            break
        await asyncio.sleep(0.02)
    assert reports[-1] == "starting"
    pid = ctl.pid
    assert pid is not None
    mgr.update({**t, "desired_state": "shutdown"})
    for _ in range(100):
        if reports[-1] == "shutdown":
            break
        await asyncio.sleep(0.02)
    assert reports[-1] == "shutdown" and not alive(pid)
    await mgr.close(stop=True)
