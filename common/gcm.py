"""AES-GCM (NIST SP 800-38D) built from pycryptodome's own AES, CTR and GHASH code.

pycryptodome's ``AES.new(key, AES.MODE_GCM, nonce=...)`` expands the key three times,
derives the hash subkey H and expands its GHASH table on every call, through several
layers of Python: about 75 us before the first byte, 110 us more per small message than
this module on this machine, and 90 us per MiB. Every request and reply is one GCM
message, so that was a measurable share of a transfer's CPU. Here the key schedule used
for single blocks and the expanded H are made once per key (:func:`_state`, a small
bounded cache) and each message costs one CTR pass, one GHASH pass and one block
encryption, all in pycryptodome's compiled code.

Two paths, same output. A message of more than :data:`SMALL` bytes (a chunk) runs CTR and
GHASH over its bulk with the GIL released, so other threads work meanwhile; its short
calls (CTR start and stop, the AAD, the tail and lengths, the tag mask) keep it. A small one
(every request and reply) takes four short calls that keep the GIL (:mod:`common.ffi`):
the keystream and ``E(K, J0)`` from one block-cipher call over the counter blocks, one
GHASH call over the padded whole, and two XORs. Each release of the GIL costs a wait to
get it back when other threads are busy, and a transfer always has some: a 40-byte seal
takes 13-19 instead of 61 us alone, 10-17 instead of 99 us beside a busy thread.

The construction is the standard one, for 96-bit nonces and 128-bit tags only:
``J0 = nonce || 0^31 || 1``; the ciphertext is AES-CTR from ``inc32(J0)``; the tag is
``E(K, J0) xor GHASH_H(A || pad || C || pad || len(A) || len(C))``. Output is byte for
byte pycryptodome's, which ``tests/unit/test_gcm.py`` checks on random inputs of every
size class, beside NIST/McGrew-Viega vectors. :func:`open_into` checks the tag (in
constant time) *before* decrypting, so ``out`` is left untouched when it fails.

Thread safety: the per-key state is read-only once made; every large message gets its own
CTR state. The cache holds expanded keys, never more than :data:`CACHE_SIZE` of them.
"""

from __future__ import annotations

import ctypes
import hmac
import struct
import threading
from collections.abc import Sized
from typing import Any

from Crypto.Cipher import AES
from Crypto.Cipher import _mode_gcm as _gcm
from Crypto.Cipher._mode_ctr import raw_ctr_lib
from Crypto.Cipher._mode_ecb import raw_ecb_lib
from Crypto.Util import strxor as _strxor_module
from Crypto.Util._raw_api import (
    SmartPointer,
    VoidPointer,
    c_size_t,
    c_uint8_ptr,
    create_string_buffer,
)

from common.ffi import holding_gil

__all__ = ["CACHE_SIZE", "MAX_MESSAGE", "NONCE_SIZE", "TAG_SIZE", "open_into", "seal_into"]

NONCE_SIZE = 12
TAG_SIZE = 16
BLOCK = 16
# SP 800-38D: at most 2^32 - 2 blocks of plaintext under one J0.
MAX_MESSAGE = (2**32 - 2) * BLOCK
# Keys whose expanded state is kept: sessions and transfers in use at once, with room.
CACHE_SIZE = 64

