"""The container tiers build their images or skip saying why: a machine with a Docker engine but no debootstrap
(or no busybox-static) skips them with the missing package named, and CI (SHOAL_REQUIRE_DOCKER=1) fails instead."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.docker import conftest as docker_tier


def no_tools(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    ran: list[list[str]] = []
    monkeypatch.setattr(shutil, "which", lambda _tool: None)
    monkeypatch.setattr(docker_tier.os, "access", lambda *_: False)
    monkeypatch.setattr(subprocess, "run", lambda argv, **_: ran.append(argv))
    return ran


def test_without_debootstrap_the_image_build_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    ran = no_tools(monkeypatch)
    monkeypatch.delenv("SHOAL_REQUIRE_DOCKER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need debootstrap"):
        docker_tier.build_images("app")
    with pytest.raises(pytest.skip.Exception, match="need busybox-static"):
        docker_tier.build_images("task")
    assert ran == []  # nothing was started that could only fail


def test_ci_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    no_tools(monkeypatch)
    monkeypatch.setenv("SHOAL_REQUIRE_DOCKER", "1")
    with pytest.raises(pytest.fail.Exception, match="SHOAL_REQUIRE_DOCKER=1 but the all image"):
        docker_tier.build_images("all")


def test_a_failed_build_is_skipped_with_its_last_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_tier, "image_problem", lambda _what: None)
    monkeypatch.delenv("SHOAL_REQUIRE_DOCKER", raising=False)
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="docker-images: no Debian mirror found\n")
    monkeypatch.setattr(subprocess, "run", lambda *_a, **_k: failed)
    with pytest.raises(pytest.skip.Exception, match="failed \\(exit 1\\): docker-images: no Debian mirror"):
        docker_tier.build_images("base")
