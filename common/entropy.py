"""Random bytes from the kernel's CSPRNG, asked for without giving up the GIL.

``os.urandom`` (and ``secrets``, which calls it) gives up the GIL around its
``getrandom`` system call and then waits to take it back. In a process whose other
threads are busy that wait dwarfs the call: in a download's fetching thread, which needs
two random values per chunk (a request id and a nonce), cProfile measured 120 us per
call. :func:`token_bytes` makes the same ``getrandom(2)`` call through a ctypes prototype
that keeps the GIL (:mod:`common.ffi`; a few microseconds; the call never blocks once
the kernel's generator is initialised, which happened at boot). Nothing is buffered:
every call asks the kernel, so threads and forked processes never share random bytes.

Guarantee: the bytes ``os.urandom(n)`` gives (the same system call, flags 0); where the C
library has no ``getrandom``, or a call returns short, it is ``os.urandom`` itself.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

from common.ffi import libc_function

__all__ = ["token_bytes"]

_GETRANDOM_MAX = 256  # up to this many bytes, getrandom(2) returns them all at once


_getrandom: Callable[..., int] | None = libc_function(
    "getrandom", ctypes.c_ssize_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, keep_gil=True
)


def token_bytes(n: int) -> bytes:
    """``n`` random bytes from the operating system's CSPRNG."""
    if _getrandom is None or not 0 < n <= _GETRANDOM_MAX:
        return os.urandom(n)
    buffer = ctypes.create_string_buffer(n)
    if _getrandom(buffer, n, 0) != n:
        return os.urandom(n)
    return buffer.raw
