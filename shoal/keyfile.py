"""Node TLS private keys on disk, encrypted under the key-encryption key (KEK) while autolock is on.

SwarmKit's rule (ca/keyreadwriter.go, manager/deks.go): a manager's TLS key is written as an *encrypted* PEM under
the KEK when there is one — autolock on, the KEK being the unlock key's bytes — and as a plain PEM (0600) when
there is none; a worker's key is never encrypted (it has no unlock key). shoal keeps that rule per process: the
processes whose data or power is the whole cluster — every raftstore member (its store holds the root key, the
join tokens, every secret, and its certificate is what raft peers send the whole store to) — encrypt their key
under the unlock key while autolock is on, and cannot speak TLS at all until an admin unlocks them on their
machine (`shoal swarm unlock`, over a local socket: services/raftstore/locked.py). Without autolock the key is a
plain PEM, as in SwarmKit: shoal's file KEK (`swarm-node.kek`) sits in the same directory, so encrypting the key
under it would protect nothing (docs/security.md "Node TLS keys").

Format: PKCS#8 `ENCRYPTED PRIVATE KEY` (cryptography's best available: PBKDF2-SHA256 + AES-256-CBC) whose
password is the base64 text of the 32-byte KEK — text, because OpenSSL itself opens the file
(`ssl.SSLContext.load_cert_chain(..., password=)`): the decrypted key never touches the disk. The KEK is random,
so the password derivation adds nothing but does no harm.

Everything here is pure but `write` (an atomic 0600 replacement, `shoal.pki.write_private`)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

from shoal import pki

ENCRYPTED_BEGIN = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"


class KeyLocked(Exception):
    """The key is encrypted and no KEK was given (the process is locked)."""


class WrongKEK(Exception):
    """None of the KEKs given opens the key."""


def password(kek: bytes) -> bytes:
    """The PEM password a KEK stands for (what OpenSSL is given)."""
    return base64.b64encode(kek)


def is_encrypted(pem: bytes) -> bool:
    return ENCRYPTED_BEGIN in pem


def encrypt(plain_pem: bytes, kek: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    key = _load(plain_pem, None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(password(kek)))


def decrypt(pem: bytes, keks: Iterable[bytes | None]) -> tuple[bytes, bytes | None]:
    """(the plain PEM, the KEK that opened it: None for a plain file). Raises KeyLocked for an encrypted key and
    no KEK, WrongKEK when none of `keks` opens it."""
    if not is_encrypted(pem):
        return pem, None
    tried = False
    for kek in keks:
        if kek is None:
            continue
        tried = True
        try:
            return pki.key_pem(_load(pem, password(kek))), kek
        except ValueError:
            continue
    if not tried:
        raise KeyLocked("the TLS key is encrypted (autolock) and needs the unlock key")
    raise WrongKEK("the TLS key does not open with the key given")


def wanted(pem: bytes, kek: bytes | None) -> bytes:
    """`pem` (plain) as it should be on disk: encrypted under `kek`, or plain when there is none."""
    return encrypt(pem, kek) if kek is not None else pem


def write(path: Path, plain_pem: bytes, kek: bytes | None) -> None:
    """Replace the key file atomically with `plain_pem` encrypted under `kek` (plain when None)."""
    pki.write_private(path, wanted(plain_pem, kek))


def _load(pem: bytes, pw: bytes | None) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        key = serialization.load_pem_private_key(pem, password=pw)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise ValueError(str(e)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an ECDSA key")
    return key
