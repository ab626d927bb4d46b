"""The SQLite connection of one worker process: settings, migrations, transactions.

Guarantees:

* Every connection runs in WAL mode with ``synchronous=NORMAL`` (a commit survives a
  process crash; a power cut may lose the last few commits but never corrupts the
  database), foreign keys on, and the configured busy timeout.
* Migrations (:mod:`workers.schema`) are applied at open inside ``BEGIN IMMEDIATE``, so
  when several workers open a new database at once exactly one applies each migration
  and the others see the result. A database newer than this program is refused.
* Opening waits (up to the busy timeout) while another process turns a new database to
  WAL: SQLite answers that case "busy" at once instead of calling its busy handler.
* :func:`write` runs its block in one ``BEGIN IMMEDIATE`` transaction, committed only if
  the block returns; a database still locked after the busy timeout (SQLite's own wait,
  then up to 0.1 s more of attempts if it answered busy at once) becomes
  :class:`StorageError` saying the store is busy, never "database is locked" to a user.
* Every ``sqlite3.Error`` leaving this module, or :mod:`workers.store`, is a
  :class:`StorageError` (:func:`translated`).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ParamSpec, TypeVar

from common.errors import NoSpaceError, StorageError
from workers.schema import LATEST_VERSION, MIGRATIONS

__all__ = ["connect", "translated", "write"]

P = ParamSpec("P")
R = TypeVar("R")

# BEGIN IMMEDIATE already waits up to the busy timeout; it is tried again, for this long,
# only when SQLite answers SQLITE_BUSY at once (e.g. to break a lock-upgrade deadlock).
_BEGIN_RETRY_WINDOW = 0.1
# Pauses between attempts that SQLite answered "busy" without waiting.
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.05
_pause = time.sleep  # replaced in tests to act between two attempts


def translated(func: Callable[P, R]) -> Callable[P, R]:
    """Turn ``sqlite3.Error`` escaping ``func`` into StorageError."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise NoSpaceError("no space left on the server for the database") from exc
            raise StorageError(f"store failure: {_describe(exc)}") from exc

    return wrapper


def _describe(exc: sqlite3.Error) -> str:
    if _is_busy(exc):
        return "the store is busy; try again"
    return type(exc).__name__


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


@translated
def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at ``path``.

    A worker's connection passes between its two threads (workers/loop.py), hence
    ``check_same_thread=False``; they never use it at once: a worker holds one request
    at a time.
    """
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        _while_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"), busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _while_busy(action: Callable[[], object], timeout: float) -> None:
    """Run ``action``, again after a growing pause while SQLite answers busy, until
    ``timeout`` has passed (an attempt that itself waited that long is not repeated).

    Two processes turning a new database to WAL at once each hold a shared lock and want
    an exclusive one; SQLite breaks that deadlock by answering one of them busy at once.
    By the next attempt the other has finished and the database is already in WAL mode.
    """
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        _pause(pause)
        pause = min(2 * pause, _LONGEST_PAUSE)


def _migrate(conn: sqlite3.Connection) -> None:
    with write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > LATEST_VERSION:
            raise StorageError(
                f"the database is at schema version {version}, newer than this program"
                f" ({LATEST_VERSION}); run a newer cipherdrop"
            )
        for number in range(version + 1, LATEST_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


@contextlib.contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block returns, rolled back if it raises."""
    _while_busy(lambda: conn.execute("BEGIN IMMEDIATE"), _BEGIN_RETRY_WINDOW)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (e.g. on SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
