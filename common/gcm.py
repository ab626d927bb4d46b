"""AES-GCM (NIST SP 800-38D) built from pycryptodome's own AES, CTR and GHASH code.

pycryptodome's ``AES.new(key, AES.MODE_GCM, nonce=...)`` expands the key three times,
derives the hash subkey H and expands its GHASH table on every call, through several
layers of Python: about 75 us before the first byte, 110 us more per small message than
this module on this machine, and 90 us per MiB. Every request and reply is one GCM
message, so that was a measurable share of a transfer's CPU. Here the key schedule used
for single blocks and the expanded H are made once per key (:func:`_state`, a small
bounded cache) and each message costs one CTR pass, one GHASH pass and one block
encryption, all in pycryptodome's compiled code.

The construction is the standard one, for 96-bit nonces and 128-bit tags only:
``J0 = nonce || 0^31 || 1``; the ciphertext is AES-CTR from ``inc32(J0)``; the tag is
``E(K, J0) xor GHASH_H(A || pad || C || pad || len(A) || len(C))``. Output is byte for
byte pycryptodome's, which ``tests/unit/test_gcm.py`` checks on random inputs of every
size class, beside NIST/McGrew-Viega vectors. :func:`open_into` checks the tag (in
constant time) *before* decrypting, so ``out`` is left untouched when it fails.

Thread safety: the per-key state is read-only once made; every message gets its own
CTR state. The cache holds expanded keys, never more than :data:`CACHE_SIZE` of them.
"""

from __future__ import annotations

import hmac
import struct
import threading
from typing import Any

from Crypto.Cipher import AES
from Crypto.Cipher import _mode_gcm as _gcm
from Crypto.Cipher._mode_ctr import raw_ctr_lib
from Crypto.Cipher._mode_ecb import raw_ecb_lib
from Crypto.Util._raw_api import (
    SmartPointer,
    VoidPointer,
    c_size_t,
    c_uint8_ptr,
    create_string_buffer,
    get_raw_buffer,
)

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
        hash_subkey = self.block(_ZERO_BLOCK)
        _check(_GHASH.ghash_expand(c_uint8_ptr(hash_subkey), expanded.address_of()), "GHASH")
        self._ghash_key = SmartPointer(expanded.get(), _GHASH.ghash_destroy)

    def _aes(self) -> Any:
        return AES._create_base_cipher({"key": self._key})  # type: ignore[no-untyped-call]

    def block(self, data: bytes) -> bytes:
        """E(K, data) for one 16-byte block."""
        out = create_string_buffer(BLOCK)
        _check(
            raw_ecb_lib.ECB_encrypt(self._ecb.get(), c_uint8_ptr(data), out, c_size_t(BLOCK)),
            "AES",
        )
        return bytes(get_raw_buffer(out))

    def ctr(self, nonce: bytes, source: memoryview, target: memoryview) -> None:
        """``target = source xor keystream`` from counter block ``inc32(J0)``."""
        state = VoidPointer()
        base = self._aes()
        _check(
            raw_ctr_lib.CTR_start_operation(
                base.get(),
                c_uint8_ptr(nonce + _DATA_COUNTER),
                c_size_t(BLOCK),
                c_size_t(NONCE_SIZE),
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
            raw_ctr_lib.CTR_stop_operation(state.get())

    def tag(self, nonce: bytes, aad: memoryview, ciphertext: memoryview) -> bytes:
        """The 16-byte tag of ``ciphertext`` and ``aad`` under ``nonce``."""
        digest = create_string_buffer(BLOCK)
        table = self._ghash_key.get()
        _absorb(digest, table, aad)
        _absorb(digest, table, ciphertext)
        _absorb(digest, table, _LENGTHS.pack(8 * len(aad), 8 * len(ciphertext)))
        mask = self.block(nonce + _FIRST_COUNTER)
        value = int.from_bytes(get_raw_buffer(digest), "big") ^ int.from_bytes(mask, "big")
        return value.to_bytes(BLOCK, "big")


def _absorb(digest: Any, table: Any, data: memoryview | bytes) -> None:
    """Feed ``data`` into the running GHASH ``digest``, its last partial block zero-padded."""
    whole = len(data) - len(data) % BLOCK
    if whole:
        _check(_GHASH.ghash(digest, c_uint8_ptr(data), c_size_t(whole), digest, table), "GHASH")
    if whole < len(data):
        tail = bytes(data[whole:]).ljust(BLOCK, b"\x00")
        _check(_GHASH.ghash(digest, tail, c_size_t(BLOCK), digest, table), "GHASH")


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
    ciphertext = target[:size]
    state.ctr(nonce, source, ciphertext)
    target[size:] = state.tag(nonce, _bytes_view(aad), ciphertext)


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
    ciphertext = blob[:size]
    if not hmac.compare_digest(state.tag(nonce, _bytes_view(aad), ciphertext), blob[size:]):
        return False
    state.ctr(nonce, ciphertext, target)
    return True
