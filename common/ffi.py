"""C functions called through ctypes without giving up the GIL.

ctypes releases the GIL around every foreign call, and getting it back means waiting for
whichever thread took it meanwhile. For a call of a few microseconds that wait is the
cost: with one other busy thread a small AES-GCM seal took 140 instead of 47 us, and a
16-byte ``os.urandom`` 120 us, and the transfer loops always have other threads.
:func:`holding_gil` gives the same function through a ``PYFUNCTYPE`` prototype, which
keeps the GIL. Only for short calls: a long one would stop every other thread.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["holding_gil"]


def holding_gil(function: Any, restype: Any, *argtypes: Any) -> Any:
    """The C function ``function`` (an attribute of a ctypes ``CDLL``), called without
    releasing the GIL; ImportError if it has no address."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    if address is None:
        raise ImportError(f"{function!r} has no address")
    return ctypes.PYFUNCTYPE(restype, *argtypes)(address)
