"""common.cksum against the real ``cksum`` command, known answers, and streaming."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.cksum import Cksum, CksumSha256, cksum

VECTORS = Path(__file__).parent.parent / "vectors" / "cksum.json"
MIB = 1024 * 1024


def run_cksum_command(paths: list[Path]) -> list[tuple[int, int]]:
    """(crc, length) for each file, as the ``cksum`` command prints them."""
    out = subprocess.run(
        ["cksum", *map(str, paths)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = out.splitlines()
    assert len(lines) == len(paths)
    return [(int(line.split()[0]), int(line.split()[1])) for line in lines]


def vector_input(vector: dict[str, Any]) -> bytes:
    if "hex" in vector:
        return bytes.fromhex(vector["hex"])
    if "ramp" in vector:
        length = int(vector["ramp"])
        return (bytes(range(256)) * (length // 256 + 1))[:length]
    return bytes([int(vector["fill"])]) * int(vector["length"])


def load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vector", load_vectors(), ids=lambda v: v["name"])
def test_known_answers(vector: dict[str, Any]) -> None:
    data = vector_input(vector)
    assert cksum(data) == vector["crc"]
    assert len(data) == vector["length"]


def test_vector_file_agrees_with_cksum_command(tmp_path: Path) -> None:
    vectors = load_vectors()
    paths = []
    for number, vector in enumerate(vectors):
        path = tmp_path / f"vector{number}"
        path.write_bytes(vector_input(vector))
        paths.append(path)
    assert run_cksum_command(paths) == [(v["crc"], v["length"]) for v in vectors]


def test_matches_cksum_command_on_every_length_up_to_300(tmp_path: Path) -> None:
    blob = os.urandom(300)
    paths = []
    for length in range(301):
        path = tmp_path / f"len{length}"
        path.write_bytes(blob[:length])
        paths.append(path)
    expected = run_cksum_command(paths)
    assert [(cksum(blob[:length]), length) for length in range(301)] == expected


@pytest.mark.parametrize(
    "length", [65535, 65536, 65537, 2**24 - 1, 2**24, 2**24 + 1], ids=lambda n: f"len{n}"
)
def test_matches_cksum_command_where_length_needs_one_more_byte(
    tmp_path: Path, length: int
) -> None:
    data = os.urandom(length)
    path = tmp_path / "data"
    path.write_bytes(data)
    assert run_cksum_command([path]) == [(cksum(data), length)]


def test_matches_cksum_command_on_100_mib_random_file(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    streaming = Cksum()
    with path.open("wb") as handle:
        for _ in range(100):
            piece = os.urandom(MIB)
            handle.write(piece)
            streaming.update(piece)
    expected = run_cksum_command([path])
    assert [(streaming.digest(), streaming.length)] == expected
    assert cksum(path.read_bytes()) == expected[0][0]


@given(
    seed=st.integers(0, 2**32),
    length=st.integers(0, 300_000),
    cuts=st.lists(st.integers(0, 300_000), max_size=12),
)
def test_streaming_in_uneven_pieces_equals_one_shot(
    seed: int, length: int, cuts: list[int]
) -> None:
    # Lengths reach well past the 32 KiB internal block, so pieces straddle block edges.
    data = random.Random(seed).randbytes(length)
    bounds = sorted({0, length, *(cut % (length + 1) for cut in cuts)})
    state, both = Cksum(), CksumSha256()
    for start, end in itertools.pairwise(bounds):
        state.update(memoryview(data)[start:end])
        both.update(memoryview(data)[start:end])
    state.update(b"")
    assert state.length == both.length == length
    assert state.digest() == both.digest() == cksum(data)
    assert state.sha256() is None and both.sha256() == hashlib.sha256(data).digest()


def test_digest_can_be_taken_midway_and_updating_continues() -> None:
    state = Cksum()
    state.update(b"1234")
    assert state.digest() == cksum(b"1234")
    state.update(b"56789")
    assert state.digest() == cksum(b"123456789")


def test_accepts_bytes_bytearray_and_memoryview_alike() -> None:
    data = os.urandom(100_000)
    assert cksum(bytearray(data)) == cksum(memoryview(data)) == cksum(data)
