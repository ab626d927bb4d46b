"""Property tests for common.crypto: round trips, and every single flipped bit fails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.crypto import KEY_SIZE, open_chunk, open_sealed, seal, seal_chunk
from common.errors import IntegrityError

keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)
payloads = st.binary(max_size=4096)
aads = st.binary(max_size=256)


def flip(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (taken modulo its length in bits) inverted."""
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


@given(key=keys, plaintext=payloads, aad=aads)
def test_open_of_seal_is_identity(key: bytes, plaintext: bytes, aad: bytes) -> None:
    assert open_sealed(key, seal(key, plaintext, aad), aad) == plaintext


@given(key=keys, plaintext=payloads, aad=aads, bit=st.integers(min_value=0))
def test_any_flipped_bit_in_nonce_ciphertext_or_tag_fails(
    key: bytes, plaintext: bytes, aad: bytes, bit: int
) -> None:
    blob = seal(key, plaintext, aad)
    with pytest.raises(IntegrityError):
        open_sealed(key, flip(blob, bit), aad)


@given(key=keys, plaintext=payloads, aad=aads.filter(bool), bit=st.integers(min_value=0))
def test_any_flipped_bit_in_aad_fails(key: bytes, plaintext: bytes, aad: bytes, bit: int) -> None:
    blob = seal(key, plaintext, aad)
    with pytest.raises(IntegrityError):
        open_sealed(key, blob, flip(aad, bit))


@given(key=keys, plaintext=payloads, aad=aads, cut=st.integers(min_value=1))
def test_truncated_or_extended_blob_fails(
    key: bytes, plaintext: bytes, aad: bytes, cut: int
) -> None:
    blob = seal(key, plaintext, aad)
    with pytest.raises(IntegrityError):
        open_sealed(key, blob[: len(blob) - 1 - cut % len(blob)], aad)
    with pytest.raises(IntegrityError):
        open_sealed(key, blob + b"\x00", aad)


@given(
    key=keys,
    plaintext=payloads,
    index=st.integers(0, 2**64 - 1),
    final=st.booleans(),
    aad=aads,
)
def test_open_chunk_of_seal_chunk_is_identity(
    key: bytes, plaintext: bytes, index: int, final: bool, aad: bytes
) -> None:
    blob = seal_chunk(key, index, final, plaintext, aad)
    assert open_chunk(key, index, final, blob, aad) == plaintext


@given(
    key=keys,
    plaintext=payloads,
    index=st.integers(0, 2**64 - 1),
    other=st.integers(0, 2**64 - 1),
    final=st.booleans(),
    other_final=st.booleans(),
)
def test_chunk_opened_at_another_position_or_flag_fails(
    key: bytes, plaintext: bytes, index: int, other: int, final: bool, other_final: bool
) -> None:
    if (index, final) == (other, other_final):
        other_final = not other_final
    blob = seal_chunk(key, index, final, plaintext)
    with pytest.raises(IntegrityError):
        open_chunk(key, other, other_final, blob)
