"""WAL: the member's durable Raft state — log entries and the hard state (term, vote, commit) — in one
append-only file of framed records.

File: the magic `SHOALWAL` + format version, then records framed as `u32 length | u32 crc32 | payload`.
Payload: a clear header, `u8 kind` then ENTRY `(term u64, index u64, type u8)`, HARD_STATE `(term, vote,
commit u64)` or SNAPSHOT_MARK `(index u64, term u64)` (the log in this file starts right after that entry, which
the snapshot file covers), then — version 2 — the record's body sealed under the member's data key
(`atrest.Sealer`: key id, nonce, AES-256-GCM of the entry's data, or of nothing for the other kinds) with the
header as associated data. So every byte of every record is authenticated and entry data is encrypted; index,
term and vote stay clear. Version 1 (plaintext) files are upgraded at open: replayed, then rewritten as version
2 by the same atomic `rewrite()` compaction uses. Compaction rewrites the file (`rewrite()`: a new file with
the mark, the hard state and the kept tail, fsynced, then renamed over the old one), so a crash leaves the old
log or the new one.

`save()` writes one Ready's records with a single write and a single `os.fsync` (group commit): everything
it returns having saved is durable. On `open()` the records are replayed: a later ENTRY at an index we already
hold replaces that entry and everything after it (the leader overwrote a suffix, §5.3), and the last
HARD_STATE wins. A torn tail — the unfinished last write of a crash — is cut off with a warning: it was never
fsynced, so nothing it held was acknowledged. Damage anywhere before the tail raises WalCorrupt: the member
refuses to start rather than silently forget entries it may have acknowledged. A record whose checksum holds
but whose seal does not (tampering: a torn write cannot do that) raises WalCorrupt wherever it is, naming the
file and the offset."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.raftstore.atrest import Sealer, Unsealable
from services.raftstore.raft import Entry, EntryType, HardState

log = logging.getLogger(__name__)

MAGIC = b"SHOALWAL"
VERSION = 2  # 2: record bodies sealed (atrest); 1: plaintext, upgraded at open
PLAIN_VERSION = 1
_FILE_HEADER = struct.Struct("<8sI")
_FRAME = struct.Struct("<II")  # payload length, crc32(payload)
_ENTRY = struct.Struct("<BQQB")  # kind, term, index, entry type; data follows
_HARD = struct.Struct("<BQQQ")  # kind, term, vote, commit
_MARK = struct.Struct("<BQQ")  # kind, index, term
KIND_ENTRY = 1
KIND_HARD_STATE = 2
KIND_SNAPSHOT_MARK = 3
#: a record can hold one entry of at most the transaction limit plus slack; anything larger is damage
MAX_RECORD = 64 << 20
FILE_NAME = "wal.log"


class WalCorrupt(RuntimeError):
    """The WAL is damaged before its tail: starting would risk losing acknowledged entries."""


class WalLocked(RuntimeError):
    """Another process has this data directory open: two writers would corrupt the log."""


@dataclass
class Replayed:
    hard_state: HardState
    entries: list[Entry]
    truncated_bytes: int = 0  # size of the torn tail cut off, 0 if none
    base_index: int = 0  # the log starts after this entry (a snapshot covers it and everything before)
    base_term: int = 0


def encode_entry(e: Entry, sealer: Sealer) -> bytes:
    head = _ENTRY.pack(KIND_ENTRY, e.term, e.index, e.type)
    return head + sealer.seal(e.data, head)


def encode_hard_state(hs: HardState, sealer: Sealer) -> bytes:
    head = _HARD.pack(KIND_HARD_STATE, hs.term, hs.vote, hs.commit)
    return head + sealer.seal(b"", head)


def encode_mark(index: int, term: int, sealer: Sealer) -> bytes:
    head = _MARK.pack(KIND_SNAPSHOT_MARK, index, term)
    return head + sealer.seal(b"", head)


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class WAL:
    def __init__(self, path: Path, fd: int, sealer: Sealer, lock_fd: int = -1) -> None:
        self.path = path
        self.sealer = sealer
        self._fd = fd
        self._lock_fd = lock_fd
        self.fsyncs = 0
        self.bytes_written = 0
        #: where the file ends (the file is only ever appended to through this object); None: ask the file
        self._end: int | None = None

    # ---- opening and replay -------------------------------------------------------------------------------
    @classmethod
    def open(cls, data_dir: Path, sealer: Sealer) -> tuple[WAL, Replayed]:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(data_dir)
        path = data_dir / FILE_NAME
        fresh = not path.exists() or path.stat().st_size < _FILE_HEADER.size
        try:
            if fresh:
                cls._create(path)
                replayed, version = Replayed(HardState(), []), VERSION
            else:
                replayed, version = cls._replay(path, sealer)
        except BaseException:
            os.close(lock_fd)
            raise
        wal = cls(path, os.open(path, os.O_WRONLY | os.O_APPEND), sealer, lock_fd)
        if version != VERSION:
            wal.rewrite(replayed.base_index, replayed.base_term, replayed.hard_state, replayed.entries)
            log.warning("wal: %s: upgraded from plaintext version %d to encrypted version %d (%d entries)",
                        path, version, VERSION, len(replayed.entries))
        return wal, replayed

    @staticmethod
    def _create(path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(_FILE_HEADER.pack(MAGIC, VERSION))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    @classmethod
    def _replay(cls, path: Path, sealer: Sealer) -> tuple[Replayed, int]:
        buf = path.read_bytes()
        magic, version = _FILE_HEADER.unpack_from(buf, 0)
        if magic != MAGIC or version not in (PLAIN_VERSION, VERSION):
            raise WalCorrupt(f"wal: {path} is not a shoal WAL (version {PLAIN_VERSION} or {VERSION}); "
                             "refusing to start")
        records, end = scan(buf, _FILE_HEADER.size, str(path))
        out = Replayed(HardState(), [])
        for offset, p in records:
            apply_record(out, p, str(path), sealer=sealer if version == VERSION else None, offset=offset)
        if end < len(buf):
            out.truncated_bytes = len(buf) - end
            log.warning("wal: %s has a torn tail of %d bytes at offset %d (an unfinished write of a crash, "
                        "never acknowledged); truncating it", path, out.truncated_bytes, end)
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        last = out.entries[-1].index if out.entries else out.base_index
        if out.hard_state.commit > last:
            log.warning("wal: %s: commit index %d is past the last entry %d; using %d",
                        path, out.hard_state.commit, last, last)
            hs = out.hard_state
            out.hard_state = HardState(hs.term, hs.vote, last)
        return out, version

    # ---- writing ------------------------------------------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry], *, sync: bool = True) -> None:
        """Write `entries` then `hard_state` with one write, made durable by one fsync when `sync` (only a
        commit-index change may skip it: the next fsync covers it, and a lost one is learned again)."""
        if not entries and hard_state is None:
            return
        parts = [frame(encode_entry(e, self.sealer)) for e in entries]
        if hard_state is not None:
            parts.append(frame(encode_hard_state(hard_state, self.sealer)))
        data = b"".join(parts)
        buf = memoryview(data)
        start = self._end if self._end is not None else os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while buf:
                n = os.write(self._fd, buf)
                buf = buf[n:]
                self.bytes_written += n
            if sync:
                os.fsync(self._fd)
                self.fsyncs += 1
        except OSError:
            # Disk full or an I/O error: cut what part of the batch landed, so the file ends on a whole record
            # (a restart would cut a torn tail anyway, but not leave one behind us). Nothing of it was
            # acknowledged; the caller decides what to do with the error.
            self._end = None  # where the file ends is asked again next time, whatever happens here
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                self._end = start
            raise
        self._end = start + len(data)

    def rewrite(self, base_index: int, base_term: int, hard_state: HardState, entries: Sequence[Entry]) -> None:
        """Replace the file with one whose log starts after `base_index` (covered by a durable snapshot):
        compaction, or installing a snapshot from the leader. Atomic: written aside, fsynced, renamed."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            sealer = self.sealer
            parts = [_FILE_HEADER.pack(MAGIC, VERSION), frame(encode_mark(base_index, base_term, sealer))]
            parts += [frame(encode_entry(e, sealer)) for e in entries]
            parts.append(frame(encode_hard_state(hard_state, sealer)))
            buf = memoryview(b"".join(parts))
            while buf:
                buf = buf[os.write(fd, buf):]
            os.fsync(fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        old, self._fd = self._fd, os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._end = None
        os.close(old)
        self.fsyncs += 1

    def close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)  # closing the lock file releases the lock
        self._fd = self._lock_fd = -1


