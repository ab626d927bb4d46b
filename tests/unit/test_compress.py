"""common.compress: round trips, the cheap skip, bounded decompression, corrupt input."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from isal import isal_zlib

from common import compress
from common.compress import Codec, compress_chunk, decompress_chunk
from common.errors import RemoteProtocolError

MIB = 1024 * 1024


def text_chunk(size: int = MIB) -> bytes:
    source = Path(compress.__file__).read_bytes() + Path(__file__).read_bytes()
    return (source * (size // len(source) + 1))[:size]


def test_text_is_compressed_and_round_trips() -> None:
    data = text_chunk()
    codec, payload = compress_chunk(data)
    assert codec is Codec.ZLIB
    assert len(payload) < len(data) // 2
    assert decompress_chunk(codec, payload, max_size=len(data)) == data
    assert zlib.decompress(payload) == data  # a plain zlib stream: any zlib reads it


def test_random_chunk_is_skipped_without_a_copy() -> None:
    data = os.urandom(MIB)
    codec, payload = compress_chunk(data)
    assert codec is Codec.NONE
    assert payload is data


def test_random_chunk_is_judged_from_a_small_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_compress = isal_zlib.compress

    def recording_compress(data: bytes, level: int = 2) -> bytes:
        seen.append(len(data))
        return real_compress(data, level)

    monkeypatch.setattr(isal_zlib, "compress", recording_compress)
    compress_chunk(os.urandom(MIB))
    assert seen, "the probe should compress a sample"
    assert max(seen) <= 8 * 1024


def test_incompressible_small_chunk_is_sent_as_is() -> None:
    data = os.urandom(100)
    assert compress_chunk(data) == (Codec.NONE, data)


def test_empty_chunk_is_sent_as_is() -> None:
    assert compress_chunk(b"") == (Codec.NONE, b"")


def test_codec_none_passes_data_through() -> None:
    data = memoryview(text_chunk(10_000))
    codec, payload = compress_chunk(data, Codec.NONE)
    assert codec is Codec.NONE
    assert payload is data


def test_chunk_with_compressible_samples_but_random_bulk_is_not_inflated() -> None:
    # The samples look like text but the whole does not shrink: the real size decides.
    size = MIB
    data = bytearray(os.urandom(size))
    sample = text_chunk(4096)
    for start in (0, (size - 4096) // 2, size - 4096):
        data[start : start + 4096] = sample
    codec, payload = compress_chunk(bytes(data))
    if codec is Codec.NONE:
        assert payload == bytes(data)
    else:
        assert len(payload) < size
        assert decompress_chunk(codec, payload, size) == data


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_level_round_trips(level: int) -> None:
    data = text_chunk(100_000)
    codec, payload = compress_chunk(data, level=level)
    assert codec is Codec.ZLIB
    assert decompress_chunk(codec, payload, len(data)) == data


@pytest.mark.parametrize("level", [4, 9, -1])
def test_bad_level_is_refused(level: int) -> None:
    with pytest.raises(ValueError):
        compress_chunk(b"abc", level=level)


@given(data=st.binary(max_size=50_000) | st.text(max_size=20_000).map(str.encode))
def test_round_trip_any_bytes(data: bytes) -> None:
    codec, payload = compress_chunk(data)
    assert len(payload) <= len(data)
    assert decompress_chunk(codec, payload, max_size=len(data)) == data


def test_decompression_bomb_is_rejected_without_expanding() -> None:
    bomb = zlib.compress(bytes(100 * MIB), 1)
    assert len(bomb) < MIB
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="beyond"):
            decompress_chunk(Codec.ZLIB, bomb, max_size=MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB


def test_output_of_exactly_max_size_is_accepted_and_one_more_is_not() -> None:
    data = text_chunk(10_000)
    payload = zlib.compress(data)
    assert decompress_chunk(Codec.ZLIB, payload, max_size=10_000) == data
    with pytest.raises(RemoteProtocolError):
        decompress_chunk(Codec.ZLIB, payload, max_size=9_999)


def test_uncompressed_chunk_above_max_size_is_rejected() -> None:
    assert decompress_chunk(Codec.NONE, memoryview(b"abcd"), max_size=4) == b"abcd"
    with pytest.raises(RemoteProtocolError):
        decompress_chunk(Codec.NONE, b"abcde", max_size=4)


def test_corrupt_truncated_or_padded_streams_are_rejected() -> None:
    payload = zlib.compress(text_chunk(10_000))
    corrupt = bytearray(payload)
    corrupt[len(corrupt) // 2] ^= 0xFF
    for bad in (bytes(corrupt), payload[:-1], payload[:10], payload + b"junk", b"", b"junk"):
        with pytest.raises(RemoteProtocolError):
            decompress_chunk(Codec.ZLIB, bad, max_size=MIB)


@pytest.mark.parametrize("codec", [2, 7, 255, -1])
def test_unknown_codec_is_a_protocol_error(codec: int) -> None:
    with pytest.raises(RemoteProtocolError, match="codec"):
        decompress_chunk(codec, b"data", max_size=MIB)


@given(codec=st.integers(0, 3), data=st.binary(max_size=2000))
def test_any_bytes_decompress_or_raise_the_protocol_error(codec: int, data: bytes) -> None:
    try:
        output = decompress_chunk(codec, data, max_size=4096)
    except RemoteProtocolError:
        return
    assert len(output) <= 4096
