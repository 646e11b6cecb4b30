"""iptables, thin shell (the kernel path of the routing mesh, docs/networking.md): run `iptables-save` and
`iptables-restore`, and sweep chains by name prefix (the agent's kernel mesh at exit, `shoal down`). The rules
themselves are computed in `shoal.meshrules` (pure)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable

from shoal import meshrules

log = logging.getLogger(__name__)

#: runs argv with `input` on stdin; returns stdout; raises KernelError with what the tool said
Runner = Callable[[list[str], str | None], str]


class KernelError(Exception):
    pass


def run(argv: list[str], stdin: str | None = None) -> str:
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"{argv[0]}: {e}") from e
    if out.returncode != 0:
        raise KernelError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def save(runner: Runner) -> str:
    """The `nat` and `filter` tables, as `iptables-save` prints them."""
    return runner(["iptables-save", "-t", "nat"], None) + runner(["iptables-save", "-t", "filter"], None)


def restore(runner: Runner, text: str) -> None:
    runner(["iptables-restore", "-w", "5", "--noflush"], text)


def sweep(prefix: str, runner: Runner = run) -> list[str]:
    """Remove every chain starting with `prefix` (and the jumps to them); their names. Best effort: no root or
    no iptables → nothing (there can be no such chains either)."""
    if os.geteuid() != 0 or shutil.which("iptables-save") is None:
        return []
    try:
        text = save(runner)
        chains, _ = meshrules.parse_save(text, prefix)
        removal = meshrules.removal(text, prefix)
        if removal:
            restore(runner, removal)
        return chains
    except KernelError as e:
        log.warning("kernel mesh: cannot remove the chains %s*: %s", prefix, e)
        return []