def scan(buf: bytes, pos: int, name: str = "wal") -> tuple[list[tuple[int, bytes]], int]:
    """Split `buf` into record payloads from offset `pos`. Returns them with the offset of their record, and
    the offset where valid records end (len(buf) unless there is a torn tail). Raises WalCorrupt for damage
    that is not a torn tail."""
    payloads: list[tuple[int, bytes]] = []
    size = len(buf)
    while pos < size:
        if size - pos < _FRAME.size:
            return payloads, pos  # torn in the frame header
        length, crc = _FRAME.unpack_from(buf, pos)
        end = pos + _FRAME.size + length
        if length == 0 or length > MAX_RECORD:
            if not any(buf[pos:]):
                return payloads, pos  # zero-filled tail: the file grew but the data never landed
            raise WalCorrupt(f"wal: {name}: invalid record length {length} at offset {pos} with "
                             f"{size - pos} bytes after it; refusing to start")
        if end > size:
            return payloads, pos  # torn in the payload
        payload = buf[pos + _FRAME.size:end]
        if zlib.crc32(payload) != crc:
            if end == size:
                return payloads, pos  # the last record was only partly written
            raise WalCorrupt(f"wal: {name}: checksum mismatch in the record at offset {pos}, and {size - end} "
                             "bytes of records follow it: the log is damaged before its tail; refusing to "
                             "start (restore this member from a peer or a backup)")
        payloads.append((pos, payload))
        pos = end
    return payloads, pos


