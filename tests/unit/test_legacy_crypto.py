"""The legacy crypto: OAEP-SHA1 to the originals' RSA-1024 keys, CBC with the zero IV, the
padding check (one error for every failure) and the spool's chunk-by-chunk decryption.
Parsing the RSA-1024 keys is :func:`common.keys.load_legacy_public_key` (test_keys.py)."""

from __future__ import annotations

import os

import pytest
from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA1
from Crypto.Util.Padding import pad
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import IntegrityError
from common.keys import load_legacy_public_key
from gateway.legacy_crypto import (
    padded_size,
    plaintext_size,
    wrap_legacy_key,
)
from gateway.spool import Spool
from tests.legacy_client import legacy_key

KEY = legacy_key()


def cbc(key: bytes, data: bytes) -> bytes:
    return AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt(data)


@pytest.mark.parametrize("size", [16, 32])
def test_key_wrapping_is_oaep_sha1(size: int) -> None:
    aes = os.urandom(size)
    wrapped = wrap_legacy_key(
        load_legacy_public_key(KEY.public_key().export_key(format="DER")), aes
    )
    assert len(wrapped) == 128
    assert PKCS1_OAEP.new(KEY, hashAlgo=SHA1).decrypt(wrapped) == aes


def test_padding_failures_are_one_error() -> None:
    key = os.urandom(16)
    good = cbc(key, pad(b"hello", 16))
    assert plaintext_size(key, good, 16) == 5
    failures = [
        (cbc(key, b"A" * 16), 16),  # pad byte 0x41
        (cbc(key, b"A" * 15 + b"\x00"), 16),  # pad byte 0
        (cbc(key, b"A" * 14 + b"\x01\x02"), 16),  # inconsistent
        (good[:15], 15),  # not a whole block
        (b"", 0),  # nothing
    ]
    errors = []
    for blocks, size in failures:
        with pytest.raises(IntegrityError) as caught:
            plaintext_size(key, blocks, size)
        errors.append(str(caught.value))
    assert len(set(errors)) == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.sampled_from([16, 48, 1024]))
def test_spool_decrypts_chunk_by_chunk(size: int, chunk_size: int) -> None:
    key = os.urandom(32)
    data = os.urandom(size)
    ciphertext = cbc(key, pad(data, 16))
    assert len(ciphertext) == padded_size(size)
    spool = Spool(None, len(ciphertext))
    try:
        for start in range(0, len(ciphertext), 100):
            spool.write(ciphertext[start : start + 100])
        assert spool.plaintext_size(key) == size
        count = max(1, -(-size // chunk_size))
        assert b"".join(spool.chunk(i, chunk_size) for i in range(count)) == data
    finally:
        spool.close()


def test_spool_refuses_more_than_announced() -> None:
    spool = Spool(None, 16)
    try:
        with pytest.raises(IntegrityError):
            spool.write(bytes(17))
    finally:
        spool.close()
