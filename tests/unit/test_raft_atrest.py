"""Encryption at rest (services/raftstore/atrest.py, wal.py, snapfile.py): the data keys and their KEK, sealed
WAL records and snapshots, plaintext files upgraded in place, and tampering refused with the file and offset."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

from services.raftstore import atrest, snapfile
from services.raftstore.atrest import DataKeys, Locked, WrongKey
from services.raftstore.raft import ConfState, Entry, EntryType, HardState, Snapshot
from services.raftstore.wal import FILE_NAME, WAL, WalCorrupt

SECRET = os.urandom(12).hex().encode()  # a known random value: it must never appear in a file


def keys(tmp: Path) -> DataKeys:
    return DataKeys.load(tmp / "data", tmp / "certs")


def write_wal(tmp: Path, sealer: atrest.Sealer) -> Path:
    wal, _ = WAL.open(tmp / "data", sealer)
    wal.save(HardState(1, 1, 1), [Entry(1, 1, b"first " + SECRET)])
    wal.save(HardState(1, 1, 2), [Entry(1, 2, b"second " + SECRET)])
    wal.close()
    return tmp / "data" / FILE_NAME


def refit_crc(buf: bytearray, record_offset: int) -> None:
    """What a tamperer who knows the format does: fix the record's CRC after changing its payload."""
    length, _ = struct.unpack_from("<II", buf, record_offset)
    payload = bytes(buf[record_offset + 8:record_offset + 8 + length])
    struct.pack_into("<II", buf, record_offset, length, zlib.crc32(payload))


# ---- keys -------------------------------------------------------------------------------------------------------
def test_a_new_member_gets_a_kek_beside_its_tls_key_and_a_wrapped_dek(tmp_path: Path) -> None:
    k = keys(tmp_path)
    kek = tmp_path / "certs" / atrest.KEK_FILE
    assert kek.stat().st_mode & 0o777 == 0o600 and len(kek.read_bytes()) == 32
    doc = (tmp_path / "data" / atrest.KEYS_FILE).read_bytes()
    assert k.deks[1] not in doc and k.deks[1].hex().encode() not in doc
    assert keys(tmp_path).deks == k.deks  # the same DEK next time


def test_a_missing_or_wrong_kek_refuses_to_open_the_keys(tmp_path: Path) -> None:
    keys(tmp_path)
    kek = tmp_path / "certs" / atrest.KEK_FILE
    kek.write_bytes(os.urandom(32))
    with pytest.raises(WrongKey):
        keys(tmp_path)
    kek.unlink()
    with pytest.raises(atrest.KeysUnusable, match="missing"):
        keys(tmp_path)


def test_autolock_takes_the_kek_off_the_disk_and_locks_the_next_start(tmp_path: Path) -> None:
    k = keys(tmp_path)
    unlock = atrest.new_unlock_key()
    assert unlock.startswith("SWMKEY-1-")
    k.set_autolock(atrest.parse_unlock_key(unlock))
    assert not (tmp_path / "certs" / atrest.KEK_FILE).exists()
    with pytest.raises(Locked):
        keys(tmp_path)
    with pytest.raises(WrongKey):
        DataKeys.load(tmp_path / "data", tmp_path / "certs", atrest.parse_unlock_key(atrest.new_unlock_key()))
    again = DataKeys.load(tmp_path / "data", tmp_path / "certs", atrest.parse_unlock_key(unlock))
    assert again.deks == k.deks
    again.set_autolock(None)  # off: a KEK file again, and no key needed
    assert keys(tmp_path).deks == k.deks


@pytest.mark.parametrize("text", ["", "SWMKEY-1-", "SWMTKN-1-abc", "SWMKEY-1-!!!!", "SWMKEY-1-" + "QUJD"])
def test_malformed_unlock_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        atrest.parse_unlock_key(text)


def test_rotation_keeps_old_records_readable_until_retired(tmp_path: Path) -> None:
    k = keys(tmp_path)
    old = k.sealer().seal(b"x")
    new_sealer = k.rotate()
    assert new_sealer.current == 2 and keys(tmp_path).sealer().open(old) == b"x"
    assert k.retire() and keys(tmp_path).deks.keys() == {2}
    with pytest.raises(atrest.Unsealable, match="key 1"):
        keys(tmp_path).sealer().open(old)


# ---- the WAL ----------------------------------------------------------------------------------------------------
def test_wal_records_are_sealed_and_read_back(tmp_path: Path) -> None:
    sealer = keys(tmp_path).sealer()
    path = write_wal(tmp_path, sealer)
    assert SECRET not in path.read_bytes()
    wal, r = WAL.open(tmp_path / "data", sealer)
    wal.close()
    assert [e.data for e in r.entries] == [b"first " + SECRET, b"second " + SECRET]
    with pytest.raises(WalCorrupt, match="offset 12 fails its seal"):  # another member's key cannot read it
        WAL.open(tmp_path / "data", atrest.ephemeral_sealer())


@pytest.mark.parametrize("which", ["first", "last"])
def test_a_tampered_record_refuses_to_start_naming_file_and_offset(tmp_path: Path, which: str) -> None:
    sealer = keys(tmp_path).sealer()
    path = write_wal(tmp_path, sealer)
    buf = bytearray(path.read_bytes())
    offsets = []
    pos = 12
    while pos < len(buf):
        offsets.append(pos)
        pos += 8 + struct.unpack_from("<I", buf, pos)[0]
    off = offsets[0] if which == "first" else offsets[-2]  # an entry record (the last record is a hard state)
    buf[off + 8 + 30] ^= 0x01  # a byte of the sealed body; the CRC is made to match again
    refit_crc(buf, off)
    path.write_bytes(bytes(buf))
    with pytest.raises(WalCorrupt, match=f"{path}: the record at offset {off} fails its seal"):
        WAL.open(tmp_path / "data", sealer)


