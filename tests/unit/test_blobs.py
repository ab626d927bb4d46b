"""Chunk files on disk: atomic writes, reads, durability calls, removal and the sweep."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from workers.blobs import Blobs

TID = bytes(range(16))


def test_a_chunk_reads_back_with_its_codec(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    blobs.write(TID, 3, 1, memoryview(b"sealed bytes"))
    assert blobs.read(TID, 3) == (1, b"sealed bytes")
    assert (tmp_path / TID.hex() / "3").read_bytes() == b"\x01sealed bytes"
    assert blobs.location(TID) == f"{tmp_path.name}/{TID.hex()}"


def test_files_are_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    blobs.write(TID, 0, 0, b"x")
    blobs.write(TID, 0, 0, b"y")  # a retry replaces the chunk whole
    directory = tmp_path / TID.hex()
    assert os.listdir(directory) == ["0"]
    assert stat.S_IMODE((directory / "0").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert blobs.read(TID, 0) == (0, b"y")


def test_sync_and_remove(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    for index in range(3):
        blobs.write(TID, index, 0, bytes([index]))
    blobs.sync(TID, 3)
    blobs.remove(TID)
    assert not (tmp_path / TID.hex()).exists()
    blobs.remove(TID)  # nothing left: still fine


def test_sweep_removes_only_unreferenced_directories(tmp_path: Path) -> None:
    blobs = Blobs(tmp_path)
    keep, drop = b"k" * 16, b"d" * 16
    blobs.write(keep, 0, 0, b"a")
    blobs.write(drop, 0, 0, b"b")
    (tmp_path / "not-a-transfer").mkdir()
    calls: list[int] = []

    def referenced() -> set[bytes]:
        calls.append(1)
        return {keep}

    assert blobs.sweep(referenced) == 1
    assert calls == [1]
    assert sorted(os.listdir(tmp_path)) == sorted([keep.hex(), "not-a-transfer"])
