"""The member's durable snapshot: one file, `snapshot.bin`, replaced atomically (write a temporary file,
fsync, rename, fsync the directory), so a crash leaves either the old snapshot or the new one, never half.

Format: `SHOALSNP` + version, then `index u64 | term u64 | len(conf) u32 | len(data) u64`, the membership as
JSON (`{"voters": [...], "learners": [...]}`), the data, and a CRC32 of everything before it. A file that fails
its checksum is a loud refusal to start (it cannot be a torn write: the rename happens after the fsync)."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

from services.raftstore.raft import ConfState, Snapshot
from services.raftstore.wal import WalCorrupt, fsync_dir

MAGIC = b"SHOALSNP"
VERSION = 1
FILE_NAME = "snapshot.bin"
_HEAD = struct.Struct("<8sIQQIQ")
_CRC = struct.Struct("<I")


def encode(snap: Snapshot) -> bytes:
    conf = json.dumps({"voters": list(snap.conf.voters), "learners": list(snap.conf.learners)}).encode()
    body = _HEAD.pack(MAGIC, VERSION, snap.index, snap.term, len(conf), len(snap.data)) + conf + snap.data
    return body + _CRC.pack(zlib.crc32(body))


def decode(buf: bytes, name: str = FILE_NAME) -> Snapshot:
    if len(buf) < _HEAD.size + _CRC.size:
        raise WalCorrupt(f"snapshot: {name} is truncated ({len(buf)} bytes); refusing to start")
    magic, version, index, term, nconf, ndata = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION:
        raise WalCorrupt(f"snapshot: {name} is not a shoal snapshot (version {VERSION}); refusing to start")
    end = _HEAD.size + nconf + ndata
    if end + _CRC.size != len(buf) or zlib.crc32(buf[:end]) != _CRC.unpack_from(buf, end)[0]:
        raise WalCorrupt(f"snapshot: {name} fails its checksum; refusing to start (restore this member from a "
                         "peer: remove it from the cluster and add it back with a new id and empty data)")
    conf = json.loads(buf[_HEAD.size:_HEAD.size + nconf])
    data = bytes(buf[_HEAD.size + nconf:end])
    return Snapshot(index, term, data, ConfState(tuple(conf["voters"]), tuple(conf["learners"])))


def save(data_dir: Path, snap: Snapshot) -> None:
    path = data_dir / FILE_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        buf = memoryview(encode(snap))
        while buf:
            buf = buf[os.write(fd, buf):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(data_dir)


def load(data_dir: Path) -> Snapshot | None:
    path = data_dir / FILE_NAME
    if not path.exists():
        return None
    return decode(path.read_bytes(), str(path))
