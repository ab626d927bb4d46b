"""Symmetric crypto: AES-256-GCM frames, STREAM-style file chunks and HKDF subkeys.

What it guarantees:

* :func:`seal` returns ``nonce || ciphertext || tag`` with a fresh random 96-bit nonce on
  every call, so several processes may seal under one key without coordinating a counter.
  The associated data (the message envelope) is authenticated, not encrypted.
* :func:`open_sealed` and :func:`open_chunk` return the plaintext only if the key, nonce,
  ciphertext, tag and associated data are exactly those that were sealed; any failure,
  whatever its cause, is the one opaque :class:`~common.errors.IntegrityError`.
* :func:`seal_chunk` binds the chunk index (u64) and a final-chunk flag into the
  associated data, as age's STREAM construction does, so chunks cannot be reordered,
  dropped, duplicated into another position, or a stream truncated, without a failure
  on open (truncation shows as a missing final chunk).
* Chunk associated data starts with a domain label that no msgpack envelope can begin
  with, so a sealed frame can never be accepted as a chunk or the other way round.
* :func:`seal_chunk_into` and :func:`open_chunk_into` do the same as :func:`seal_chunk`
  and :func:`open_chunk` with the same byte layout, but write into a buffer the caller
  owns: no copy beyond the AES-GCM pass, for the file path where chunks are a megabyte
  each. ``open_chunk_into`` checks the tag before it decrypts: when it fails, ``out`` is
  left as it was.
* AES-GCM itself is :mod:`common.gcm`: pycryptodome's AES, CTR and GHASH code with each
  key's schedule and hash subkey made once, byte for byte pycryptodome's GCM.

Keys are 32 bytes; a key of another size is a caller bug and raises ``ValueError`` on
sealing. Limits and the reasoning behind random nonces are in docs/security.md.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from common import entropy, gcm
from common.errors import IntegrityError

__all__ = [
    "KEY_SIZE",
    "MAX_MESSAGES_PER_KEY",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "SessionKeys",
    "derive_session_keys",
    "hkdf_sha256",
    "open_chunk",
    "open_chunk_into",
    "open_into",
    "open_sealed",
    "random_key",
    "seal",
    "seal_chunk",
    "seal_chunk_into",
    "seal_into",
]

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
# Messages one key may seal. NIST SP 800-38D caps random 96-bit nonces at 2^32 per key;
# at 2^28 the chance that any two nonces collide is below 2^-41. Sessions must be
# rekeyed (a new session key) before a key reaches this count.
MAX_MESSAGES_PER_KEY = 2**28

# Chunk AAD = label || u64 index (big-endian) || u8 final flag || caller's AAD. The label
# starts with 0x00, a byte no msgpack map or array (an envelope) can start with.
_CHUNK_LABEL = b"\x00cipherdrop-chunk-v1\x00"
_CHUNK_HEADER = struct.Struct(">QB")
_MAX_INDEX = 2**64 - 1

_HKDF_MAX_LENGTH = 255 * 32
_INFO_CLIENT_TO_SERVER = b"cipherdrop v1 session client-to-server"
_INFO_SERVER_TO_CLIENT = b"cipherdrop v1 session server-to-client"

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """One AES-256 key per direction, derived from a session key (never printed)."""

    client_to_server: bytes = field(repr=False)
    server_to_client: bytes = field(repr=False)


def random_key() -> bytes:
    """A fresh AES-256 key from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256 key must be {KEY_SIZE} bytes, got {len(key)}")


def _seal_with_nonce(key: bytes, nonce: bytes, plaintext: Buffer, aad: Buffer) -> bytes:
    """Seal with a given nonce. Only for known-answer tests: reusing a nonce is fatal."""
    out = bytearray(len(memoryview(plaintext).cast("B")) + OVERHEAD)
    _seal_into_with_nonce(key, nonce, plaintext, aad, out)
    return bytes(out)


