"""Issue 15's limits hold and cannot rot (scripts/house_limits.py measures them): no file over 600 lines and no
function over 80 lines in shoal/, services/, agent/; no import cycle among the project's modules, function-level
imports and `if TYPE_CHECKING:` imports included. The measuring itself is checked on a small tree that breaks
each rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import house_limits  # noqa: E402

pytestmark = pytest.mark.timeout(60)

def test_the_tree_keeps_the_limits() -> None:
    report = house_limits.measure()
    assert report.long_files == [], f"files over {house_limits.MAX_FILE_LINES} lines"
    assert report.long_functions == [], f"functions over {house_limits.MAX_FUNCTION_LINES} lines"
    assert report.cycles == [], "import cycles"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_measure_finds_each_kind_of_breach(tmp_path: Path) -> None:
    _write(tmp_path, "shoal/__init__.py", "")
    _write(tmp_path, "services/__init__.py", "")
    _write(tmp_path, "agent/__init__.py", "")
    _write(tmp_path, "shoal/long.py", "x = 1\n" * 601)
    _write(tmp_path, "shoal/fn.py", "def f() -> None:\n" + "    pass\n" * 80)
    # a cycle closed by a function-level import
    _write(tmp_path, "shoal/a.py", "from shoal import b\n")
    _write(tmp_path, "shoal/b.py", "def g() -> None:\n    from shoal.a import x\n")
    # a package whose submodule needs a name its __init__ defines after importing that submodule
    _write(tmp_path, "services/p/__init__.py", "from services.p.sub import y\nNAME = 1\n")
    _write(tmp_path, "services/p/sub.py", "from services.p import NAME\ny = NAME\n")
    # a sibling imported through the package is not a cycle
    _write(tmp_path, "agent/q/__init__.py", "from agent.q.one import z\n")
    _write(tmp_path, "agent/q/one.py", "from agent.q import two\nz = 1\n")
    _write(tmp_path, "agent/q/two.py", "")
    # a cycle only through TYPE_CHECKING imports counts too
    _write(tmp_path, "agent/t1.py", "from agent import t2\n")
    _write(tmp_path, "agent/t2.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agent.t1 import C\n")
    report = house_limits.measure(tmp_path)
    assert report.long_files == [("shoal/long.py", 601)]
    assert report.long_functions == [("shoal/fn.py:1 f", 81)]
    assert report.cycles == [["agent.t1", "agent.t2"], ["services.p", "services.p.sub"], ["shoal.a", "shoal.b"]]
