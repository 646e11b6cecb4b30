"""`shoal secret|config …` and the service flags referencing them, against the gateway app (TestClient)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from shoal.cli import build_parser, main, service_spec
from shoal.cli.client import CliError
from shoal.cli.payloads import parse_ref
from shoal.models.specs import ServiceSpec

pytestmark = pytest.mark.timeout(30)


def test_reference_forms() -> None:
    assert parse_ref("pw", "--secret", "secret") == {"source": "pw"}
    assert parse_ref("source=pw,target=db/pw,uid=1000,gid=50,mode=0400", "--secret", "secret") == {
        "source": "pw", "target": "db/pw", "uid": "1000", "gid": "50", "mode": 0o400}
    for bad, needle in (("target=x", "source"), ("source=pw,mode=9z", "octal"), ("source=pw,size=1", "unknown")):
        with pytest.raises(CliError, match=needle):
            parse_ref(bad, "--secret", "secret")
    args = build_parser().parse_args(["service", "create", "--name", "w", "--secret", "pw", "--secret",
                                      "source=pw,target=other,mode=0440", "--config", "source=c,target=/etc/c",
                                      "--", "sleep", "1"])
    spec = service_spec.build_spec(args)
    assert spec["task"]["secrets"] == [{"source": "pw"}, {"source": "pw", "target": "other", "mode": 0o440}]
    assert spec["task"]["configs"] == [{"source": "c", "target": "/etc/c"}]
    ServiceSpec.model_validate(spec)
    upd = build_parser().parse_args(["service", "update", "--secret-rm", "pw", "--secret-add", "new",
                                     "--config-rm", "c", "w"])
    after = service_spec.apply_update(spec, upd)
    assert after["task"]["secrets"] == [{"source": "new"}] and after["task"]["configs"] == []


def test_secret_and_config_commands_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from shoal.store.local import LocalStore
    from tests.service.gateway_kit import gateway_app

    store = LocalStore()
    app = gateway_app(store)
    (tmp_path / "conf").write_bytes(b"a=1\n")
    with TestClient(app) as gw:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hunter2")))
        assert main(["secret", "create", "-l", "app=web", "pw", "-"], http=gw) == 0
        sid = capsys.readouterr().out.strip()
        assert base64.b64decode(store.mem.get("secret", sid)["spec"]["data"]) == b"hunter2"
        assert main(["config", "create", "app.conf", str(tmp_path / "conf")], http=gw) == 0
        capsys.readouterr()
        assert main(["secret", "ls"], http=gw) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["ID", "NAME", "CREATED", "UPDATED"] and out[1].split()[:2] == [sid[:12], "pw"]
        assert main(["secret", "inspect", "pw"], http=gw) == 0
        shown = json.loads(capsys.readouterr().out)
        assert "data" not in repr(shown) and base64.b64encode(b"hunter2").decode() not in repr(shown)
        assert main(["service", "create", "--detach", "--name", "web", "--secret", "source=pw,mode=0400", "--config",
                     "app.conf", "--", "sleep", "30"], http=gw) == 0
        capsys.readouterr()
        assert main(["secret", "rm", "pw"], http=gw) == 1
        assert "in use by service 'web'" in capsys.readouterr().err
        assert main(["service", "update", "-d", "--secret-rm", "pw", "--config-rm", "app.conf", "web"], http=gw) == 0
        capsys.readouterr()
        assert main(["secret", "rm", "pw"], http=gw) == 0 and main(["config", "rm", "app.conf"], http=gw) == 0
        assert store.mem.count("secret") == store.mem.count("config") == 0
        assert main(["service", "update", "--detach", "--secret-add", "nope", "web"], http=gw) == 1
        assert "secret 'nope' not found" in capsys.readouterr().err
