"""WAL: framing (length + CRC32), group commit (one fsync per save), replay of entries and hard state,
suffix rewrites, torn tails truncated with a log line, and damage before the tail refusing to start."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.raftstore.atrest import ephemeral_sealer
from services.raftstore.raft import Entry, HardState
from services.raftstore.wal import FILE_NAME, WAL, WalCorrupt, WalLocked

SEALER = ephemeral_sealer()


def write(tmp: Path, batches: list[tuple[HardState | None, list[Entry]]]) -> Path:
    wal, _ = WAL.open(tmp, SEALER)
    for hs, ents in batches:
        wal.save(hs, ents)
    wal.close()
    return tmp / FILE_NAME


def test_replays_entries_and_the_last_hard_state(tmp_path: Path) -> None:
    ents = [Entry(1, 1), Entry(1, 2, b"a"), Entry(2, 3, b"b")]
    write(tmp_path, [(HardState(1, 1, 0), ents[:2]), (HardState(2, 3, 2), ents[2:])])
    _, r = WAL.open(tmp_path, SEALER)
    assert r.entries == ents and r.hard_state == HardState(2, 3, 2) and r.truncated_bytes == 0


def test_one_fsync_per_save_however_many_entries(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, SEALER)
    wal.save(HardState(1, 1, 0), [Entry(1, i, b"x" * 100) for i in range(1, 501)])
    wal.save(HardState(1, 1, 500), [])
    assert wal.fsyncs == 2
    wal.close()


def test_a_rewritten_suffix_replaces_the_old_one_on_replay(tmp_path: Path) -> None:
    write(tmp_path, [(None, [Entry(1, 1), Entry(1, 2, b"old"), Entry(1, 3, b"old")]),
                     (HardState(2, 2, 0), [Entry(2, 2, b"new")])])
    _, r = WAL.open(tmp_path, SEALER)
    assert r.entries == [Entry(1, 1), Entry(2, 2, b"new")]


# The second batch is an entry record (8 + 18 + 32 sealing + 40 = 98 bytes) then a hard-state record (65 bytes).
@pytest.mark.parametrize(("cut", "kept"), [(1, 2), (40, 2), (66, 1), (120, 1), (162, 1)])
def test_a_torn_tail_is_truncated_with_a_warning(tmp_path: Path, cut: int, kept: int,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, [(HardState(1, 1, 1), [Entry(1, 1, b"keep")]),
                            (HardState(1, 1, 2), [Entry(1, 2, b"torn" * 10)])])
    size = path.stat().st_size
    os.truncate(path, size - cut)
    with caplog.at_level(logging.WARNING):
        wal, r = WAL.open(tmp_path, SEALER)
    assert [e.data for e in r.entries] == [b"keep", b"torn" * 10][:kept]
    assert r.hard_state == HardState(1, 1, 1), "the second batch's hard state was torn off"
    assert r.truncated_bytes > 0 and "torn tail" in caplog.text
    wal.save(HardState(1, 1, 1), [Entry(1, 2, b"after")])  # appends after the cut, cleanly
    wal.close()
    _, r2 = WAL.open(tmp_path, SEALER)
    assert [e.data for e in r2.entries] == [b"keep", b"after"] and r2.truncated_bytes == 0


def test_a_garbled_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    path = write(tmp_path, [(None, [Entry(1, 1, b"keep")]), (None, [Entry(1, 2, b"last")])])
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    _, r = WAL.open(tmp_path, SEALER)
    assert [e.data for e in r.entries] == [b"keep"]


def test_a_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    path = write(tmp_path, [(None, [Entry(1, 1, b"keep")])])
    with open(path, "ab") as f:
        f.write(bytes(64))
    _, r = WAL.open(tmp_path, SEALER)
    assert [e.data for e in r.entries] == [b"keep"] and r.truncated_bytes == 64


def test_damage_before_the_tail_refuses_to_start(tmp_path: Path) -> None:
    path = write(tmp_path, [(None, [Entry(1, 1, b"first-record")]), (HardState(1, 1, 2), [Entry(1, 2, b"x")])])
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorrupt, match="before its tail"):
        WAL.open(tmp_path, SEALER)


def test_a_file_that_is_not_a_wal_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"definitely not a write-ahead log")
    with pytest.raises(WalCorrupt, match="not a shoal WAL"):
        WAL.open(tmp_path, SEALER)


def test_a_data_directory_serves_one_process_at_a_time(tmp_path: Path) -> None:
    wal, _ = WAL.open(tmp_path, SEALER)
    with pytest.raises(WalLocked, match="in use"):
        WAL.open(tmp_path, SEALER)
    wal.close()
    WAL.open(tmp_path, SEALER)[0].close()


def test_commit_past_the_last_entry_is_clamped(tmp_path: Path) -> None:
    write(tmp_path, [(HardState(1, 1, 9), [Entry(1, 1)])])
    _, r = WAL.open(tmp_path, SEALER)
    assert r.hard_state.commit == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8), st.integers(min_value=1, max_value=200))
def test_any_truncation_replays_a_prefix_of_what_was_saved(tmp_path_factory: pytest.TempPathFactory,
                                                           datas: list[bytes], cut: int) -> None:
    tmp = tmp_path_factory.mktemp("wal")
    ents = [Entry(1, i + 1, d) for i, d in enumerate(datas)]
    path = write(tmp, [(None, [e]) for e in ents])
    size = path.stat().st_size
    os.truncate(path, max(12, size - cut))
    _, r = WAL.open(tmp, SEALER)
    assert r.entries == ents[:len(r.entries)]


def test_a_failed_write_is_cut_back_to_the_end_of_the_last_save(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL knows where its file ends without asking it on every save; a write that fails part-way is cut
    back to exactly the end of the saves before it, however many there were."""
    from services.raftstore import wal as walmod

    wal, _ = WAL.open(tmp_path, SEALER)
    for i in range(1, 4):
        wal.save(HardState(1, 1, i - 1), [Entry(1, i, b"kept%d" % i)])
    real = os.write

    def half_then_full(fd: int, data: memoryview | bytes) -> int:
        monkeypatch.setattr(walmod.os, "write", disk_full)
        return real(fd, bytes(data[:len(data) // 2]))

    def disk_full(fd: int, data: memoryview | bytes) -> int:
        raise OSError(28, "No space left on device")

    for attempt in range(2):
        monkeypatch.setattr(walmod.os, "write", half_then_full)
        with pytest.raises(OSError):
            wal.save(HardState(1, 1, 3), [Entry(1, 4, b"lost%d" % attempt * 50)])
    monkeypatch.setattr(walmod.os, "write", real)
    wal.save(HardState(1, 1, 3), [Entry(1, 4, b"after")])
    wal.close()
    _, r = WAL.open(tmp_path, SEALER)
    assert [e.data for e in r.entries] == [b"kept1", b"kept2", b"kept3", b"after"] and r.truncated_bytes == 0
