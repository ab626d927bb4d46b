"""C library functions through ctypes: found once, and optionally called keeping the GIL.

:func:`libc_function` gives a function of the C library with its prototype, or None off
Linux or where the library lacks it (callers then fall back on the standard library).

ctypes releases the GIL around every foreign call, and getting it back means waiting for
whichever thread took it meanwhile. For a call of a few microseconds that wait is the
cost: with one other busy thread a small AES-GCM seal took 140 instead of 47 us, and a
16-byte ``os.urandom`` 120 us, and the transfer loops always have other threads.
:func:`holding_gil` gives the same function through a ``PYFUNCTYPE`` prototype, which
keeps the GIL. Only for short calls: a long one would stop every other thread.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

__all__ = ["holding_gil", "libc_function"]


def libc_function(
    name: str, restype: Any, *argtypes: Any, use_errno: bool = False, keep_gil: bool = False
) -> Any | None:
    """The C library's ``name`` with this prototype (:func:`holding_gil` if ``keep_gil``);
    None off Linux or where the library has no such function."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = getattr(ctypes.CDLL(None, use_errno=use_errno), name)
    except (OSError, AttributeError):
        return None
    if keep_gil:
        return holding_gil(function, restype, *argtypes)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


def holding_gil(function: Any, restype: Any, *argtypes: Any) -> Any:
    """The C function ``function`` (an attribute of a ctypes ``CDLL``), called without
    releasing the GIL; ImportError if it has no address."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    if address is None:
        raise ImportError(f"{function!r} has no address")
    return ctypes.PYFUNCTYPE(restype, *argtypes)(address)
