"""Tests against a real Docker engine (`docker` marker) and docker-compose (`compose` marker).

Without an engine answering on SHOAL_DOCKER_HOST (default /var/run/docker.sock) they are skipped with the
reason; `SHOAL_REQUIRE_DOCKER=1` (set by .ci/run, which provisions the engine with scripts/docker-engine.sh)
turns the skip into a failure, so CI can never pass by skipping them. Images come from
scripts/docker-images.sh (cached: about a second when they exist)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from agent.executors.docker_engine import DEFAULT_HOST

ROOT = Path(__file__).resolve().parents[2]
ENGINE_HOST = os.environ.get("SHOAL_DOCKER_HOST", DEFAULT_HOST)
#: a label on every container these tests create (through task specs), so a run cleans up after itself
RUN_LABEL = "shoal.test.run"
RUN_ID = uuid.uuid4().hex[:12]


def engine_problem() -> str | None:
    """None when the engine answers, else why not."""
    if not ENGINE_HOST.startswith(("unix://", "/")):
        return None
    path = ENGINE_HOST.removeprefix("unix://")
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), base_url="http://docker", timeout=3) as c:
            resp = c.get("/_ping")
    except (httpx.HTTPError, OSError) as e:
        return f"no Docker engine answers at {ENGINE_HOST} ({type(e).__name__}: {e})"
    if resp.status_code != 200:
        return f"the Docker engine at {ENGINE_HOST} answers /_ping with {resp.status_code}"
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    needing = [i for i in items if "docker" in i.keywords or "compose" in i.keywords]
    if not needing:
        return
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1":
        mark = pytest.mark.usefixtures("_engine_required_but_missing")
    else:
        mark = pytest.mark.skip(reason=f"{problem}; start dockerd or run .ci/run (scripts/docker-engine.sh)")
    for item in needing:
        item.add_marker(mark)


@pytest.fixture
def _engine_required_but_missing() -> None:
    pytest.fail(f"SHOAL_REQUIRE_DOCKER=1 but {engine_problem()}")


def image_problem(what: str) -> str | None:
    """Why scripts/docker-images.sh `what` cannot build here (a tool it needs is missing), or None."""
    needs = {"task": [("/bin/busybox", "busybox-static")]}
    base = [("debootstrap", "debootstrap"), ("dpkg", "dpkg")]
    needs["base"] = base
    needs["app"] = base
    needs["all"] = needs["task"] + base
    missing = [pkg for tool, pkg in needs.get(what, [])
               if not (os.access(tool, os.X_OK) if tool.startswith("/") else shutil.which(tool))]
    if missing:
        return (f"the {what} image(s) need {', '.join(missing)}, not installed here (scripts/docker-engine.sh "
                "installs them; or apt-get install them)")
    return None


def build_images(what: str) -> dict[str, str]:
    """Run scripts/docker-images.sh `what`; its NAME=value lines. When the images cannot be built here (a
    missing tool, a failed build), the test is skipped saying why — or fails under SHOAL_REQUIRE_DOCKER=1 (CI
    provisions the tools and must not pass by skipping)."""
    problem = image_problem(what)
    if problem is None:
        out = subprocess.run([str(ROOT / "scripts" / "docker-images.sh"), what], capture_output=True, text=True,
                             timeout=1200)
        if out.returncode == 0:
            return dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
        tail = " / ".join(out.stderr.strip().splitlines()[-3:])
        problem = f"scripts/docker-images.sh {what} failed (exit {out.returncode}): {tail}"
    if os.environ.get("SHOAL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"SHOAL_REQUIRE_DOCKER=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def task_image() -> str:
    """The busybox task image (sh, sleep, httpd, nc...)."""
    return build_images("task")["SHOAL_TASK_IMAGE"]


def labelled_containers(stale_after: float | None = None) -> list[str]:
    """Ids of containers test runs labelled: this run's, or (with `stale_after` seconds) any run's older than
    that — left by an interrupted run; a concurrent run's recent ones are left alone."""
    if stale_after is None:
        return subprocess.run(["docker", "ps", "-aq", "--filter", f"label={RUN_LABEL}={RUN_ID}"],
                              capture_output=True, text=True).stdout.split()
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={RUN_LABEL}", "--format",
                          "{{.ID}}\t{{.CreatedAt}}"], capture_output=True, text=True).stdout
    now, old = time.time(), []
    for line in out.splitlines():
        cid, _, created = line.partition("\t")
        try:
            when = datetime.strptime(created[:25], "%Y-%m-%d %H:%M:%S %z").timestamp()
        except ValueError:
            continue
        if now - when > stale_after:
            old.append(cid)
    return old


@pytest.fixture(scope="session", autouse=True)
def _remove_labelled_containers() -> Iterator[None]:
    """Remove every container this run's specs labelled, whatever a test left behind (and what interrupted
    runs left more than an hour ago)."""
    if engine_problem() is None and (stale := labelled_containers(stale_after=3600)):
        subprocess.run(["docker", "rm", "-f", "-v", *stale], capture_output=True)
    yield
    if engine_problem() is None and (ids := labelled_containers()):
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True)
