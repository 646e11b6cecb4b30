"""Network encryption keys (docs/networking.md, "Encrypted networks"): the pure key manager, as SwarmKit's
manager/keymanager — a ring of `KEYRING_SIZE` keys, each with a Lamport time; every `ROTATION_INTERVAL` the
oldest is dropped and a new one appended — and the per-pair derivation every agent computes the same way.

Which key does what (the no-packet-loss rule): sorted by Lamport time, the **newest** key is only *accepted*
(installed inbound), the **second newest is the primary** every node *sends* with, and the oldest is still
accepted. A rotation makes the newest the primary: every node has been accepting it since the previous rotation,
so a node that switches its sending key before its peer heard of the rotation loses nothing; the dropped key has
not been sent with since the previous rotation either.

Kept by the allocator leader in the store (kind `netkeys`, one object), readable only by the allocator and the
dispatcher (services/raftstore/access.py); the dispatcher sends them with the endpoint table to the nodes that run
a task of an encrypted network; agents hold them in memory only. No I/O here: randomness and time are injected."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

Obj = dict[str, Any]

KEYS_ID = "overlay"  # the id of the one `netkeys` object
KEYRING_SIZE = 3  # SwarmKit's keyringSize
ROTATION_INTERVAL = 12 * 3600.0  # SwarmKit's DefaultKeyRotationInterval
KEY_BYTES = 32  # each key is a secret from which every (sender, receiver) SA's key and SPI are derived
ALGORITHM = "rfc4106(gcm(aes))"  # AES-GCM ESP (RFC 4106), as Docker's overlay driver
AEAD_KEY_BYTES = 20  # a 128-bit AES key and the 4-byte salt rfc4106 wants after it
ICV_BITS = 128


def _keys(obj: Obj | None) -> list[Obj]:
    return sorted((obj or {}).get("keys") or [], key=lambda k: int(k.get("lamport") or 0))


def rotate(current: Obj | None, now: float, random_bytes: Callable[[int], bytes], *,
           interval: float = ROTATION_INTERVAL) -> Obj | None:
    """The keys object to write, or None when `current` is still good: a full ring when there is none (or a
    damaged one), else — once the newest key is `interval` old — the ring with its oldest key dropped and a
    new one appended."""
    keys = _keys(current)
    if len(keys) != KEYRING_SIZE or any(len(str(k.get("key") or "")) != 2 * KEY_BYTES for k in keys):
        base = max((int(k.get("lamport") or 0) for k in keys), default=0)
        fresh = [{"key": random_bytes(KEY_BYTES).hex(), "lamport": base + i + 1, "created_at": now}
                 for i in range(KEYRING_SIZE)]
        return {"id": KEYS_ID, "algorithm": ALGORITHM, "keys": fresh, "rotated_at": now}
    if now - float(keys[-1].get("created_at") or 0.0) < interval:
        return None
    new = {"key": random_bytes(KEY_BYTES).hex(), "lamport": int(keys[-1]["lamport"]) + 1, "created_at": now}
    return {**(current or {}), "id": KEYS_ID, "algorithm": ALGORITHM, "keys": [*keys[1:], new], "rotated_at": now}


def next_rotation(current: Obj | None, interval: float = ROTATION_INTERVAL) -> float | None:
    keys = _keys(current)
    return float(keys[-1].get("created_at") or 0.0) + interval if keys else None


def public(current: Obj | None) -> Obj:
    """What `shoal network inspect` and the logs may show of the ring: Lamport times and ages, never a key."""
    return {"algorithm": (current or {}).get("algorithm", ALGORITHM),
            "keys": [{"lamport": k.get("lamport"), "created_at": k.get("created_at")} for k in _keys(current)]}


# ---- what an agent derives ----------------------------------------------------------------------------------

def ring(keys: Sequence[Obj]) -> tuple[list[Obj], Obj | None]:
    """(every key to accept, the primary to send with), by Lamport time: the primary is the second newest (the
    newest only once there is a single key)."""
    ordered = sorted(keys, key=lambda k: int(k.get("lamport") or 0))
    if not ordered:
        return [], None
    return ordered, ordered[-2] if len(ordered) > 1 else ordered[-1]


def _mac(secret_hex: str, *parts: str) -> bytes:
    return hmac.new(bytes.fromhex(secret_hex), "|".join(parts).encode(), hashlib.sha256).digest()


def spi(secret_hex: str, src: str, dst: str) -> int:
    """The SPI of the SA carrying node `src` → node `dst` VXLAN traffic under one key: both ends derive the
    same; 1..255 are reserved (RFC 4303), so the result is at least 0x100."""
    v = int.from_bytes(_mac(secret_hex, "spi", src, dst)[:4], "big")
    return v if v >= 0x100 else v + 0x100


def aead_key(secret_hex: str, src: str, dst: str) -> str:
    """The rfc4106 key (AES-128 key and 4-byte salt, hex) of the SA node `src` → node `dst` under one key:
    every direction gets its own, so no (key, nonce) pair is shared between two senders."""
    return _mac(secret_hex, "aead", src, dst)[:AEAD_KEY_BYTES].hex()
