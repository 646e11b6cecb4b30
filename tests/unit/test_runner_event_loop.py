"""shoal.runner.run's event loop: SHOAL_EVENT_LOOP chooses asyncio (default) or uvloop; anything else, or
uvloop where it is not installed, stops the process at start-up with what to set."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from shoal import runner


def test_the_default_is_asyncio_and_the_choice_is_checked() -> None:
    assert runner.event_loop_choice({}) == "asyncio"
    assert runner.event_loop_choice({"SHOAL_EVENT_LOOP": " AsyncIO "}) == "asyncio"
    with pytest.raises(SystemExit, match="use one of uvloop, asyncio"):
        runner.event_loop_choice({"SHOAL_EVENT_LOOP": "trio"})


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_uses_the_chosen_loop(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        monkeypatch.setenv("SHOAL_EVENT_LOOP", choice)
        with pytest.raises(SystemExit, match="uvloop is not installed"):
            runner.event_loop_choice()
        return
    monkeypatch.setenv("SHOAL_EVENT_LOOP", choice)
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    runner.run(main)
    assert len(seen) == 1
    assert seen[0].startswith("uvloop") == (choice == "uvloop")
