"""Whole-file POSIX cksum from per-chunk parts equals common.cksum and the cksum command."""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.cksum import cksum
from workers.crc_combine import chunk_part, combine


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=700))
def test_combined_parts_equal_cksum_of_the_whole(data: bytes, size: int) -> None:
    chunks = split(data, size)
    assert combine((chunk_part(c), len(c)) for c in chunks) == cksum(data)


@given(st.lists(st.binary(max_size=200), max_size=8))
def test_uneven_and_empty_pieces_combine_too(pieces: list[bytes]) -> None:
    assert combine((chunk_part(p), len(p)) for p in pieces) == cksum(b"".join(pieces))


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * 65536 + 17])
def test_equals_the_cksum_command(size: int) -> None:
    data = os.urandom(size)
    chunks = split(data, 65536)
    command = shutil.which("cksum")
    assert command is not None
    printed = subprocess.run([command], input=data, capture_output=True, check=True).stdout
    assert combine((chunk_part(c), len(c)) for c in chunks) == int(printed.split()[0])


def test_bad_parts_are_refused() -> None:
    with pytest.raises(ValueError):
        combine([(2**32, 1)])
    with pytest.raises(ValueError):
        combine([(0, -1)])


_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


@given(st.binary(max_size=5000))
def test_parts_keep_the_stored_form(data: bytes) -> None:
    # Parts recorded by earlier versions are zlib.crc32 over bit-reversed bytes; a part
    # computed now must be the same number, or a resumed upload would not combine.
    assert chunk_part(data) == zlib.crc32(data.translate(_REVERSE_BITS))
