"""Encryption at rest for one raftstore member: its data keys (DEKs) and the key-encryption key (KEK) wrapping them.

Every WAL record and the snapshot are sealed with AES-256-GCM under a DEK of this member (`Sealer`); a record
names its key by a u32 id, so a rotated key coexists with the old one until the next snapshot has re-encrypted
everything (then `DataKeys.retire()` forgets the old one). Each member has its own DEKs: a snapshot sent to a
follower travels as plaintext over mutual TLS and the receiver seals it with its own key.

Files:
- `<cert dir>/swarm-node.kek` — the KEK, 32 random bytes, 0600, beside the member's TLS key, created at the first
  start. With autolock it is absent: the KEK is the unlock key's bytes (`SWMKEY-1-<base64>`, as SwarmKit), known
  only to the admin who holds it, and a restarted member is locked (`Locked`) until it is given the key.
- `<data dir>/keys.json` — `{"version": 1, "kek": "file" | "autolock", "current": id, "deks": {id: wrapped},
  "rotate": bool, "tls_prev": wrapped?}` ("rotate": a DEK rotation is owed — set with autolock in the same
  write, so a crash between the two cannot skip it; "tls_prev": the KEK the member's TLS key may still be
  encrypted under, wrapped by the current KEK, recorded before the TLS key is re-written and dropped after),
  a DEK wrapped as `nonce(12) | AES-GCM(kek, dek, aad="shoal-dek:<id>")`, base64. Written atomically (temporary
  file, fsync, rename, fsync of the directory), so a crash leaves the old set or the new one.

- `<cert dir>/swarm-node.key` — the member's TLS key: encrypted under the unlock key while autolock is on, a plain
  PEM otherwise (shoal/keyfile.py, SwarmKit's rule); `open_credentials`/`set_autolock` keep it so.

Stealing the data directory alone yields nothing; the data directory plus the certificate directory yields
everything unless autolock is on. See docs/security.md "Encryption at rest"."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shoal import unlockkey
from shoal.files import write_durable
from shoal.transport import Credentials, TransportError

log = logging.getLogger(__name__)

KEK_FILE = "swarm-node.kek"
KEYS_FILE = "keys.json"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID = struct.Struct("<I")
#: bytes a sealed message adds to its plaintext: key id, nonce, tag
OVERHEAD = _KEY_ID.size + NONCE_BYTES + TAG_BYTES
KEK_FILE_MODE = "file"
KEK_AUTOLOCK = "autolock"


class KeysUnusable(RuntimeError):
    """The member's keys cannot be used (missing, damaged, or a wrong KEK): a start-up error."""


class Locked(KeysUnusable):
    """Autolock is on and this member has not been given its unlock key: it must not serve."""


class WrongKey(KeysUnusable):
    """The KEK (or unlock key) given does not open this member's data keys."""


class Unsealable(Exception):
    """A sealed message fails authentication or names a key this member does not have."""


# ---- unlock keys (shoal/unlockkey.py) ---------------------------------------------------------------------------
new_unlock_key = unlockkey.new
parse_unlock_key = unlockkey.parse


# ---- sealing ----------------------------------------------------------------------------------------------------
class Sealer:
    """AES-256-GCM under a set of data keys: `seal` with the current one, `open` with whichever a message names.
    Sealed: `key id u32 | nonce 12 | ciphertext+tag`; the caller's `aad` (clear header fields) is authenticated
    too, so a record cannot be moved to another index or term without detection."""

    #: bytes `seal` adds to a plaintext
    overhead = OVERHEAD

    def __init__(self, deks: dict[int, bytes], current: int) -> None:
        if current not in deks:
            raise KeysUnusable(f"atrest: the current data key {current} is not in the key set")
        self._aeads = {kid: AESGCM(k) for kid, k in deks.items()}
        self.current = current
        self._head = _KEY_ID.pack(current)
        self._aead = self._aeads[current]

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return self._head + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes | memoryview, aad: bytes = b"") -> bytes:
        if len(sealed) < OVERHEAD:
            raise Unsealable(f"sealed data of {len(sealed)} bytes is shorter than its {OVERHEAD}-byte envelope")
        (kid,) = _KEY_ID.unpack_from(sealed, 0)
        aead = self._aeads.get(kid)
        if aead is None:
            raise Unsealable(f"sealed under data key {kid}, which this member does not have")
        nonce = bytes(sealed[_KEY_ID.size:_KEY_ID.size + NONCE_BYTES])
        try:
            return aead.decrypt(nonce, bytes(sealed[_KEY_ID.size + NONCE_BYTES:]), aad)
        except InvalidTag:
            raise Unsealable("authentication failed (the bytes were changed, or sealed under another key)") from None

    def key_ids(self) -> set[int]:
        return set(self._aeads)


