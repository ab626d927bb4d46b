"""common.gcm: byte for byte pycryptodome's AES-GCM, tag checked before decrypting.

The NIST/McGrew-Viega known answers run through common.crypto (test_crypto.py); here the
construction is compared with pycryptodome's own GCM on random keys, nonces, associated
data and messages of every size class (empty, partial blocks, whole blocks, a MiB).
"""

from __future__ import annotations

import os
import threading

import pytest
from Crypto.Cipher import AES
from hypothesis import given, settings
from hypothesis import strategies as st

from common import gcm

KEY = bytes(range(32))
NONCE = bytes(range(12))


def reference(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce, mac_len=16)
    cipher.update(aad)
    ciphertext, tag = cipher.encrypt_and_digest(plaintext)
    return ciphertext + tag


def sealed(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    out = bytearray(len(plaintext) + gcm.TAG_SIZE)
    gcm.seal_into(key, nonce, aad, plaintext, out)
    return bytes(out)


# Around the small-message bound too: the two paths must agree at every size.
sizes = st.one_of(
    st.integers(0, 70),
    st.sampled_from([255, 256, 257, gcm.SMALL - 1, gcm.SMALL, gcm.SMALL + 1, 4096, 65537]),
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    nonce=st.binary(min_size=12, max_size=12),
    aad=sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    plaintext=sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
)
def test_seal_equals_pycryptodome_and_opens(
    key: bytes, nonce: bytes, aad: bytes, plaintext: bytes
) -> None:
    blob = sealed(key, nonce, aad, plaintext)
    assert blob == reference(key, nonce, aad, plaintext)
    out = bytearray(len(plaintext))
    assert gcm.open_into(key, nonce, aad, blob, out)
    assert out == plaintext


@pytest.mark.parametrize("aad_size", [0, 16, 17])
@pytest.mark.parametrize("size", [gcm.SMALL + 1, 4096, 4100])
def test_large_messages_with_empty_whole_or_partial_aad(size: int, aad_size: int) -> None:
    plaintext, aad = os.urandom(size), os.urandom(aad_size)
    assert sealed(KEY, NONCE, aad, plaintext) == reference(KEY, NONCE, aad, plaintext)


def test_a_mebibyte_equals_pycryptodome() -> None:
    plaintext, aad = os.urandom(1 << 20), os.urandom(40)
    assert sealed(KEY, NONCE, aad, plaintext) == reference(KEY, NONCE, aad, plaintext)


@pytest.mark.parametrize("size", [100, gcm.SMALL + 100])  # both paths
@pytest.mark.parametrize("part", ["ciphertext", "tag", "aad", "nonce", "key"])
def test_any_change_fails_and_leaves_out_untouched(part: str, size: int) -> None:
    key, nonce, aad, plaintext = KEY, NONCE, b"header", os.urandom(size)
    blob = bytearray(sealed(key, nonce, aad, plaintext))
    if part == "ciphertext":
        blob[3] ^= 1
    elif part == "tag":
        blob[-1] ^= 0x80
    elif part == "aad":
        aad = b"heades"
    elif part == "nonce":
        nonce = bytes(11) + b"\x01"
    else:
        key = bytes(32)
    out = bytearray(b"\xee" * len(plaintext))
    assert not gcm.open_into(key, nonce, aad, blob, out)
    assert out == b"\xee" * len(plaintext)


@pytest.mark.parametrize("blob", [b"", b"x" * 15])
def test_shorter_than_a_tag_is_not_genuine(blob: bytes) -> None:
    assert not gcm.open_into(KEY, NONCE, b"", blob, bytearray(0))


def test_a_nonce_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="nonce"):
        gcm.seal_into(KEY, bytes(16), b"", b"x", bytearray(17))
    assert not gcm.open_into(KEY, bytes(8), b"", bytes(17), bytearray(1))


def test_an_output_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="output"):
        gcm.seal_into(KEY, NONCE, b"", b"abc", bytearray(3 + gcm.TAG_SIZE + 1))
    with pytest.raises(ValueError, match="output"):
        gcm.open_into(KEY, NONCE, b"", sealed(KEY, NONCE, b"", b"abc"), bytearray(2))


def test_the_key_cache_stays_bounded_and_evicted_keys_still_work() -> None:
    keys = [os.urandom(32) for _ in range(gcm.CACHE_SIZE * 2)]
    for key in keys:
        sealed(key, NONCE, b"", b"data")
    assert len(gcm._states) <= gcm.CACHE_SIZE
    first = keys[0]  # evicted by now: made again on use
    assert sealed(first, NONCE, b"a", b"data") == reference(first, NONCE, b"a", b"data")


def test_threads_sealing_under_one_key_get_pycryptodome_results() -> None:
    plaintexts = [os.urandom(300 * n + 7) for n in range(8)]  # small and large
    results: dict[int, bytes] = {}

    def work(n: int) -> None:
        for _ in range(50):
            results[n] = sealed(KEY, NONCE, b"aad", plaintexts[n])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(results[n] == reference(KEY, NONCE, b"aad", plaintexts[n]) for n in range(8))
