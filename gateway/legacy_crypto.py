"""The legacy protocol's crypto, kept here and nowhere else: RSA-OAEP-SHA1, AES-CBC.

This is weak by design (docs/legacy.md says why it is still served, and how it is
contained); it is never used between the gateway and our own services.

Guarantees:

* Legacy clients' RSA-1024 keys are parsed by :func:`common.keys.load_legacy_public_key`
  (shared with the server's legacy key exchange, so both apply one rule).
* :func:`wrap_legacy_key` encrypts the per-connection AES key with RSA-OAEP (SHA-1,
  MGF1-SHA1), as the legacy clients expect.
* :class:`CbcStream` decrypts AES-CBC with the all-zero IV incrementally, in whole blocks,
  so a file is never held whole. :func:`plaintext_size` finds the plaintext length from the
  last two ciphertext blocks and checks the PKCS#7 padding; every failure -- bad padding,
  a length that is not a positive multiple of 16 -- is the one :class:`IntegrityError`, so
  the answer never tells which (no padding oracle; the connection is then closed).
"""

from __future__ import annotations

import hmac

from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.Hash import SHA1
from Crypto.PublicKey.RSA import RsaKey

from common.errors import IntegrityError

__all__ = [
    "BLOCK",
    "CbcStream",
    "padded_size",
    "plaintext_size",
    "wrap_legacy_key",
]

BLOCK = 16
_ZERO_IV = bytes(BLOCK)


def wrap_legacy_key(public_key: RsaKey, aes_key: bytes) -> bytes:
    """RSA-OAEP with SHA-1 (the legacy clients' choice) of the AES key."""
    return PKCS1_OAEP.new(public_key, hashAlgo=SHA1).encrypt(aes_key)


def padded_size(original_size: int) -> int:
    """The ciphertext size of ``original_size`` bytes under PKCS#7 (always 1..16 added)."""
    return (original_size // BLOCK + 1) * BLOCK


def plaintext_size(key: bytes, last_two_blocks: bytes, ciphertext_size: int) -> int:
    """The unpadded length, from the last block and the one before it (or the zero IV).

    ``last_two_blocks`` is the last ``min(32, ciphertext_size)`` ciphertext bytes.
    """
    if ciphertext_size < BLOCK or ciphertext_size % BLOCK:
        raise IntegrityError()
    if len(last_two_blocks) != min(2 * BLOCK, ciphertext_size):
        raise IntegrityError()
    previous = last_two_blocks[:-BLOCK] or _ZERO_IV
    last = AES.new(key, AES.MODE_CBC, iv=previous).decrypt(last_two_blocks[-BLOCK:])
    pad = last[-1]
    count = max(1, min(pad, BLOCK))
    # One answer for every failure; the caller closes the connection after it anyway, so
    # each key ever sees at most one padding check.
    good = 1 <= pad <= BLOCK and hmac.compare_digest(last[BLOCK - count :], bytes([pad]) * count)
    if not good:
        raise IntegrityError()
    return ciphertext_size - pad


class CbcStream:
    """AES-CBC decryption with the zero IV, fed whole blocks in order."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes) -> None:
        self._cipher = AES.new(key, AES.MODE_CBC, iv=_ZERO_IV)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        if len(data) % BLOCK:
            raise IntegrityError()
        return self._cipher.decrypt(data)