# ---- the key files ----------------------------------------------------------------------------------------------
def _wrap(kek: bytes, kid: int, dek: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return base64.b64encode(nonce + AESGCM(kek).encrypt(nonce, dek, f"shoal-dek:{kid}".encode())).decode()


def _unwrap(kek: bytes, kid: int, wrapped: str) -> bytes:
    raw = base64.b64decode(wrapped)
    try:
        return AESGCM(kek).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"shoal-dek:{kid}".encode())
    except InvalidTag:
        raise WrongKey("atrest: the key-encryption key does not open this member's data keys") from None


@dataclass
class DataKeys:
    """A member's DEKs and where its KEK lives. `load()` opens (or creates) them; `sealer()` is what the WAL and
    the snapshot file use. Every change is written to keys.json before it is used."""

    data_dir: Path
    kek_dir: Path
    kek: bytes
    mode: str  # KEK_FILE_MODE or KEK_AUTOLOCK
    deks: dict[int, bytes] = field(default_factory=dict)
    current: int = 0
    #: a DEK rotation is owed (autolock was turned on); `rotate()` clears it
    rotation_owed: bool = False
    #: a KEK the member's TLS key may still be encrypted under: recorded (wrapped by the current KEK) before
    #: the TLS key is re-written under a new one and cleared after, so a crash in between leaves a key that opens
    tls_prev: bytes | None = None

    @property
    def keys_path(self) -> Path:
        return self.data_dir / KEYS_FILE

    @property
    def kek_path(self) -> Path:
        return self.kek_dir / KEK_FILE

    @classmethod
    def load(cls, data_dir: Path, kek_dir: Path, unlock_key: bytes | None = None) -> DataKeys:
        """Open the member's keys. A new member gets a KEK file and a first DEK. Autolocked keys need
        `unlock_key` (else `Locked`); a wrong one is `WrongKey`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        keys_path = data_dir / KEYS_FILE
        if not keys_path.exists():
            kek = unlock_key if unlock_key is not None else _load_or_create_kek(kek_dir / KEK_FILE)
            keys = cls(data_dir, kek_dir, kek, KEK_AUTOLOCK if unlock_key is not None else KEK_FILE_MODE)
            keys.current = 1
            keys.deks = {1: AESGCM.generate_key(bit_length=256)}
            keys.save()
            return keys
        try:
            doc = json.loads(keys_path.read_bytes())
            mode, current, wrapped = doc["kek"], int(doc["current"]), doc["deks"]
            if doc.get("version") != 1 or mode not in (KEK_FILE_MODE, KEK_AUTOLOCK):
                raise ValueError(f"version {doc.get('version')}, kek {mode!r}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise KeysUnusable(f"atrest: {keys_path} is damaged or not a shoal key file ({e}); "
                               "refusing to start") from e
        if mode == KEK_AUTOLOCK:
            if unlock_key is None:
                raise Locked(f"atrest: autolock is on: this member's data keys ({keys_path}) need the unlock key")
            kek = unlock_key
        else:
            kek_path = kek_dir / KEK_FILE
            if not kek_path.exists():
                raise KeysUnusable(f"atrest: {keys_path} is wrapped by the key-encryption key {kek_path}, which is "
                                "missing; refusing to start (the data cannot be read without it)")
            kek = _read_kek(kek_path)
        deks = {int(k): _unwrap(kek, int(k), v) for k, v in wrapped.items()}
        tls_prev = _unwrap(kek, 0, doc["tls_prev"]) if doc.get("tls_prev") else None
        keys = cls(data_dir, kek_dir, kek, mode, deks, current, bool(doc.get("rotate", False)), tls_prev)
        if current not in deks:
            raise KeysUnusable(f"atrest: {keys_path} names current key {current}, which it does not hold")
        if mode == KEK_AUTOLOCK:
            with contextlib.suppress(FileNotFoundError):
                keys.kek_path.unlink()  # a crash after turning autolock on left the old KEK behind
        return keys

    def save(self) -> None:
        doc: dict[str, object] = {
            "version": 1, "kek": self.mode, "current": self.current, "rotate": self.rotation_owed,
            "deks": {str(k): _wrap(self.kek, k, v) for k, v in sorted(self.deks.items())}}
        if self.tls_prev is not None:
            doc["tls_prev"] = _wrap(self.kek, 0, self.tls_prev)
        write_durable(self.keys_path, json.dumps(doc, indent=1).encode())

    def sealer(self) -> Sealer:
        return Sealer(dict(self.deks), self.current)

    def rotate(self) -> Sealer:
        """A new current DEK (the old ones stay until `retire()`, after a snapshot re-encrypted everything)."""
        kid = max(self.deks) + 1
        self.deks[kid] = AESGCM.generate_key(bit_length=256)
        self.current = kid
        self.rotation_owed = False
        self.save()
        return self.sealer()

    def retire(self) -> bool:
        """Forget every DEK but the current one: call only when the WAL and snapshot hold nothing older."""
        if len(self.deks) == 1:
            return False
        self.deks = {self.current: self.deks[self.current]}
        self.save()
        return True

    def set_autolock(self, unlock_key: bytes | None, *, owe_rotation: bool = False,
                     creds: Credentials | None = None) -> None:
        """Re-wrap the DEKs under `unlock_key` (autolock on, the KEK file is then removed) or under a new KEK
        file (autolock off, `None`), and `creds`' TLS key with them: encrypted under the unlock key, or a plain
        PEM without autolock (shoal.keyfile: SwarmKit's rule). Crash-safe: the new KEK is durable before
        keys.json refers to it, the KEK the TLS key is still under is recorded in the same write (`tls_prev`)
        and forgotten only once the TLS key is re-written, and the old KEK file is removed only after.
        `owe_rotation` records, in the same write, that the DEK must be rotated (the caller does so next; after a
        crash, the next start does)."""
        if creds is not None and creds.kek is not None and creds.kek != unlock_key:
            self.tls_prev = creds.kek
        if unlock_key is not None:
            self.kek, self.mode = unlock_key, KEK_AUTOLOCK
            self.rotation_owed = self.rotation_owed or owe_rotation
            self.save()
        else:
            kek = _load_or_create_kek(self.kek_path)
            self.kek, self.mode = kek, KEK_FILE_MODE
            self.save()
        if creds is not None:
            self.settle_tls_key(creds)
        if unlock_key is not None:
            with contextlib.suppress(FileNotFoundError):
                self.kek_path.unlink()

    # ---- the member's TLS key (shoal.keyfile) ------------------------------------------------------------------
    @property
    def tls_kek(self) -> bytes | None:
        """What the TLS key is encrypted under on disk: the unlock key with autolock, nothing without."""
        return self.kek if self.mode == KEK_AUTOLOCK else None

    def open_credentials(self, cert_dir: Path) -> Credentials:
        """The member's TLS credentials, opened with the KEK (or the one recorded in `tls_prev`), then settled:
        a plain key is encrypted in place under the unlock key when autolock is on (and an encrypted one
        decrypted when it is off)."""
        errors: list[str] = []
        for kek in dict.fromkeys((self.tls_kek, self.tls_prev, None)):
            try:
                creds = Credentials(cert_dir, kek=kek)
            except TransportError as e:
                errors.append(str(e))
                continue
            self.settle_tls_key(creds)
            return creds
        raise KeysUnusable(f"atrest: the TLS key in {cert_dir} opens with none of this member's keys "
                           f"({'; '.join(errors)}); refusing to start")

    def settle_tls_key(self, creds: Credentials) -> None:
        if creds.rekey(self.tls_kek):
            log.info("atrest: the TLS key in %s is now %s", creds.dir,
                     "encrypted under the unlock key" if self.tls_kek is not None else "a plain PEM (no autolock)")
        if self.tls_prev is not None:
            self.tls_prev = None
            self.save()


def _read_kek(path: Path) -> bytes:
    raw = path.read_bytes()
    if len(raw) != KEY_BYTES:
        raise KeysUnusable(f"atrest: {path} holds {len(raw)} bytes, not a {KEY_BYTES}-byte key; refusing to start")
    return raw


def _load_or_create_kek(path: Path) -> bytes:
    if path.exists():
        return _read_kek(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durable(path, os.urandom(KEY_BYTES))
    return _read_kek(path)


class PlainSealer(Sealer):
    """The benchmark's control (SHOAL_RAFT_BENCH_PLAINTEXT): the same framing with key id 0 and no encryption, so
    `bench/raftstore.py --at-rest both` measures what sealing costs. Key id 0 is never a real data key, so a
    member in either mode refuses the other's data (`Unsealable`) instead of misreading it."""

    PLAIN_ID = 0
    overhead = _KEY_ID.size

    def __init__(self) -> None:  # no keys at all: nothing of Sealer's state is used
        self.current = self.PLAIN_ID
        self._head = _KEY_ID.pack(self.PLAIN_ID)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self._head + plaintext

    def open(self, sealed: bytes | memoryview, aad: bytes = b"") -> bytes:
        if len(sealed) < _KEY_ID.size or _KEY_ID.unpack_from(sealed, 0)[0] != self.PLAIN_ID:
            raise Unsealable("an encrypted record, and this member runs with SHOAL_RAFT_BENCH_PLAINTEXT")
        return bytes(sealed[_KEY_ID.size:])

    def key_ids(self) -> set[int]:
        return {self.PLAIN_ID}


def ephemeral_sealer() -> Sealer:
    """A throwaway single-key sealer, for tests that exercise the WAL without a member."""
    return Sealer({1: AESGCM.generate_key(bit_length=256)}, 1)
