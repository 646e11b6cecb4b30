"""A recording stand-in for iproute2 under agent/overlay.py's shell, for unit tests (the real commands run in
tests/docker/test_docker_overlay.py and tests/integration/test_ipsec_kernel.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import overlay as overlay_mod


def recording_overlay(tmp_path: Path, monkeypatch: Any) -> tuple[overlay_mod.Overlay, list[str]]:
    """An Overlay for node1 at 127.0.0.2 whose commands are recorded (each as one string) instead of run."""
    ran: list[str] = []

    async def fake_run(argv: list[str], *, check: bool = True) -> str:
        ran.append(" ".join(argv))
        return ""
    monkeypatch.setattr(overlay_mod, "run", fake_run)
    ov = overlay_mod.Overlay(tmp_path, node_id=lambda: "node1", addr="127.0.0.2")
    ov.missing = []
    return ov, ran
