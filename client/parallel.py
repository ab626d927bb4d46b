"""Small files, several at a time.

A file of at most one chunk costs four round trips to the server (begin, its chunk,
commit, confirm) and a sync there; one at a time, most of a file's time is spent waiting
for the next answer, and a directory of a thousand 4 KiB files took 15-19 s where
``scp -r`` took about 1 s (docs/performance.md, "Many small files"). :func:`each`
runs such files on ``client.parallel_files`` threads (4 by default), each with a
connection of its own (a DEALER socket, the same session), as that many clients would.
Larger files keep going one at a time: each one already keeps a window of chunks in
flight.

Guarantees: every job runs at most once; after the first failure no new job starts,
the jobs already running finish, and that failure is raised once every lane has
stopped. Each lane's connection is closed by its own thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Generic, TextIO, TypeVar

from client.connection import Account
from client.progress import Progress, make_progress, progress_label

__all__ = ["Job", "batches", "each", "in_lanes"]

J = TypeVar("J")
_NONE_LEFT = object()


@dataclass(frozen=True, slots=True)
class Job(Generic[J]):
    """One file of a command: its place in the command, the name its bar shows, its
    size if known before it starts (a file of unknown size goes alone), and ``item``,
    what the command's ``run`` takes."""

    number: int
    name: str
    size: int | None
    item: J


def each(
    account: Account,
    jobs: list[Job[J]],
    run: Callable[[Account, J, Progress], None],
    *,
    lanes: int,
    chunk_size: int,
    quiet: bool,
    stream: TextIO,
) -> None:
    """``run(account, item, progress)`` for every job, in order: each run of files of at
    most ``chunk_size`` bytes on ``lanes`` threads under one progress bar, every other
    file alone under its own."""
    count = len(jobs)

    def small(job: Job[J]) -> bool:
        return lanes > 1 and count > 1 and job.size is not None and job.size <= chunk_size

    for batch in batches(jobs, small):
        if len(batch) > 1:
            _together(account, batch, count, run, lanes, quiet, stream)
            continue
        (job,) = batch
        label = progress_label(job.name, job.number, count)
        progress = make_progress(job.size or 0, label, quiet=quiet, stream=stream)
        try:
            run(account, job.item, progress)
        finally:
            progress.close()


def _together(
    account: Account,
    jobs: list[Job[J]],
    count: int,
    run: Callable[[Account, J, Progress], None],
    lanes: int,
    quiet: bool,
    stream: TextIO,
) -> None:
    """``jobs`` on ``lanes`` threads, under one bar: ``[first-last/count]``."""
    label = f"[{jobs[0].number}-{jobs[-1].number}/{count}]"
    bar = make_progress(sum(job.size or 0 for job in jobs), label, quiet=quiet, stream=stream)
    lock = threading.Lock()
    try:
        in_lanes(account, jobs, lambda own, job: run(own, job.item, _Share(bar, lock)), lanes)
    finally:
        bar.close()


def batches(jobs: Iterable[J], small: Callable[[J], bool]) -> Iterator[list[J]]:
    """``jobs`` in order, in lists: each run of small ones together, every other alone."""
    for is_small, run in groupby(jobs, key=small):
        if is_small:
            yield list(run)
        else:
            yield from ([job] for job in run)


def in_lanes(
    account: Account, jobs: Iterable[J], run: Callable[[Account, J], None], lanes: int
) -> None:
    """``run(lane_account, job)`` for every job, on ``lanes`` threads."""
    pending = iter(jobs)
    lock = threading.Lock()
    failures: list[BaseException] = []
    account.session  # noqa: B018 (one key exchange, here, for every lane to share)

    def lane() -> None:
        own = account.sibling()
        try:
            while True:
                with lock:
                    job = _NONE_LEFT if failures else next(pending, _NONE_LEFT)
                if job is _NONE_LEFT:
                    return
                run(own, job)  # type: ignore[arg-type]
        except BaseException as exc:  # handed to the caller's thread, raised there
            with lock:
                failures.append(exc)
        finally:
            own.conn.close()

    # Daemon threads: an interrupted command exits without waiting for its lanes.
    threads = [threading.Thread(target=lane, name=f"lane-{n}", daemon=True) for n in range(lanes)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as exc:  # Ctrl-C in this thread: the lanes take no further job
        with lock:
            failures.append(exc)
        raise
    if failures:
        raise failures[0]


class _Share:
    """A file's part of a shared bar: a new attempt takes back what the last one counted."""

    def __init__(self, bar: Progress, lock: threading.Lock) -> None:
        self._bar, self._lock, self._counted = bar, lock, 0

    def update(self, n: int) -> None:
        with self._lock:
            self._bar.update(n)
            self._counted += n

    def reset(self, total: int | None = None) -> None:
        """The shared total stays; what this file counted is taken back."""
        with self._lock:
            self._bar.update(-self._counted)
            self._counted = 0

    def close(self) -> None:
        """The bar is :func:`each`'s to close."""
