"""Per-chunk compression before encryption, with a cheap skip and bounded decompression.

What it guarantees:

* :func:`compress_chunk` returns ``(Codec.NONE, data)`` -- the very same object, no copy --
  when compressing would not pay: when a small sample of the chunk compresses poorly (so
  random or already-compressed data costs a few percent of the AES-GCM time, not the
  ten times that deflate on the whole chunk would), or when the real result is not smaller.
  Otherwise it returns ``(Codec.ZLIB, zlib stream)``.
* :func:`decompress_chunk` never produces more than ``max_size`` bytes: a decompression
  bomb is stopped after ``max_size + 1`` bytes of output, not expanded. Anything that is
  not exactly one complete stream of the named codec (unknown codec, corrupt or truncated
  data, trailing bytes, too large) is :class:`~common.errors.RemoteProtocolError`. For
  ``Codec.NONE`` it returns ``data`` itself, no copy, as :func:`compress_chunk` does: a
  view stays a view of the caller's buffer.

Codec ids travel in the message envelope; ``Codec.ZLIB`` is a zlib (RFC 1950) stream. It
is made and read with ISA-L (``isal``), whose deflate writes the same format at about
three times the speed of zlib's level 1 with the same ratio here, and inflates twice as
fast (figures in docs/performance.md); any zlib reads what it writes.
Compression before encryption leaks how compressible a chunk is through its length: see
"Compression and the length leak" in docs/security.md.
"""

from __future__ import annotations

from isal import isal_zlib

from common.enums import Codec
from common.errors import RemoteProtocolError

__all__ = ["LEVELS", "Codec", "compress_chunk", "decompress_chunk"]

# isal's stubs declare its error as an instance; at run time it is the exception class.
_IsalError: type[Exception] = isal_zlib.error  # type: ignore[assignment]

# ISA-L's compression levels: 0 is fastest, 3 smallest.
LEVELS = range(isal_zlib.ISAL_BEST_SPEED, isal_zlib.ISAL_BEST_COMPRESSION + 1)

Buffer = bytes | bytearray | memoryview

# The probe compresses three samples taken from the start, middle and end of the chunk in
# one call. Measured here: 6 KiB of samples cost about 0.03 ms, a fiftieth of sealing a
# 1 MiB chunk with AES-GCM.
_SAMPLE = 2 * 1024
_SAMPLES = 3
# Below this size the chunk is its own sample: compressing it outright is as cheap.
_PROBE_MIN = 4 * _SAMPLES * _SAMPLE
# Compress only if the sample shrinks to at most 90%: saving less is not worth ~3 ms/MB of
# deflate on the sending CPU, and random data (ratio just above 1.0) is far from this line.
_MAX_SAMPLE_RATIO = 0.9


def _probe(view: memoryview) -> bool:
    """True if samples of ``view`` compress well enough to compress the whole chunk."""
    size = len(view)
    starts = (0, (size - _SAMPLE) // 2, size - _SAMPLE)
    sample = b"".join(view[start : start + _SAMPLE] for start in starts)
    return len(isal_zlib.compress(sample, 1)) <= _MAX_SAMPLE_RATIO * len(sample)


def compress_chunk(data: Buffer, codec: Codec = Codec.ZLIB, level: int = 1) -> tuple[Codec, Buffer]:
    """Compress ``data`` with ``codec`` if it pays; otherwise return it untouched."""
    codec = Codec(codec)  # a plain int from settings is fine; an unknown one is ValueError
    if codec is Codec.NONE:
        return Codec.NONE, data
    if level not in LEVELS:
        raise ValueError(f"compression level must be {LEVELS[0]}..{LEVELS[-1]}, got {level}")
    view = memoryview(data).cast("B")
    if len(view) >= _PROBE_MIN and not _probe(view):
        return Codec.NONE, data
    compressed = isal_zlib.compress(view, level)
    if len(compressed) >= len(view):
        return Codec.NONE, data
    return Codec.ZLIB, compressed


def _inflate(data: Buffer, max_size: int) -> bytes:
    inflater = isal_zlib.decompressobj()
    try:
        # max_length caps the output: a bomb stops at max_size + 1 bytes.
        output = inflater.decompress(data, max_size + 1)
    except _IsalError as exc:
        raise RemoteProtocolError("compressed chunk is corrupt") from exc
    if len(output) > max_size:
        raise RemoteProtocolError(f"compressed chunk expands beyond {max_size} bytes")
    if not inflater.eof:
        raise RemoteProtocolError("compressed chunk is truncated")
    if inflater.unused_data:
        raise RemoteProtocolError("compressed chunk has trailing bytes")
    return output


def decompress_chunk(codec: Codec | int, data: Buffer, max_size: int) -> Buffer:
    """The original chunk; at most ``max_size`` bytes, else RemoteProtocolError."""
    if max_size < 0:
        raise ValueError("max_size must not be negative")
    try:
        known = Codec(codec)
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown compression codec {codec!r}") from exc
    if known is Codec.ZLIB:
        return _inflate(data, max_size)
    if len(data) > max_size:
        raise RemoteProtocolError(f"chunk of {len(data)} bytes exceeds {max_size}")
    return data
