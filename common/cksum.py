"""The POSIX ``cksum`` CRC, streaming and at C speed.

What it guarantees: :func:`cksum` and :meth:`Cksum.digest` return exactly the first number
the ``cksum`` command prints for the same bytes (POSIX.1-2017, the ``cksum`` utility). It
is a transfer check against accidents, not a cryptographic one: anyone can forge it, which
is why every chunk is also authenticated by AES-GCM.

The POSIX CRC is the catalogued CRC-32/CKSUM (polynomial 0x04C11DB7, not reflected,
register starting at 0, final ones' complement) over the message followed by its length,
least significant byte first and in as few bytes as needed. ``fastcrc`` computes
CRC-32/CKSUM in compiled code without the GIL, at several GB/s here (``zlib.crc32`` is the
reflected variant and would need every byte bit-reversed first, which cost ten times as
much: see docs/performance.md). Its ``initial`` argument continues from an earlier
checksum, so the stream is fed piece by piece and the length trailer goes last.

:class:`CksumSha256` also takes the SHA-256 of the same bytes, for transfers that record
one (``put --sha256``): more CPU on each end, which is why it is not the default.
"""

from __future__ import annotations

import hashlib

import fastcrc

__all__ = ["Cksum", "CksumSha256", "cksum", "crc32_cksum"]

crc32_cksum = fastcrc.crc32.cksum

# The checksum of nothing: continuing from it is starting afresh (register 0).
_INITIAL = 0xFFFFFFFF


def _length_bytes(length: int) -> bytes:
    """The length as POSIX feeds it: least significant byte first, no leading zero bytes."""
    return length.to_bytes((length.bit_length() + 7) // 8, "little")


class Cksum:
    """Streaming POSIX cksum: feed pieces of any size with :meth:`update`."""

    __slots__ = ("_length", "_value")

    def __init__(self) -> None:
        self._value = _INITIAL
        self._length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` to the message; pieces may be of any size, including empty."""
        view = memoryview(data).cast("B")
        self._value = crc32_cksum(view, initial=self._value)
        self._length += len(view)

    @property
    def length(self) -> int:
        """Number of bytes fed so far (the second number ``cksum`` prints)."""
        return self._length

    def digest(self) -> int:
        """The CRC ``cksum`` prints for everything fed so far; updating may continue."""
        return int(crc32_cksum(_length_bytes(self._length), initial=self._value))

    def sha256(self) -> bytes | None:
        """The SHA-256 of everything fed so far: None here (see :class:`CksumSha256`)."""
        return None


class CksumSha256(Cksum):
    """:class:`Cksum`, and the SHA-256 of the same bytes (hashlib lets go of the GIL
    while it hashes a large piece)."""

    __slots__ = ("_sha",)

    def __init__(self) -> None:
        super().__init__()
        self._sha = hashlib.sha256()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        super().update(data)
        self._sha.update(data)

    def sha256(self) -> bytes:
        return self._sha.digest()


def cksum(data: bytes | bytearray | memoryview) -> int:
    """One-shot POSIX cksum of ``data``."""
    state = Cksum()
    state.update(data)
    return state.digest()