def test_a_record_moved_to_another_index_is_refused(tmp_path: Path) -> None:
    sealer = keys(tmp_path).sealer()
    path = write_wal(tmp_path, sealer)
    buf = bytearray(path.read_bytes())
    off = 12
    struct.pack_into("<Q", buf, off + 8 + 1, 7)  # the clear term of the first entry: authenticated, not secret
    refit_crc(buf, off)
    path.write_bytes(bytes(buf))
    with pytest.raises(WalCorrupt, match=f"offset {off} fails its seal"):
        WAL.open(tmp_path / "data", sealer)


def v1_wal(path: Path, entries: list[Entry], hs: HardState) -> None:
    """A WAL as version 1 wrote it: plaintext records."""
    recs = [struct.pack("<BQQB", 1, e.term, e.index, e.type) + e.data for e in entries]
    recs.append(struct.pack("<BQQQ", 2, hs.term, hs.vote, hs.commit))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<8sI", b"SHOALWAL", 1) +
                     b"".join(struct.pack("<II", len(r), zlib.crc32(r)) + r for r in recs))


def test_a_plaintext_wal_and_snapshot_are_upgraded_in_place(tmp_path: Path) -> None:
    ents = [Entry(1, 1, SECRET, EntryType.NORMAL), Entry(1, 2, b"more " + SECRET)]
    v1_wal(tmp_path / "data" / FILE_NAME, ents, HardState(1, 1, 2))
    conf = b'{"voters": [1], "learners": []}'
    body = struct.pack("<8sIQQIQ", b"SHOALSNP", 1, 5, 1, len(conf), len(SECRET)) + conf + SECRET
    (tmp_path / "data" / snapfile.FILE_NAME).write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    sealer = keys(tmp_path).sealer()
    wal, r = WAL.open(tmp_path / "data", sealer)
    wal.close()
    assert r.entries == ents and r.hard_state == HardState(1, 1, 2)
    assert snapfile.load(tmp_path / "data", sealer) == Snapshot(5, 1, SECRET, ConfState((1,), ()))
    for name in (FILE_NAME, snapfile.FILE_NAME):
        raw = (tmp_path / "data" / name).read_bytes()
        assert SECRET not in raw and struct.unpack_from("<I", raw, 8)[0] == 2, name
    _, r2 = WAL.open(tmp_path / "data", sealer)
    assert r2.entries == ents and not list((tmp_path / "data").glob("*.tmp"))


# ---- the snapshot -----------------------------------------------------------------------------------------------
def test_a_tampered_snapshot_refuses_to_start_naming_file_and_offset(tmp_path: Path) -> None:
    sealer = keys(tmp_path).sealer()
    snap = Snapshot(42, 3, SECRET * 100, ConfState((1, 2), ()))
    snapfile.save(tmp_path, snap, sealer)
    path = tmp_path / snapfile.FILE_NAME
    buf = bytearray(path.read_bytes())
    assert SECRET not in buf and snapfile.load(tmp_path, sealer) == snap
    buf[200] ^= 0x01
    path.write_bytes(bytes(buf))
    with pytest.raises(WalCorrupt, match="checksum"):
        snapfile.load(tmp_path, sealer)
    struct.pack_into("<I", buf, len(buf) - 4, zlib.crc32(bytes(buf[:-4])))  # the tamperer fixes the CRC
    path.write_bytes(bytes(buf))
    with pytest.raises(WalCorrupt, match=f"{path}: the body at offset 36 .* fails its seal"):
        snapfile.load(tmp_path, sealer)


def test_a_rotation_owed_with_autolock_survives_a_crash_before_it(tmp_path: Path) -> None:
    k = keys(tmp_path)
    key = atrest.parse_unlock_key(atrest.new_unlock_key())
    k.set_autolock(key, owe_rotation=True)  # ... and the process dies before rotating
    again = DataKeys.load(tmp_path / "data", tmp_path / "certs", key)
    assert again.rotation_owed and again.current == 1
    again.rotate()
    assert not DataKeys.load(tmp_path / "data", tmp_path / "certs", key).rotation_owed


def test_the_benchmarks_plaintext_control_and_sealed_data_never_open_each_other(tmp_path: Path) -> None:
    """SHOAL_RAFT_BENCH_PLAINTEXT (bench/raftstore.py --at-rest both): the same framing, no encryption, and a
    member in one mode refuses the other's WAL and snapshot instead of misreading them."""
    plain, sealed = atrest.PlainSealer(), atrest.ephemeral_sealer()
    secret = os.urandom(16).hex().encode()
    assert secret in plain.seal(secret) and plain.open(plain.seal(secret, b"h"), b"h") == secret
    assert secret not in sealed.seal(secret)
    with pytest.raises(atrest.Unsealable):
        plain.open(sealed.seal(secret))
    with pytest.raises(atrest.Unsealable):
        sealed.open(plain.seal(secret))
    for writer, reader in ((plain, sealed), (sealed, plain)):
        d = tmp_path / type(writer).__name__
        wal, _ = WAL.open(d, writer)
        wal.save(HardState(1, 0, 1), [Entry(1, 1, secret, EntryType.NORMAL)])
        wal.close()
        snap = Snapshot(1, 1, secret, ConfState((1,), ()))
        snapfile.save(d, snap, writer)
        assert snapfile.load(d, writer) == snap
        with pytest.raises(WalCorrupt):
            WAL.open(d, reader)
        with pytest.raises(WalCorrupt):
            snapfile.load(d, reader)
