"""Reserving disk space: the size stays, the blocks are there, real failures are errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from client.partial import PartialDownload
from common import preallocate
from common.messages import DownloadReady

MIB = 1024 * 1024
LINUX = sys.platform.startswith("linux")


def test_space_is_reserved_and_the_size_kept(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDWR)
    try:
        before = os.fstat(fd).st_blocks
        assert preallocate.reserve(fd, 0, 8 * MIB) is LINUX
        after = os.fstat(fd)
        assert after.st_size == 100  # nothing written: the length says so
        if LINUX:
            assert (after.st_blocks - before) * 512 >= 8 * MIB - 4096
        os.pwrite(fd, b"y" * MIB, 0)
        assert os.fstat(fd).st_size == MIB
    finally:
        os.close(fd)
    assert path.read_bytes() == b"y" * MIB


def test_nothing_to_reserve_is_not_an_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert preallocate.reserve(fd, 0, 0) is False
        assert os.fstat(fd).st_blocks == 0
    finally:
        os.close(fd)


def test_more_than_a_file_can_hold_is_an_error_where_space_can_be_reserved(
    tmp_path: Path,
) -> None:
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        if LINUX:
            with pytest.raises(OSError):
                preallocate.reserve(fd, 0, 2**62)  # beyond any disk and any file size limit
        else:
            assert preallocate.reserve(fd, 0, 2**62) is False
    finally:
        os.close(fd)


def test_a_download_too_large_for_the_disk_fails_before_fetching(tmp_path: Path) -> None:
    size = 2**62
    ready = DownloadReady(b"t" * 16, b"k" * 32, size, MIB, -(-size // MIB), 0)
    partial = PartialDownload(tmp_path / "big", ready)
    before = set(os.listdir("/proc/self/fd")) if LINUX else set()
    if LINUX:
        with pytest.raises(OSError):
            partial.open_part(0)
        assert set(os.listdir("/proc/self/fd")) == before  # the part file was closed
    else:
        os.close(partial.open_part(0))
