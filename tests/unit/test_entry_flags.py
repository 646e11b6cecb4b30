"""Every `__main__` reads its flags the one way (shoal.runner.flag_parser/settings_from): the common --host/--port
(/--store-members), its own flags, each overriding its SHOAL_* variable only when given."""

from __future__ import annotations

import pytest

from agent.__main__ import parse_settings as agent_settings
from services.ca.__main__ import parse_settings as ca_settings
from services.dispatcher.__main__ import parse_settings as dispatcher_settings
from services.gateway.__main__ import parse_settings as gateway_settings


def test_flags_override_the_environment_and_absent_flags_leave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_HOST", "10.0.0.9")
    monkeypatch.setenv("SHOAL_PORT", "7000")
    s = dispatcher_settings(["--port", "7001", "--store-members", "https://a:1,https://b:2",
                             "--heartbeat-period", "2.5"])
    assert (s.host, s.port, s.store_members, s.heartbeat_period) == (
        "10.0.0.9", 7001, ["https://a:1", "https://b:2"], 2.5)
    g = gateway_settings([])
    assert (g.host, g.port) == ("10.0.0.9", 7000)
    assert ca_settings(["--ca-bootstrap", "/tmp/boot"]).ca_bootstrap == "/tmp/boot"
    a = agent_settings(["--host", "0.0.0.0", "--hostname", "n1"])
    assert (a.host, a.port, a.hostname) == ("0.0.0.0", 7000, "n1")


def test_the_agent_takes_no_store_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        agent_settings(["--store-members", "https://a:1"])
    assert e.value.code == 2
    assert "--store-members" in capsys.readouterr().err
