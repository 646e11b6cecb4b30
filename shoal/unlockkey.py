"""Unlock keys (autolock): `SWMKEY-1-<base64 of 32 random bytes>`, SwarmKit's format. The bytes are the
key-encryption key of every manager's data keys while autolock is on (services/raftstore/atrest.py); the key
itself lives in the store as `ca/unlock-key`, written and read only by the CA (services/ca) and by each raftstore
member from its own state machine, and is shown to admins on request (`shoal swarm unlock-key`)."""

from __future__ import annotations

import base64
import binascii
import os

PREFIX = "SWMKEY-1-"
KEY_BYTES = 32
#: the store object holding the current unlock key while autolock is on (absent when it is off)
KIND, OBJECT_ID = "ca", "unlock-key"


def new() -> str:
    return format_key(os.urandom(KEY_BYTES))


def format_key(raw: bytes) -> str:
    return PREFIX + base64.b64encode(raw).decode().rstrip("=")


def parse(text: str) -> bytes:
    """`SWMKEY-1-<base64 of 32 bytes>` → the 32 bytes; raises ValueError for anything else."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ValueError(f"an unlock key starts with {PREFIX}")
    body = text[len(PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"an unlock key is {PREFIX} followed by base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"an unlock key holds {KEY_BYTES} bytes, not {len(raw)}")
    return raw