def seal(key: bytes, plaintext: Buffer, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``, authenticate ``aad``; fresh random nonce."""
    return _seal_with_nonce(key, entropy.token_bytes(NONCE_SIZE), plaintext, aad)


def open_sealed(key: bytes, blob: Buffer, aad: bytes) -> bytes:
    """Check and decrypt a :func:`seal` blob; :class:`IntegrityError` on any failure."""
    size = len(memoryview(blob).cast("B")) - OVERHEAD
    out = bytearray(max(size, 0))
    open_into(key, blob, aad, out)
    return bytes(out)


def seal_into(key: bytes, plaintext: Buffer, aad: bytes, out: Buffer) -> int:
    """:func:`seal` into ``out`` (at least ``len(plaintext) + OVERHEAD`` bytes, writable);
    the number of bytes written. Same layout, fresh random nonce, one pass, no copy."""
    return _seal_into_with_nonce(key, entropy.token_bytes(NONCE_SIZE), plaintext, aad, out)


def _seal_into_with_nonce(
    key: bytes, nonce: bytes, plaintext: Buffer, aad: Buffer, out: Buffer
) -> int:
    _check_key(key)
    size = len(memoryview(plaintext).cast("B"))
    view = memoryview(out).cast("B")
    if len(view) < size + OVERHEAD:
        raise ValueError(f"output buffer of {len(view)} bytes, need {size + OVERHEAD}")
    view[:NONCE_SIZE] = nonce
    gcm.seal_into(key, nonce, aad, plaintext, view[NONCE_SIZE : size + OVERHEAD])
    return size + OVERHEAD


def open_into(key: bytes, blob: Buffer, aad: bytes, out: Buffer) -> memoryview:
    """:func:`open_sealed` into ``out``; the plaintext, a view of ``out``. On failure the
    one :class:`IntegrityError`, and ``out`` is left as it was."""
    view = memoryview(blob).cast("B")
    target = memoryview(out).cast("B")
    size = len(view) - OVERHEAD
    if len(key) != KEY_SIZE or size < 0:
        raise IntegrityError()
    if len(target) < size:
        raise ValueError(f"output buffer of {len(target)} bytes, need {size}")
    plain = target[:size]
    if not gcm.open_into(key, bytes(view[:NONCE_SIZE]), aad, view[NONCE_SIZE:], plain):
        raise IntegrityError()
    return plain


def _chunk_aad(index: int, final: bool, aad: bytes) -> bytes:
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"chunk index must fit in 64 bits, got {index}")
    return _CHUNK_LABEL + _CHUNK_HEADER.pack(index, 1 if final else 0) + aad


def seal_chunk(key: bytes, index: int, final: bool, plaintext: Buffer, aad: bytes = b"") -> bytes:
    """Seal chunk number ``index`` of a stream; ``final`` marks the last chunk."""
    return seal(key, plaintext, _chunk_aad(index, final, aad))


def open_chunk(key: bytes, index: int, final: bool, blob: Buffer, aad: bytes = b"") -> bytes:
    """Open a chunk expected at ``index`` with the expected ``final`` flag."""
    if not 0 <= index <= _MAX_INDEX:
        raise IntegrityError()
    return open_sealed(key, blob, _chunk_aad(index, final, aad))


def seal_chunk_into(
    key: bytes, index: int, final: bool, plaintext: Buffer, out: Buffer, aad: bytes = b""
) -> int:
    """:func:`seal_chunk` into ``out``; the number of bytes written (plaintext + OVERHEAD)."""
    return seal_into(key, plaintext, _chunk_aad(index, final, aad), out)


def open_chunk_into(
    key: bytes, index: int, final: bool, blob: Buffer, out: Buffer, aad: bytes = b""
) -> memoryview:
    """:func:`open_chunk` into ``out``; the plaintext as a view of ``out``."""
    if not 0 <= index <= _MAX_INDEX:
        raise IntegrityError()
    return open_into(key, blob, _chunk_aad(index, final, aad), out)


def hkdf_sha256(key: bytes, info: bytes, salt: bytes = b"", length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869); an empty salt means HashLen zero bytes, as the RFC says."""
    if not 1 <= length <= _HKDF_MAX_LENGTH:
        raise ValueError(f"HKDF-SHA256 output length must be 1..{_HKDF_MAX_LENGTH}")
    if not key:
        raise ValueError("HKDF input key material must not be empty")
    return HKDF(key, length, salt or None, SHA256, context=info)


def derive_session_keys(session_key: bytes, session_id: bytes) -> SessionKeys:
    """Directional subkeys, so a frame reflected back at its sender never opens.

    The session id is the HKDF salt: the same session key under another session id gives
    unrelated subkeys.
    """
    _check_key(session_key)
    return SessionKeys(
        client_to_server=hkdf_sha256(session_key, _INFO_CLIENT_TO_SERVER, session_id),
        server_to_client=hkdf_sha256(session_key, _INFO_SERVER_TO_CLIENT, session_id),
    )
