"""Rate limiting for the broker's log, so that a flood of bad input cannot flood the log.

Within each window of ``period`` seconds an event is logged at most once per (kind, peer)
and at most ``burst`` times per kind; everything else is counted, and the counts are
handed back once the window closes so the shell can log one summary line. Sans-I/O: the
caller passes ``now``.
"""

from __future__ import annotations

from collections import Counter


class LogLimiter:
    """Decides which events to log; counts the ones it suppresses."""

    def __init__(self, period: float = 60.0, burst: int = 20, max_peers: int = 4096) -> None:
        self.period = period
        self.burst = burst
        self.max_peers = max_peers
        self._window_end = -1.0
        self._seen: set[tuple[str, bytes]] = set()
        self._logged: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()

    def allow(self, kind: str, peer: bytes, now: float) -> bool:
        """True if this event should be logged now."""
        if now >= self._window_end:
            self._window_end = now + self.period
            self._seen.clear()
            self._logged.clear()
        key = (kind, peer)
        if key in self._seen or self._logged[kind] >= self.burst:
            self._suppressed[kind] += 1
            return False
        if len(self._seen) < self.max_peers:
            self._seen.add(key)
        self._logged[kind] += 1
        return True

    def suppressed(self, now: float) -> dict[str, int]:
        """Counts suppressed so far, once the window they belong to is over; else {}."""
        if now < self._window_end or not self._suppressed:
            return {}
        counts = dict(self._suppressed)
        self._suppressed.clear()
        return counts

    def flush(self) -> dict[str, int]:
        """All counts suppressed and not yet reported (for the shutdown summary)."""
        counts = dict(self._suppressed)
        self._suppressed.clear()
        return counts
