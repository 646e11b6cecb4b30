"""shoal.config.EnvSettings: SHOAL_* variables read into plain pydantic models (pydantic-settings' behaviour
that shoal used, without the package): names in any case, keyword arguments first, lists split, bad values
refused at start with the field named."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from agent.settings import AgentSettings
from services.gateway.settings import GatewaySettings
from services.raftstore.settings import RaftstoreSettings
from services.scheduler.settings import SchedulerSettings


def test_variables_fill_fields_and_keywords_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_PORT", "7000")
    monkeypatch.setenv("shoal_debounce_gap", "0.25")  # pydantic-settings compared names without case too
    monkeypatch.setenv("SHOAL_STORE_MEMBERS", " https://a:1 , https://b:2,")
    monkeypatch.setenv("SHOAL_NOT_A_FIELD", "x")
    s = SchedulerSettings()
    assert (s.port, s.debounce_gap, s.store_members) == (7000, 0.25, ["https://a:1", "https://b:2"])
    assert SchedulerSettings(port=7001, store_members="https://c:3").port == 7001
    assert SchedulerSettings(store_members="https://c:3").store_members == ["https://c:3"]


def test_defaults_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.upper().startswith("SHOAL_")]:
        monkeypatch.delenv(k)
    g = GatewaySettings()
    assert (g.port, g.store_members, g.ui, g.ui_max_clients, g.dispatcher_urls) == (
        4242, ["http://127.0.0.1:4301"], True, 32, [])
    assert RaftstoreSettings().data_dir.as_posix() == "data/raft"


def test_types_are_coerced_from_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_UI", "false")
    monkeypatch.setenv("SHOAL_DISPATCHER_URLS", "https://d1:1,https://d2:2")
    monkeypatch.setenv("SHOAL_RAFT_JOIN", "1")
    monkeypatch.setenv("SHOAL_DATA_DIR", "/var/lib/x")
    monkeypatch.setenv("SHOAL_STOP_TASKS_ON_EXIT", "true")
    monkeypatch.setenv("SHOAL_EXECUTORS", "process,hollow")
    monkeypatch.setenv("SHOAL_MESH", "userspace")
    g = GatewaySettings()
    assert (g.ui, g.dispatcher_urls) == (False, ["https://d1:1", "https://d2:2"])
    r = RaftstoreSettings()
    assert r.raft_join is True and str(r.data_dir) == "/var/lib/x"
    a = AgentSettings(hostname="n1")
    assert (a.stop_tasks_on_exit, a.executors, a.mesh, a.hostname) == (True, ["process", "hollow"], "userspace", "n1")
    assert r.model_copy(update={"force_new_cluster": True}).force_new_cluster


@pytest.mark.parametrize(("var", "value", "field", "says"), [
    ("SHOAL_PORT", "eighty", "port", "valid integer"),
    ("SHOAL_UI_MAX_CLIENTS", "0", "ui_max_clients", "greater than or equal to 1"),
    ("SHOAL_UI", "perhaps", "ui", "valid boolean"),
])
def test_a_bad_value_fails_naming_the_field(monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str,
                                            says: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as e:
        GatewaySettings()
    assert e.value.errors()[0]["loc"] == (field,) and says in str(e.value) and value in str(e.value)


def test_a_bad_agent_mesh_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_MESH", "fast")
    with pytest.raises(ValidationError, match="mesh"):
        AgentSettings()