def _unseal(payload: bytes, head: int, sealer: Sealer | None, name: str, offset: int) -> bytes:
    """The record's body: opened under `sealer` (version 2), or the plain rest (version 1)."""
    if sealer is None:
        return payload[head:]
    try:
        return sealer.open(memoryview(payload)[head:], payload[:head])
    except Unsealable as e:
        raise WalCorrupt(f"wal: {name}: the record at offset {offset} fails its seal: {e}; refusing to start "
                         "(never applied; restore this member from a peer)") from None


def apply_record(out: Replayed, payload: bytes, name: str = "wal", *, sealer: Sealer | None = None,
                 offset: int = 0) -> None:
    """Apply one record to `out`; `sealer` None reads a version 1 (plaintext) record."""
    kind = payload[0]
    if kind == KIND_ENTRY:
        _, term, index, etype = _ENTRY.unpack_from(payload, 0)
        entry = Entry(term, index, _unseal(payload, _ENTRY.size, sealer, name, offset), EntryType(etype))
        ents = out.entries
        first = ents[0].index if ents else out.base_index + 1
        if index > first + len(ents) or index < first:
            raise WalCorrupt(f"wal: {name}: entry {index} at offset {offset} leaves a gap after "
                             f"{first + len(ents) - 1}")
        del ents[index - first:]  # a rewritten suffix replaces what was there (§5.3)
        ents.append(entry)
    elif kind == KIND_HARD_STATE:
        _, term, vote, commit = _HARD.unpack_from(payload, 0)
        _unseal(payload, _HARD.size, sealer, name, offset)
        out.hard_state = HardState(term, vote, commit)
    elif kind == KIND_SNAPSHOT_MARK:
        _, index, term = _MARK.unpack_from(payload, 0)
        _unseal(payload, _MARK.size, sealer, name, offset)
        out.base_index, out.base_term = index, term
        out.entries.clear()
    else:
        raise WalCorrupt(f"wal: {name}: unknown record kind {kind} at offset {offset}")


def _lock(data_dir: Path) -> int:
    fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WalLocked(f"wal: {data_dir} is in use by another process; refusing to start a second "
                        "member on the same data") from None
    return fd


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
