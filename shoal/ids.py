"""Object identifiers: 25 base-36 characters, like SwarmKit's `identity.NewID()`."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 25


def new_id() -> str:
    """A random 25-char base-36 id (about 129 bits; the high bit is forced so the length never shrinks)."""
    n = int.from_bytes(secrets.token_bytes(17), "big") | (1 << 135)
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))[-ID_LENGTH:]
