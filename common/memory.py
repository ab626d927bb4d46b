"""Let the C allocator keep freed chunk buffers for the next chunk.

Every chunk passes through buffers of about a MiB: the frame ZeroMQ receives, the
plaintext or ciphertext AES-GCM returns, the bytes a file read gives. glibc serves such
sizes with fresh ``mmap`` calls and returns them to the kernel on ``free``, so every chunk
pays for mapping, page faults and zeroing of pages it had a moment ago: measured here,
5-10% of a transfer's time and much of the client's system CPU outside file writes.
:func:`keep_freed_buffers` raises glibc's thresholds so these buffers come from the heap
and are reused. Memory stays bounded by the buffers alive at once (the window of chunks
in flight); freed memory beyond ``_TRIM_THRESHOLD`` at the top of the heap still goes back
to the kernel.

Guarantee: none beyond speed. Where the C library is not glibc (no ``mallopt``, or one
that refuses these values) it does nothing and says so by returning False.
"""

from __future__ import annotations

import ctypes

from common.ffi import libc_function

__all__ = ["keep_freed_buffers"]

# mallopt(3) parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems; chunks are at most 8 MiB.
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 128 * 1024 * 1024


def keep_freed_buffers() -> bool:
    """Have malloc reuse freed chunk-sized buffers; True if the C library agreed."""
    mallopt = libc_function("mallopt", ctypes.c_int, ctypes.c_int, ctypes.c_int)
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
