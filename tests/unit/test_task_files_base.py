"""Where an agent writes its tasks' secrets and configs by default (agent.payloads.default_base): tmpfs, and one
directory per agent even when two agents of a host share a hostname and a user (two `shoal up` clusters on one
machine both run an `<host>-agent-1`), since each sweeps away the task directories it does not know."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import payloads
from agent.payloads import TaskFiles, default_base


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "shm"
    d.mkdir()
    monkeypatch.setattr(payloads, "SHM", d)
    return d


def test_two_agents_with_one_hostname_get_their_own_directories(shm: Path, tmp_path: Path) -> None:
    a = default_base(tmp_path / "cluster-a" / "agents" / "agent-1", "host-agent-1")
    b = default_base(tmp_path / "cluster-b" / "agents" / "agent-1", "host-agent-1")
    assert a != b and a.parent == b.parent == shm
    assert a.name.startswith("shoal-host-agent-1-")
    assert default_base(tmp_path / "cluster-a" / "agents" / "agent-1", "host-agent-1") == a  # stable: restarts


def test_one_agents_sweep_leaves_the_other_agents_task_files(shm: Path, tmp_path: Path) -> None:
    mine = TaskFiles(default_base(tmp_path / "a", "h"))
    theirs = TaskFiles(default_base(tmp_path / "b", "h"))
    for files in (mine, theirs):
        (files.base / "t-of-that-agent").mkdir(parents=True)
    assert mine.sweep(set()) == ["t-of-that-agent"]
    assert (theirs.base / "t-of-that-agent").is_dir()


def test_without_a_usable_tmpfs_the_files_go_under_the_state_dir(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "SHM", tmp_path / "absent")
    assert default_base(tmp_path / "state", "h") == tmp_path / "state" / "task-files"


def test_compose_agents_each_get_their_own_directory_under_the_shared_host_root() -> None:
    from shoal.bootstrap import agent_task_files

    root = {"SHOAL_TASK_FILES_ROOT": "/dev/shm/shoal-task-files/"}
    a, b = agent_task_files(root, "3f2a9c1d"), agent_task_files(root, "77be01aa")
    assert a == {"SHOAL_TASK_FILES_DIR": "/dev/shm/shoal-task-files/3f2a9c1d",
                 "SHOAL_TASK_FILES_HOST_DIR": "/dev/shm/shoal-task-files/3f2a9c1d"}
    assert a["SHOAL_TASK_FILES_DIR"] != b["SHOAL_TASK_FILES_DIR"]
    assert agent_task_files({}, "h") == {}  # no root: the agent's own default
    assert agent_task_files({**root, "SHOAL_TASK_FILES_DIR": "/x"}, "h") == {}  # explicit settings win