_GHASH: Any = _gcm._ghash_clmul or _gcm._ghash_portable
_LENGTHS = struct.Struct(">QQ")
_ZERO_BLOCK = bytes(BLOCK)
_FIRST_COUNTER = b"\x00\x00\x00\x01"  # J0's counter
_DATA_COUNTER = b"\x00\x00\x00\x02"  # inc32(J0): the first keystream block for data
# Messages up to this size (requests, replies, listings) take the short path
# (seal_small, open_small); above it the CTR and GHASH passes run with the GIL released.
SMALL = 1024
# The counter blocks' last four bytes for J0 and a small message: 1, 2, 3, ...
_COUNTERS = [n.to_bytes(4, "big") for n in range(1, SMALL // BLOCK + 2)]


_int, _ptr, _bytes, _size = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
_ecb_encrypt = holding_gil(raw_ecb_lib.ECB_encrypt, _int, _ptr, _bytes, _bytes, _size)
_ghash_small = holding_gil(_GHASH.ghash, _int, _bytes, _bytes, _size, _bytes, _ptr)
_ctr_start = holding_gil(
    raw_ctr_lib.CTR_start_operation,
    _int,
    _ptr,
    _bytes,
    _size,
    _size,
    ctypes.c_uint,
    ctypes.c_uint,
    _ptr,
)
_ctr_stop = holding_gil(raw_ctr_lib.CTR_stop_operation, _int, _ptr)
_strxor = holding_gil(_strxor_module._raw_strxor.strxor, None, _bytes, _bytes, _bytes, _size)


class _KeyState:
    """One key's block cipher (for single blocks) and expanded GHASH subkey."""

    __slots__ = ("_ecb", "_ghash_key", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        ecb = VoidPointer()
        base = self._aes()
        _check(raw_ecb_lib.ECB_start_operation(base.get(), ecb.address_of()), "ECB start")
        base.release()  # now owned by the ECB state
        self._ecb = SmartPointer(ecb.get(), raw_ecb_lib.ECB_stop_operation)
        expanded = VoidPointer()
        hash_subkey = self.blocks(_ZERO_BLOCK)
        _check(_GHASH.ghash_expand(c_uint8_ptr(hash_subkey), expanded.address_of()), "GHASH")
        self._ghash_key = SmartPointer(expanded.get(), _GHASH.ghash_destroy)

    def _aes(self) -> Any:
        return AES._create_base_cipher({"key": self._key})  # type: ignore[no-untyped-call]

    def blocks(self, data: bytes) -> bytes:
        """E(K, block) for each 16-byte block of ``data``."""
        out = create_string_buffer(len(data))
        _check(_ecb_encrypt(self._ecb.get(), data, out, len(data)), "AES")
        encrypted: bytes = out.raw
        return encrypted

    def ctr(self, nonce: bytes, source: memoryview, target: memoryview) -> None:
        """``target = source xor keystream`` from counter block ``inc32(J0)``."""
        state = VoidPointer()
        base = self._aes()
        _check(
            _ctr_start(
                base.get(),
                nonce + _DATA_COUNTER,
                BLOCK,
                NONCE_SIZE,
                BLOCK - NONCE_SIZE,
                0,  # big-endian counter
                state.address_of(),
            ),
            "CTR start",
        )
        base.release()  # now owned by the CTR state, freed with it
        try:
            _check(
                raw_ctr_lib.CTR_encrypt(
                    state.get(), c_uint8_ptr(source), c_uint8_ptr(target), c_size_t(len(source))
                ),
                "CTR",
            )
        finally:
            _ctr_stop(state.get())

    def tag(self, nonce: bytes, aad: bytes, ciphertext: memoryview) -> bytes:
        """The 16-byte tag of ``ciphertext`` and ``aad`` under ``nonce``."""
        digest = create_string_buffer(BLOCK)
        table = self._ghash_key.get()
        head = _padded(aad)
        _check(_ghash_small(digest, head, len(head), _ZERO_BLOCK, table), "GHASH")
        whole = len(ciphertext) - len(ciphertext) % BLOCK
        if whole:  # the bulk, with the GIL released
            _check(
                _GHASH.ghash(digest, c_uint8_ptr(ciphertext), c_size_t(whole), digest, table),
                "GHASH",
            )
        tail = _padded(bytes(ciphertext[whole:])) + _lengths(aad, ciphertext)
        _check(_ghash_small(digest, tail, len(tail), digest, table), "GHASH")
        return _xor(digest.raw, self.blocks(nonce + _FIRST_COUNTER))

    def seal_small(self, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
        """``ciphertext || tag`` of a message of at most :data:`SMALL` bytes.

        One block-cipher call makes ``E(K, J0)`` and the keystream, one GHASH call hashes
        everything, and two XORs: four short foreign calls, all holding the GIL, instead of
        seven that each give it up.
        """
        stream = self._small_stream(nonce, len(plaintext))
        ciphertext = _xor(plaintext, stream[BLOCK : BLOCK + len(plaintext)])
        return ciphertext + self._small_tag(stream, aad, ciphertext)

    def open_small(self, nonce: bytes, aad: bytes, sealed: bytes) -> bytes | None:
        """The plaintext of a small ``ciphertext || tag``, or None if the tag is wrong."""
        size = len(sealed) - TAG_SIZE
        ciphertext = sealed[:size]
        stream = self._small_stream(nonce, size)
        if not hmac.compare_digest(self._small_tag(stream, aad, ciphertext), sealed[size:]):
            return None
        return _xor(ciphertext, stream[BLOCK : BLOCK + size])

    def _small_stream(self, nonce: bytes, size: int) -> bytes:
        """``E(K, J0)`` followed by the keystream for ``size`` bytes."""
        count = -(-size // BLOCK) + 1
        return self.blocks(b"".join(map(nonce.__add__, _COUNTERS[:count])))

    def _small_tag(self, stream: bytes, aad: bytes, ciphertext: bytes) -> bytes:
        data = _padded(aad) + _padded(ciphertext) + _lengths(aad, ciphertext)
        digest = create_string_buffer(BLOCK)
        _check(_ghash_small(digest, data, len(data), _ZERO_BLOCK, self._ghash_key.get()), "GHASH")
        return _xor(digest.raw, stream[:BLOCK])


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _lengths(aad: Sized, ciphertext: Sized) -> bytes:
    return _LENGTHS.pack(8 * len(aad), 8 * len(ciphertext))


def _xor(data: bytes, stream: bytes) -> bytes:
    """``data`` xor the first ``len(data)`` bytes of ``stream``, in compiled code (constant
    time, no Python integers built from secrets)."""
    out = create_string_buffer(len(data))
    _strxor(data, stream, out, len(data))
    result: bytes = out.raw
    return result


_states: dict[bytes, _KeyState] = {}
_lock = threading.Lock()


def _state(key: bytes) -> _KeyState:
    key = bytes(key)
    state = _states.get(key)
    if state is None:
        state = _KeyState(key)
        with _lock:
            if len(_states) >= CACHE_SIZE:
                del _states[next(iter(_states))]  # the oldest
            _states[key] = state
    return state


def _check(result: int, what: str) -> None:
    if result:
        raise ValueError(f"error {result:#x} in {what}")


def _bytes_view(data: Any) -> memoryview:
    return memoryview(data).cast("B")


def seal_into(key: bytes, nonce: bytes, aad: Any, plaintext: Any, out: Any) -> None:
    """Write ``ciphertext || tag`` (``len(plaintext) + TAG_SIZE`` bytes) to ``out``."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
    source, target = _bytes_view(plaintext), _bytes_view(out)
    size = len(source)
    if size > MAX_MESSAGE:
        raise ValueError("message too long for one GCM nonce")
    if len(target) != size + TAG_SIZE:
        raise ValueError(f"output must be {size + TAG_SIZE} bytes, is {len(target)}")
    state = _state(key)
    if size <= SMALL:
        target[:] = state.seal_small(nonce, bytes(aad), bytes(source))
        return
    ciphertext = target[:size]
    state.ctr(nonce, source, ciphertext)
    target[size:] = state.tag(nonce, bytes(aad), ciphertext)


def open_into(key: bytes, nonce: bytes, aad: Any, sealed: Any, out: Any) -> bool:
    """Check ``sealed`` (``ciphertext || tag``); if genuine, write the plaintext to ``out``
    (``len(sealed) - TAG_SIZE`` bytes) and return True. False, ``out`` untouched, if not."""
    blob, target = _bytes_view(sealed), _bytes_view(out)
    size = len(blob) - TAG_SIZE
    if len(nonce) != NONCE_SIZE or size < 0 or size > MAX_MESSAGE:
        return False
    if len(target) != size:
        raise ValueError(f"output must be {size} bytes, is {len(target)}")
    state = _state(key)
    if size <= SMALL:
        plaintext = state.open_small(nonce, bytes(aad), bytes(blob))
        if plaintext is None:
            return False
        target[:] = plaintext
        return True
    ciphertext = blob[:size]
    if not hmac.compare_digest(state.tag(nonce, bytes(aad), ciphertext), blob[size:]):
        return False
    state.ctr(nonce, ciphertext, target)
    return True
