"""The decisions of ``cipherdrop-server``, without processes or clocks: sizing and restarts.

:func:`parse_sizing` reads ``--workers file=4,key=1,register=1``. :class:`RestartSchedule`
is the restart policy of the supervised children: the supervisor tells it when a child
started and when it exited, passing ``now`` (monotonic seconds), and asks which children
are due to start again. It never reads the clock, so tests drive it with a fake one.

How the schedule works: a child that exits is restarted after a delay that starts at
``RestartPolicy.initial`` and doubles (``factor``) with every exit up to ``maximum``; a
child that ran for at least ``stable`` seconds before exiting is trusted again and its
delay starts over. So a crashing child costs little CPU, and a child that dies once in a
while comes back at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from common.errors import ConfigError

__all__ = [
    "SERVICE_ORDER",
    "RestartPolicy",
    "RestartSchedule",
    "default_sizing",
    "parse_sizing",
]

# Worker kinds in the order they start: registration and keys first, then file workers.
SERVICE_ORDER = ("register", "key", "file")
MAX_WORKERS = 256


def default_sizing(cores: int) -> dict[str, int]:
    """One registration and one key worker; one file worker per core (at least one)."""
    return {"register": 1, "key": 1, "file": max(1, cores)}


def parse_sizing(text: str, cores: int) -> dict[str, int]:
    """``"file=4,key=1"`` over the defaults; ConfigError naming what is wrong."""
    sizing = default_sizing(cores)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        name = name.strip()
        if not sep or name not in sizing:
            raise ConfigError(
                f"--workers: {item!r} is not SERVICE=COUNT with SERVICE one of "
                f"{', '.join(SERVICE_ORDER)}"
            )
        count = count.strip()
        if not count.isdigit() or not 0 <= int(count) <= MAX_WORKERS:
            raise ConfigError(f"--workers: {name} needs a count from 0 to {MAX_WORKERS}")
        sizing[name] = int(count)
    return sizing


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart delays in seconds; see the module docstring."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    stable: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1 or self.stable < 0:
            raise ConfigError("restart policy: need 0 < initial <= maximum, factor >= 1")


@dataclass(slots=True)
class _State:
    started_at: float | None = None  # None while the child is not running
    due_at: float | None = None  # when a stopped child should start again
    failures: int = 0  # exits in a row, each within `stable` of its start


class RestartSchedule:
    """When each named child should (re)start; see the module docstring."""

    def __init__(self, names: Iterable[str], policy: RestartPolicy = RestartPolicy()) -> None:
        self.policy = policy
        self._children = {name: _State() for name in names}

    def started(self, name: str, now: float) -> None:
        state = self._children[name]
        state.started_at, state.due_at = now, None

    def exited(self, name: str, now: float) -> float:
        """Record an exit; the delay before the child is due again."""
        state = self._children[name]
        ran = now - state.started_at if state.started_at is not None else 0.0
        state.failures = 1 if ran >= self.policy.stable else state.failures + 1
        delay = min(
            self.policy.maximum, self.policy.initial * self.policy.factor ** (state.failures - 1)
        )
        state.started_at, state.due_at = None, now + delay
        return delay

    def due(self, now: float) -> list[str]:
        """Children whose restart time has come (in the order they were named)."""
        return [
            name
            for name, state in self._children.items()
            if state.due_at is not None and state.due_at <= now
        ]

    def next_due(self) -> float | None:
        """The earliest pending restart time, if any child is waiting."""
        times = [s.due_at for s in self._children.values() if s.due_at is not None]
        return min(times) if times else None

    def failures(self) -> Mapping[str, int]:
        return {name: state.failures for name, state in self._children.items()}
