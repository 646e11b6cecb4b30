from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "shoal")
    try:
        c.start()  # inside the try: a cluster that fails to become healthy is still torn down
        yield c
    finally:
        c.stop()
