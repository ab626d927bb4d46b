"""The whole-file POSIX ``cksum`` CRC from per-chunk parts computed in any order.

Chunks of an upload arrive in any order and at different worker processes, so no one
can feed them to a streaming :class:`common.cksum.Cksum`. Instead each chunk gets its
*part* (:func:`chunk_part`) when it is stored, and :func:`combine` joins the parts in
index order at commit, without reading the contents again.

Guarantee: ``combine([(chunk_part(c), len(c)) for c in chunks]) == cksum(b"".join(chunks))``
for every split of the data, including empty chunks (tests check it against
:func:`common.cksum.cksum` and the ``cksum`` command).

How. A part is the chunk's CRC-32/CKSUM register in zlib's reflected form (the bits in
the opposite order, as ``zlib.crc32`` over bit-reversed bytes would give; stored parts
keep that form), and zlib's ``crc32_combine`` rule joins two values:
``crc(A || B) = shift(crc(A), len(B)) ^ crc(B)``,
where ``shift`` by n bytes is a linear map over GF(2), a 32x32 bit matrix. The matrix for
n bytes is built by repeated squaring (zlib's method) and cached per length, so with a
fixed chunk size each combine is one 32-step matrix-vector product.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from common.cksum import crc32_cksum

__all__ = ["chunk_part", "combine"]

_REFLECTED_POLY = 0xEDB88320
# zlib's view of a POSIX register that starts at 0.
_POSIX_INITIAL = 0xFFFFFFFF

Matrix = tuple[int, ...]  # 32 columns; column k is the image of bit k


def _reverse32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def chunk_part(data: bytes | bytearray | memoryview) -> int:
    """The CRC part of one chunk: its CRC-32/CKSUM register started at all ones, reflected.

    Equal to ``zlib.crc32`` of the chunk's bit-reversed bytes, computed without reversing
    them: continuing a CRC-32/CKSUM from checksum 0 starts the register at all ones.
    """
    return _reverse32(crc32_cksum(memoryview(data).cast("B"), initial=0))


def _times(matrix: Matrix, vector: int) -> int:
    result = 0
    k = 0
    while vector:
        if vector & 1:
            result ^= matrix[k]
        vector >>= 1
        k += 1
    return result


def _square(matrix: Matrix) -> Matrix:
    return tuple(_times(matrix, column) for column in matrix)


def _multiply(a: Matrix, b: Matrix) -> Matrix:
    """The matrix of applying ``b`` and then ``a``."""
    return tuple(_times(a, column) for column in b)


_IDENTITY: Matrix = tuple(1 << k for k in range(32))
# One zero *bit* through the reflected register: shift right, feed back the polynomial.
_ONE_BIT: Matrix = (_REFLECTED_POLY, *(1 << k for k in range(31)))
_ONE_BYTE: Matrix = functools.reduce(_multiply, [_ONE_BIT] * 8)


@functools.lru_cache(maxsize=64)
def _shift_operator(length: int) -> Matrix:
    """The matrix that appends ``length`` zero bytes to a CRC (square and multiply)."""
    result = _IDENTITY
    power = _ONE_BYTE
    while length:
        if length & 1:
            result = _multiply(power, result)
        length >>= 1
        if length:
            power = _square(power)
    return result


def _join(value: int, part: int, length: int) -> int:
    return _times(_shift_operator(length), value) ^ part


def combine(parts: Iterable[tuple[int, int]]) -> int:
    """The POSIX cksum of the chunks whose ``(part, length)`` are given in order."""
    value = _POSIX_INITIAL
    total = 0
    for part, length in parts:
        if length < 0 or not 0 <= part <= 0xFFFFFFFF:
            raise ValueError("a CRC part is 32 bits and a length is not negative")
        value = _join(value, part, length)
        total += length
    # Back to the non-reflected form, which is a CRC-32/CKSUM checksum to continue from;
    # then the length trailer, least significant byte first, as common.cksum feeds it.
    trailer = total.to_bytes((total.bit_length() + 7) // 8, "little")
    return int(crc32_cksum(trailer, initial=_reverse32(value)))
