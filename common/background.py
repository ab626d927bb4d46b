"""Housekeeping I/O that no reply waits for, on one background thread per purpose.

Some file-system work must happen but need not delay anyone: starting a file's writeback
early (:mod:`common.earlysync`), deleting the blob file of a version that was just
replaced. :func:`submit` queues such a call on a thread kept for its purpose (created on
first use, so a process that never needs one never starts it), in order, one at a time.
:func:`settle` waits until everything queued for a purpose so far has run.

Guarantees: calls run in the order submitted; an exception in one is logged and does not
stop the next; the threads are joined at interpreter exit, so queued work finishes
before a process that exits normally ends. Callers keep their own guarantees without
it: a blob left behind by a crash is removed by the worker's start-up sweep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.log import get_logger

__all__ = ["settle", "submit"]

_log = get_logger()
_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _pool(purpose: str) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(purpose)
        if pool is None:
            pool = _pools[purpose] = ThreadPoolExecutor(1, thread_name_prefix=purpose)
        return pool


def _logged(purpose: str, call: Callable[..., object], args: tuple[Any, ...]) -> None:
    try:
        call(*args)
    except Exception:
        _log.exception("background.failed", purpose=purpose)


def submit(purpose: str, call: Callable[..., object], *args: Any) -> None:
    """Run ``call(*args)`` on ``purpose``'s background thread, after what is queued there."""
    _pool(purpose).submit(_logged, purpose, call, args)


def settle(purpose: str, timeout: float | None = None) -> None:
    """Wait until what was submitted for ``purpose`` before this call has run."""
    _pool(purpose).submit(lambda: None).result(timeout)
