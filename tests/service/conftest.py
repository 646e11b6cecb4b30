"""Fixtures the service tests share: `store`, a fresh in-process LocalStore (the gateway tests run their app
over it)."""

from __future__ import annotations

import pytest

from shoal.store.local import LocalStore


@pytest.fixture
def store() -> LocalStore:
    return LocalStore()
