"""``--limit-rate``: at most so many bytes per second on the wire, on average.

A transfer asks :meth:`Throttle.take` before each chunk crosses the wire (an upload
before it sends one, a download once it has one); the call waits until the bytes so far
are within the rate. The first chunk goes at once, so a transfer never waits before it
starts, and a rate below one chunk per second still moves one chunk at a time. Sans-I/O
at the core: the clock and the wait are given (tests pass their own).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Throttle", "parse_rate"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Throttle:
    """Paces ``take`` calls to ``rate`` bytes per second (``None``: no limit)."""

    def __init__(
        self,
        rate: int | None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock, self._wait = clock, wait
        self._free_at: float | None = None  # when the bytes taken so far have had their time

    def take(self, size: int) -> None:
        """Return once ``size`` more bytes may go."""
        if self.rate is None:
            return
        now = self._clock()
        if self._free_at is not None and self._free_at > now:
            self._wait(self._free_at - now)
            now = self._free_at
        self._free_at = now + size / self.rate


def parse_rate(text: str) -> int:
    """``500k``, ``2M``, ``1G`` or plain bytes per second (binary units, any case)."""
    value, unit = text.strip(), ""
    if value and value[-1].lower() in "kmg":
        value, unit = value[:-1], value[-1].lower()
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise ValueError("a rate is a positive whole number of bytes per second, with k, M or G")
    return int(value) * _UNITS[unit]
