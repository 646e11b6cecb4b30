"""Tampering with a real raftstore process's data (issue 10): a flipped byte in a WAL record or in the snapshot
— with its CRC recomputed, as someone editing the file on purpose would, or left as it is — makes the member
refuse to start: the process exits non-zero and its log names the file and the offset. Nothing of it is served."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.raftstore import snapfile, wal
from services.raftstore.__main__ import EXIT_REFUSED
from tests.e2e.harness import eventually
from tests.integration.raftprocs import RaftProcs
from tests.specs import service_spec

pytestmark = pytest.mark.timeout(120)

FRAME = struct.Struct("<II")  # a WAL record's frame: payload length, crc32(payload)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[RaftProcs]:
    """One member with data on disk: 30 writes past a snapshot every 10 entries (and the compaction behind
    it), then stopped cleanly."""
    c = RaftProcs(tmp_path, 1, extra_env={"SHOAL_SNAPSHOT_INTERVAL": "10", "SHOAL_SNAPSHOT_TAIL": "2"})
    try:
        c.start_all()
        c.wait_leader(15)
        for i in range(30):
            obj = {"id": f"s{i}", "spec": service_spec(f"s{i}")}
            r = c.http.post(c.url(1) + "/v1/txn", json={"ops": [{"op": "create", "kind": "service", "object": obj}]})
            assert r.status_code == 200, r.text
        st = c.status(1)
        assert st and st["snapshot_index"] > 0 and st["first_index"] > 1, st
        c.stop(1)
        yield c
    finally:
        c.close()


def records(buf: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every record of a WAL file."""
    out, pos = [], wal._FILE_HEADER.size
    while pos < len(buf):
        length, _ = FRAME.unpack_from(buf, pos)
        out.append((pos, length))
        pos += FRAME.size + length
    return out


def refuses(c: RaftProcs, pattern: str) -> str:
    """Start the member; it must exit non-zero without ever serving, its log matching `pattern`."""
    log = c.base / "logs" / "raftstore-1.log"
    before = log.stat().st_size
    c.start(1)
    code = eventually(lambda: c.procs[1].poll(), 30, "the tampered member to exit")
    assert code == EXIT_REFUSED
    assert not c.healthy(1)
    text = log.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in text, text[-3000:]  # one clear line, not a crash
    assert re.search(pattern, text), text[-3000:]
    return text


@pytest.mark.parametrize("recrc", [True, False], ids=["crc-recomputed", "crc-left"])
def test_a_tampered_wal_record_stops_the_member_naming_file_and_offset(member: RaftProcs, recrc: bool) -> None:
    path = member.data_dir(1) / wal.FILE_NAME
    clean = path.read_bytes()
    buf = bytearray(clean)
    recs = records(clean)
    assert len(recs) > 3
    pos, length = recs[len(recs) // 2]  # a record in the middle: many follow it (never a torn tail)
    buf[pos + FRAME.size + length - 5] ^= 0x01  # inside the sealed body (the GCM tag's last bytes)
    if recrc:
        payload = bytes(buf[pos + FRAME.size:pos + FRAME.size + length])
        FRAME.pack_into(buf, pos, length, zlib.crc32(payload))
    path.write_bytes(bytes(buf))
    what = "fails its seal" if recrc else "checksum mismatch"
    refuses(member, rf"wal: {path}: .*{what}.*|wal: {path}: the record at offset {pos} .*")
    text = (member.base / "logs" / "raftstore-1.log").read_text(errors="replace")
    assert f"offset {pos}" in text and str(path) in text
    path.write_bytes(clean)  # the untouched file: the same member starts and serves its data
    member.start(1)
    eventually(lambda: member.healthy(1), 30, "the member with its clean WAL")
    member.wait_leader(15)
    assert member.http.get(member.url(1) + "/v1/objects/service/s29").status_code == 200


@pytest.mark.parametrize("recrc", [True, False], ids=["crc-recomputed", "crc-left"])
def test_a_tampered_snapshot_stops_the_member_naming_file_and_offset(member: RaftProcs, recrc: bool) -> None:
    path = member.data_dir(1) / snapfile.FILE_NAME
    buf = bytearray(path.read_bytes())
    end = len(buf) - snapfile._CRC.size
    buf[end - 40] ^= 0x80  # inside the sealed body
    if recrc:
        snapfile._CRC.pack_into(buf, end, zlib.crc32(bytes(buf[:end])))
    path.write_bytes(bytes(buf))
    where = rf"the body at offset {snapfile._HEAD.size} .*fails its seal" if recrc else rf"the CRC at offset {end}"
    refuses(member, rf"snapshot: .*{snapfile.FILE_NAME}.*{where}")


def test_a_copied_member_data_dir_does_not_open_under_another_members_key(member: RaftProcs,
                                                                          tmp_path: Path) -> None:
    """A stolen data directory without the node's key-encryption key (beside its TLS key) opens nowhere: the
    same data with a fresh certificate directory (a new KEK) refuses to start."""
    shutil.rmtree(member.certs.member_dir(1))
    member.certs.member_dir(1)  # a new identity and, at the first start, a new KEK
    refuses(member, r"(?i)key|kek|unwrap|seal")
