"""The blob file of an upload: slots, reads, locks between processes, durability calls,
removal, copies and the sweep."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from common.crypto import OVERHEAD
from common.errors import StorageError
from workers.blobs import Blobs, slot_offset

TID = bytes(range(16))
CHUNK = 64 * 1024


def test_a_chunk_reads_back_with_its_codec(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    blobs.write(TID, 3, 1, memoryview(b"sealed bytes"), CHUNK)
    assert blobs.read(TID, 3) == (1, b"sealed bytes")
    assert blobs.location(TID) == f"{tmp_path.name}/{TID.hex()}"


def test_chunk_i_sits_at_its_own_slot_in_one_private_file(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    for index in (2, 0, 1):
        blobs.write(TID, index, 0, bytes([index]) * 100, CHUNK)
    assert os.listdir(tmp_path) == [TID.hex()]
    path = tmp_path / TID.hex()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    for index in range(3):
        offset = slot_offset(CHUNK, index)
        assert offset % 4096 == 0
        assert data[offset : offset + 5] == struct.pack(">BI", 0, 100)
        assert data[offset + 5 : offset + 105] == bytes([index]) * 100
    # Slots are far enough apart for the largest sealed chunk and its slot header.
    assert slot_offset(CHUNK, 1) - slot_offset(CHUNK, 0) >= CHUNK + OVERHEAD + 5


def test_rewriting_a_slot_replaces_the_chunk_whole(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    blobs.write(TID, 0, 1, b"a longer first copy", CHUNK)
    blobs.write(TID, 0, 0, b"short", CHUNK)
    assert blobs.read(TID, 0) == (0, b"short")


def test_a_chunk_larger_than_its_slot_is_refused(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    with pytest.raises(ValueError, match="does not fit"):
        blobs.write(TID, 0, 0, bytes(CHUNK + OVERHEAD + 1), CHUNK)
    blobs.write(TID, 0, 0, bytes(CHUNK + OVERHEAD), CHUNK)  # the largest that fits


def test_reading_what_is_not_there_is_a_storage_error(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    with pytest.raises(StorageError):
        blobs.read(TID, 0)  # no file
    blobs.write(TID, 1, 0, b"x", CHUNK)
    with pytest.raises(StorageError, match="missing"):
        blobs.read(TID, 0)  # a hole
    with pytest.raises(StorageError, match="missing"):
        blobs.read(TID, 7)  # beyond the end


def test_another_chunk_size_for_the_same_file_is_refused(tmp_path: Path) -> None:
    Blobs(tmp_path).write(TID, 0, 0, b"x", CHUNK)
    with pytest.raises(StorageError, match="header"):
        Blobs(tmp_path).write(TID, 0, 0, b"x", 2 * CHUNK)


def _hold_slot(root: str, locked: Any, release: Any) -> None:
    blobs = Blobs(Path(root))
    with blobs.slot(TID, 5, CHUNK) as slot:
        slot.write(0, b"first")
        locked.set()
        release.wait(10)


def test_a_slot_is_locked_against_other_processes_but_other_slots_are_not(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("spawn")
    locked, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_slot, args=(str(tmp_path), locked, release))
    holder.start()
    try:
        assert locked.wait(30)
        blobs = Blobs(tmp_path)
        blobs.write(TID, 6, 0, b"next door", CHUNK)  # not blocked
        fd = os.open(tmp_path / TID.hex(), os.O_RDWR)
        try:
            # The same slot is taken: a non-blocking attempt fails while the holder lives.
            flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, slot_offset(CHUNK, 5), 1, 0)
            with pytest.raises(OSError):
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
            release.set()
            holder.join(30)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)  # free once it let go
        finally:
            os.close(fd)
        assert blobs.read(TID, 5) == (0, b"first")
    finally:
        release.set()
        holder.join(30)


def test_sync_closes_and_remove_deletes(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    for index in range(3):
        blobs.write(TID, index, 0, bytes([index]), CHUNK)
    blobs.sync(TID)
    assert blobs.read(TID, 2) == (0, b"\x02")
    blobs.remove(TID)
    assert not (tmp_path / TID.hex()).exists()
    blobs.remove(TID)  # nothing left: still fine


def test_copy_to_another_directory_is_private_and_reads_back(tmp_path: Path) -> None:
    source, target = Blobs(tmp_path / "a"), Blobs(tmp_path / "b")
    source.root.mkdir()
    target.root.mkdir()
    source.write(TID, 4, 1, b"kept", CHUNK)
    source.sync(TID)
    source.copy_to(TID, target)
    assert target.read(TID, 4) == (1, b"kept")
    assert stat.S_IMODE(target.path(TID).stat().st_mode) == 0o600
    with pytest.raises(FileNotFoundError):
        source.copy_to(b"n" * 16, target)


def test_a_copy_keeps_holes_as_holes_and_every_byte(tmp_path: Path) -> None:
    source, target = Blobs(tmp_path / "a"), Blobs(tmp_path / "b")
    source.root.mkdir()
    target.root.mkdir()
    big = 1024 * 1024
    # Chunks 0 and 9 only: the slots between are holes, as unsent chunks are.
    source.write(TID, 0, 0, os.urandom(big), big)
    source.write(TID, 9, 1, b"last", big)
    source.sync(TID)
    original = source.path(TID)
    if original.stat().st_blocks * 512 >= original.stat().st_size:
        pytest.fail("this file system stores no holes: the test cannot tell a sparse copy")
    source.copy_to(TID, target)
    copy = target.path(TID)
    assert copy.read_bytes() == original.read_bytes()
    # The copy takes about the space of what was written, not its length (9+ MiB).
    assert copy.stat().st_blocks * 512 < 3 * big < copy.stat().st_size
    assert target.read(TID, 9) == (1, b"last")


def test_copying_a_file_that_ends_in_a_hole_keeps_its_length(tmp_path: Path) -> None:
    source, target = Blobs(tmp_path / "a"), Blobs(tmp_path / "b")
    source.root.mkdir()
    target.root.mkdir()
    source.write(TID, 0, 0, b"x", CHUNK)
    with source.path(TID).open("r+b") as grown:
        grown.truncate(10 * 1024 * 1024)  # a hole to the end
    source.copy_to(TID, target)
    assert target.path(TID).read_bytes() == source.path(TID).read_bytes()


def test_sweep_removes_only_unreferenced_files(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    keep, drop = b"k" * 16, b"d" * 16
    blobs.write(keep, 0, 0, b"a", CHUNK)
    blobs.write(drop, 0, 0, b"b", CHUNK)
    (tmp_path / "not-a-transfer").mkdir()
    calls: list[int] = []

    def referenced() -> set[bytes]:
        calls.append(1)
        return {keep}

    assert blobs.sweep(referenced) == 1
    assert calls == [1]
    assert sorted(os.listdir(tmp_path)) == sorted([keep.hex(), "not-a-transfer"])
