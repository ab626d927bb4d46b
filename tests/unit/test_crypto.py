"""common.crypto: AES-256-GCM known answers and tamper checks, STREAM chunks, HKDF."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common import crypto
from common.crypto import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    derive_session_keys,
    hkdf_sha256,
    open_chunk,
    open_sealed,
    random_key,
    seal,
    seal_chunk,
)
from common.errors import IntegrityError

VECTORS = Path(__file__).parent.parent / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["vectors"]
    return vectors


@pytest.mark.parametrize("vector", load("aes256gcm.json"), ids=lambda v: v["name"])
def test_aes256gcm_known_answer(vector: dict[str, Any]) -> None:
    key, nonce, aad, plaintext = (
        bytes.fromhex(vector[name]) for name in ("key", "nonce", "aad", "plaintext")
    )
    expected = nonce + bytes.fromhex(vector["ciphertext"]) + bytes.fromhex(vector["tag"])
    assert crypto._seal_with_nonce(key, nonce, plaintext, aad) == expected
    assert open_sealed(key, expected, aad) == plaintext


@pytest.mark.parametrize("vector", load("hkdf_sha256.json"), ids=lambda v: v["name"])
def test_hkdf_sha256_known_answer(vector: dict[str, Any]) -> None:
    okm = hkdf_sha256(
        bytes.fromhex(vector["ikm"]),
        info=bytes.fromhex(vector["info"]),
        salt=bytes.fromhex(vector["salt"]),
        length=vector["length"],
    )
    assert okm == bytes.fromhex(vector["okm"])


def test_seal_layout_is_nonce_ciphertext_tag() -> None:
    blob = seal(random_key(), b"hello", b"envelope")
    assert len(blob) == NONCE_SIZE + len(b"hello") + TAG_SIZE == len(b"hello") + crypto.OVERHEAD


def test_round_trip_with_bytes_and_memoryview() -> None:
    key = random_key()
    assert len(key) == KEY_SIZE
    plaintext = bytes(range(256)) * 10
    blob = seal(key, memoryview(plaintext), b"aad")
    assert open_sealed(key, blob, b"aad") == plaintext
    assert open_sealed(key, memoryview(blob), b"aad") == plaintext


def test_every_seal_uses_a_fresh_nonce() -> None:
    key = random_key()
    nonces = {seal(key, b"same", b"")[:NONCE_SIZE] for _ in range(1000)}
    assert len(nonces) == 1000


def test_wrong_key_fails() -> None:
    blob = seal(random_key(), b"secret", b"aad")
    with pytest.raises(IntegrityError):
        open_sealed(random_key(), blob, b"aad")


def test_wrong_aad_fails() -> None:
    key = random_key()
    blob = seal(key, b"secret", b"aad")
    with pytest.raises(IntegrityError):
        open_sealed(key, blob, b"aae")


@pytest.mark.parametrize("length", [0, 1, NONCE_SIZE, NONCE_SIZE + TAG_SIZE - 1])
def test_short_blob_fails(length: int) -> None:
    with pytest.raises(IntegrityError):
        open_sealed(random_key(), bytes(length), b"")


def test_open_with_wrong_size_key_is_integrity_error_but_seal_refuses_it() -> None:
    blob = seal(random_key(), b"x", b"")
    with pytest.raises(IntegrityError):
        open_sealed(b"k" * 16, blob, b"")
    with pytest.raises(ValueError):
        seal(b"k" * 16, b"x", b"")


def test_integrity_error_says_nothing_about_the_cause() -> None:
    key = random_key()
    blob = seal(key, b"secret", b"aad")
    messages = set()
    attempts: list[Callable[[], bytes]] = [
        lambda: open_sealed(random_key(), blob, b"aad"),
        lambda: open_sealed(key, blob, b"other"),
        lambda: open_sealed(key, blob[:5], b"aad"),
    ]
    for attempt in attempts:
        with pytest.raises(IntegrityError) as caught:
            attempt()
        messages.add(str(caught.value))
    assert messages == {"integrity check failed"}


def test_chunks_round_trip_in_order() -> None:
    key = random_key()
    chunks = [b"first", b"second", b"last"]
    sealed = [
        seal_chunk(key, index, index == len(chunks) - 1, chunk, b"upload-1")
        for index, chunk in enumerate(chunks)
    ]
    opened = [
        open_chunk(key, index, index == len(chunks) - 1, blob, b"upload-1")
        for index, blob in enumerate(sealed)
    ]
    assert opened == chunks


def test_swapped_chunk_indexes_fail() -> None:
    key = random_key()
    first = seal_chunk(key, 0, False, b"a")
    second = seal_chunk(key, 1, False, b"b")
    with pytest.raises(IntegrityError):
        open_chunk(key, 0, False, second)
    with pytest.raises(IntegrityError):
        open_chunk(key, 1, False, first)


def test_final_flag_is_bound_so_truncation_and_extension_fail() -> None:
    key = random_key()
    middle = seal_chunk(key, 3, False, b"more follows")
    last = seal_chunk(key, 3, True, b"the end")
    with pytest.raises(IntegrityError):
        open_chunk(key, 3, True, middle)  # a stream cut after a middle chunk
    with pytest.raises(IntegrityError):
        open_chunk(key, 3, False, last)  # data appended after the real end


def test_chunk_aad_is_bound() -> None:
    key = random_key()
    blob = seal_chunk(key, 0, True, b"data", b"upload-1")
    with pytest.raises(IntegrityError):
        open_chunk(key, 0, True, blob, b"upload-2")


def test_chunk_and_frame_are_not_interchangeable() -> None:
    key = random_key()
    frame = seal(key, b"data", b"")
    chunk = seal_chunk(key, 0, False, b"data")
    with pytest.raises(IntegrityError):
        open_chunk(key, 0, False, frame)
    with pytest.raises(IntegrityError):
        open_sealed(key, chunk, b"")


def test_chunk_index_range() -> None:
    key = random_key()
    top = 2**64 - 1
    assert open_chunk(key, top, True, seal_chunk(key, top, True, b"x")) == b"x"
    with pytest.raises(ValueError):
        seal_chunk(key, 2**64, True, b"x")
    with pytest.raises(IntegrityError):
        open_chunk(key, -1, True, seal_chunk(key, 0, True, b"x"))


def test_session_subkeys_are_directional_and_bound_to_the_session() -> None:
    session_key = random_key()
    keys = derive_session_keys(session_key, b"session-1")
    assert len(keys.client_to_server) == len(keys.server_to_client) == KEY_SIZE
    assert keys.client_to_server != keys.server_to_client
    assert session_key not in (keys.client_to_server, keys.server_to_client)
    assert derive_session_keys(session_key, b"session-1") == keys
    other = derive_session_keys(session_key, b"session-2")
    assert other.client_to_server != keys.client_to_server
    assert other.server_to_client != keys.server_to_client
    # A frame one side sealed does not open as if the other side had sent it.
    blob = seal(keys.client_to_server, b"to server", b"")
    with pytest.raises(IntegrityError):
        open_sealed(keys.server_to_client, blob, b"")


def test_session_keys_repr_hides_key_material() -> None:
    keys = derive_session_keys(random_key(), b"s")
    assert keys.client_to_server.hex() not in repr(keys)
    assert repr(keys.client_to_server) not in repr(keys)


def test_hkdf_rejects_impossible_lengths() -> None:
    with pytest.raises(ValueError):
        hkdf_sha256(b"k", b"", length=255 * 32 + 1)
    with pytest.raises(ValueError):
        hkdf_sha256(b"k", b"", length=0)
    assert len(hkdf_sha256(b"k", b"", length=255 * 32)) == 255 * 32


def test_sealing_into_a_buffer_has_the_same_layout_and_opens_both_ways() -> None:
    key = crypto.random_key()
    plaintext = bytes(range(256)) * 40
    out = bytearray(len(plaintext) + crypto.OVERHEAD + 7)  # room to spare is left alone
    written = crypto.seal_chunk_into(key, 3, False, memoryview(plaintext), out, b"tid")
    assert written == len(plaintext) + crypto.OVERHEAD and out[written:] == bytes(7)
    sealed = bytes(out[:written])
    assert crypto.open_chunk(key, 3, False, sealed, b"tid") == plaintext
    into = bytearray(len(plaintext))
    opened = crypto.open_chunk_into(key, 3, False, sealed, into, b"tid")
    assert opened.obj is into and bytes(opened) == plaintext
    classic = crypto.seal_chunk(key, 3, False, plaintext, b"tid")
    assert bytes(crypto.open_chunk_into(key, 3, False, classic, into, b"tid")) == plaintext
    assert out[: crypto.NONCE_SIZE] != classic[: crypto.NONCE_SIZE]  # fresh nonces


def test_opening_into_a_buffer_fails_like_open_chunk() -> None:
    key = crypto.random_key()
    sealed = bytearray(crypto.seal_chunk(key, 0, True, b"secret chunk", b"a"))
    out = bytearray(64)
    for index, final, aad in ((1, True, b"a"), (0, False, b"a"), (0, True, b"b"), (-1, True, b"a")):
        with pytest.raises(IntegrityError):
            crypto.open_chunk_into(key, index, final, sealed, out, aad)
    sealed[20] ^= 1
    with pytest.raises(IntegrityError):
        crypto.open_chunk_into(key, 0, True, sealed, out, b"a")
    with pytest.raises(IntegrityError):
        crypto.open_into(key, b"short", b"", out)


def test_buffers_too_small_are_a_caller_error() -> None:
    key = crypto.random_key()
    with pytest.raises(ValueError):
        crypto.seal_into(key, b"12345", b"", bytearray(5 + crypto.OVERHEAD - 1))
    sealed = crypto.seal(key, b"12345", b"")
    with pytest.raises(ValueError):
        crypto.open_into(key, sealed, b"", bytearray(4))
