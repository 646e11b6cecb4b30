"""The leader-only subsystems refuse to start without an identity (no plaintext fallback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scheduler.app import create_app
from services.scheduler.loop import Scheduler
from services.scheduler.settings import SchedulerSettings
from shoal.clock import SystemClock
from shoal.leader_loop import serve_leader
from shoal.transport import TransportError

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("cert_dir", ["", "missing"])
async def test_a_leader_subsystem_without_credentials_does_not_start(tmp_path: Path, cert_dir: str) -> None:
    settings = SchedulerSettings(cert_dir=str(tmp_path / cert_dir) if cert_dir else "",
                                 store_members=["https://127.0.0.1:1"])
    built: list[Scheduler] = []

    def build(store: object) -> Scheduler:
        s = Scheduler(store, None, SystemClock(), settings)  # type: ignore[arg-type]
        built.append(s)
        return s

    with pytest.raises(TransportError, match=r"SHOAL_CERT_DIR|no identity"):
        await serve_leader(settings, Scheduler.name, build,
                           lambda sub, store: create_app(settings, store=store, scheduler=sub))
    assert built == []  # refused before anything was built or connected
