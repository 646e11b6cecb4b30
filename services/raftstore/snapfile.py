"""The member's durable snapshot: one file, `snapshot.bin`, replaced atomically (write a temporary file,
fsync, rename, fsync the directory), so a crash leaves either the old snapshot or the new one, never half.

Format (version 2): `SHOALSNP` + version, `index u64 | term u64 | len(body) u64`, the body sealed under the
member's data key (`atrest.Sealer`, the header as associated data) — the body being `len(conf) u32`, the
membership as JSON (`{"voters": [...], "learners": [...]}`) and the data — then a CRC32 of everything before it.
Version 1 (the same without the seal: `index | term | len(conf) u32 | len(data) u64 | conf | data | crc`) is
read, and `load()` rewrites it as version 2 at once (atomically, as any save). A file that fails its checksum
or its seal is a loud refusal to start naming the file and the offset (it cannot be a torn write: the rename
happens after the fsync). The snapshot a leader sends a follower is the decoded one: it travels as plaintext
over mutual TLS and the follower seals it under its own key when it saves it."""

from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

from services.raftstore.atrest import Sealer, Unsealable
from services.raftstore.raft import ConfState, Snapshot
from services.raftstore.wal import WalCorrupt
from shoal.files import write_durable

log = logging.getLogger(__name__)

MAGIC = b"SHOALSNP"
VERSION = 2
PLAIN_VERSION = 1
FILE_NAME = "snapshot.bin"
_MAGIC = struct.Struct("<8sI")
_HEAD_V1 = struct.Struct("<8sIQQIQ")
_HEAD = struct.Struct("<8sIQQQ")
_CONF_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")


def encode(snap: Snapshot, sealer: Sealer) -> bytes:
    conf = json.dumps({"voters": list(snap.conf.voters), "learners": list(snap.conf.learners)}).encode()
    plain = _CONF_LEN.pack(len(conf)) + conf + snap.data
    size = len(plain) + sealer.overhead
    head = _HEAD.pack(MAGIC, VERSION, snap.index, snap.term, size)
    body = head + sealer.seal(plain, head)
    return body + _CRC.pack(zlib.crc32(body))


def decode(buf: bytes, sealer: Sealer, name: str = FILE_NAME) -> tuple[Snapshot, int]:
    """The snapshot in `buf` and its format version; raises WalCorrupt naming `name` and the offset."""
    if len(buf) < _MAGIC.size:
        raise WalCorrupt(f"snapshot: {name} is truncated ({len(buf)} bytes); refusing to start")
    magic, version = _MAGIC.unpack_from(buf, 0)
    if magic != MAGIC or version not in (PLAIN_VERSION, VERSION):
        raise WalCorrupt(f"snapshot: {name} is not a shoal snapshot (version {PLAIN_VERSION} or {VERSION}); "
                         "refusing to start")
    if version == PLAIN_VERSION:
        return _decode_v1(buf, name), version
    if len(buf) < _HEAD.size + _CRC.size:
        raise WalCorrupt(f"snapshot: {name} is truncated ({len(buf)} bytes); refusing to start")
    _, _, index, term, size = _HEAD.unpack_from(buf, 0)
    end = _HEAD.size + size
    _check_crc(buf, end, name)
    try:
        plain = sealer.open(memoryview(buf)[_HEAD.size:end], buf[:_HEAD.size])
    except Unsealable as e:
        raise WalCorrupt(f"snapshot: {name}: the body at offset {_HEAD.size} ({size} bytes) fails its seal: {e}; "
                         "refusing to start (never applied; restore this member from a peer)") from None
    (nconf,) = _CONF_LEN.unpack_from(plain, 0)
    conf = json.loads(plain[_CONF_LEN.size:_CONF_LEN.size + nconf])
    data = plain[_CONF_LEN.size + nconf:]
    return Snapshot(index, term, data, ConfState(tuple(conf["voters"]), tuple(conf["learners"]))), version


def _check_crc(buf: bytes, end: int, name: str) -> None:
    if end + _CRC.size != len(buf):
        raise WalCorrupt(f"snapshot: {name}: its header says {end + _CRC.size} bytes but it has {len(buf)}; "
                         "refusing to start (restore this member from a peer: remove it from the cluster and add "
                         "it back with a new id and empty data)")
    if zlib.crc32(buf[:end]) != _CRC.unpack_from(buf, end)[0]:
        raise WalCorrupt(f"snapshot: {name} fails its checksum (the CRC at offset {end}); refusing to start "
                         "(restore this member from a peer: remove it from the cluster and add it back with a new "
                         "id and empty data)")


def _decode_v1(buf: bytes, name: str) -> Snapshot:
    if len(buf) < _HEAD_V1.size + _CRC.size:
        raise WalCorrupt(f"snapshot: {name} is truncated ({len(buf)} bytes); refusing to start")
    _, _, index, term, nconf, ndata = _HEAD_V1.unpack_from(buf, 0)
    end = _HEAD_V1.size + nconf + ndata
    _check_crc(buf, end, name)
    conf = json.loads(buf[_HEAD_V1.size:_HEAD_V1.size + nconf])
    data = bytes(buf[_HEAD_V1.size + nconf:end])
    return Snapshot(index, term, data, ConfState(tuple(conf["voters"]), tuple(conf["learners"])))


def save(data_dir: Path, snap: Snapshot, sealer: Sealer) -> None:
    write_durable(data_dir / FILE_NAME, encode(snap, sealer))


def load(data_dir: Path, sealer: Sealer) -> Snapshot | None:
    """The member's snapshot, or None. A plaintext (version 1) file is rewritten sealed before returning."""
    path = data_dir / FILE_NAME
    if not path.exists():
        return None
    snap, version = decode(path.read_bytes(), sealer, str(path))
    if version != VERSION:
        save(data_dir, snap, sealer)
        log.warning("snapshot: %s: upgraded from plaintext version %d to encrypted version %d", path, version,
                    VERSION)
    return snap
