"""`shoal up --scale` / `shoal scale` arguments and the names of the extra instances (shoal/scale.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.scale import ScaleError, extra_names, parse_scale, read_scale, role_of, write_scale
from shoal.supervisor import Layout


def test_parse_scale_takes_role_equals_count() -> None:
    assert parse_scale(["dispatcher=3", "gateway=2", "dispatcher=2"]) == {"dispatcher": 2, "gateway": 2}
    assert parse_scale([]) == {}


@pytest.mark.parametrize(("arg", "why"), [
    ("dispatcher", "is not ROLE=N"), ("dispatcher=x", "is not ROLE=N"), ("dispatcher=-1", "is not ROLE=N"),
    ("raftstore=5", "cannot be scaled"), ("agent=3", "cannot be scaled"), ("dispatcher=0", "1 to 9"),
    ("scheduler=10", "1 to 9"),
])
def test_parse_scale_says_what_is_wrong(arg: str, why: str) -> None:
    with pytest.raises(ScaleError, match=why):
        parse_scale([arg])


def test_extra_instances_are_numbered_from_two() -> None:
    assert extra_names({"dispatcher": 3, "scheduler": 1, "gateway": 2}) == ["gateway-2", "dispatcher-2",
                                                                             "dispatcher-3"]
    assert [role_of(n) for n in ("dispatcher-2", "dispatcher", "raftstore-2", "agent-1", "orchestrator-b")] == [
        "dispatcher", "dispatcher", "raftstore-2", "agent-1", "orchestrator-b"]


def test_scale_file_and_ports_survive_a_restart(tmp_path: Path) -> None:
    write_scale(tmp_path, {"dispatcher": 3})
    (tmp_path / "scale.json").write_text('{"dispatcher": 3, "raftstore": 4, "gateway": "x"}')
    assert read_scale(tmp_path) == {"dispatcher": 3}  # what cannot be scaled is ignored
    one = Layout(tmp_path)
    one.assign_ports(["dispatcher-2", "dispatcher-3"])
    again = Layout(tmp_path)
    again.assign_ports(["dispatcher-2"])
    assert again.port_of("dispatcher-2") == one.port_of("dispatcher-2") != one.port_of("dispatcher-3")
    assert one.instances_of("dispatcher") == ["dispatcher", "dispatcher-2", "dispatcher-3"]
    spec = one.component_spec("dispatcher-3")
    assert spec.env["SHOAL_INSTANCE"] == "dispatcher-3" and spec.argv[-1] == "services.dispatcher"
    assert spec.env["SHOAL_CERT_DIR"].endswith("certificates/dispatcher-3")
    assert spec.health_url == f"https://127.0.0.1:{one.port_of('dispatcher-3')}/healthz"
