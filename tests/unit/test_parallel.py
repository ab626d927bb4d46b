"""Small files several at a time (client/parallel.py), without sockets: the lanes run
on stand-in accounts that record which lane ran which job."""

from __future__ import annotations

import io
import threading
from typing import Any, cast

import pytest

from client import parallel
from client.connection import Account

LANES = 4


class _Conn:
    def __init__(self) -> None:
        self.closed_by: str | None = None

    def close(self) -> None:
        self.closed_by = threading.current_thread().name


class _Account:
    """What :func:`parallel.in_lanes` uses of an account: its session and siblings."""

    def __init__(self) -> None:
        self.sessions = 0
        self.siblings: list[_Account] = []
        self.conn = _Conn()

    @property
    def session(self) -> object:
        self.sessions += 1
        return object()

    def sibling(self) -> _Account:
        other = _Account()
        self.siblings.append(other)
        return other


def lanes_of(account: _Account) -> Account:
    return cast(Account, account)


def test_batches_put_runs_of_small_jobs_together_and_keep_the_order() -> None:
    jobs = [1, 2, 30, 4, 5, 6, 70, 80, 9]
    assert list(parallel.batches(jobs, lambda job: job < 10)) == [
        [1, 2],
        [30],
        [4, 5, 6],
        [70],
        [80],
        [9],
    ]
    assert list(parallel.batches([], lambda job: True)) == []


def test_every_job_runs_once_each_lane_on_its_own_connection() -> None:
    account = _Account()
    ran: list[tuple[int, int]] = []
    lock = threading.Lock()
    # Every lane waits here until all have a job: the jobs really run at the same time.
    all_busy = threading.Barrier(LANES, timeout=10)

    def run(own: Account, job: int) -> None:
        if job < LANES:
            all_busy.wait()
        with lock:
            ran.append((id(own), job))

    parallel.in_lanes(lanes_of(account), range(100), run, LANES)
    assert sorted(job for _, job in ran) == list(range(100))
    assert account.sessions == 1  # one key exchange, before the lanes start
    assert len(account.siblings) == LANES
    assert {lane for lane, _ in ran} <= {id(lane) for lane in account.siblings}
    for lane in account.siblings:  # closed by the lane's own thread
        assert lane.conn.closed_by is not None and lane.conn.closed_by.startswith("lane-")


def test_after_a_failure_no_job_starts_and_the_failure_is_raised() -> None:
    account = _Account()
    started: list[int] = []
    lock = threading.Lock()
    failed = threading.Event()

    def run(own: Account, job: int) -> None:
        with lock:
            started.append(job)
        if job == 5:
            failed.set()
            raise ValueError("file 5 failed")
        # Jobs after the failing one wait for it; jobs before it do not.
        if job > 5:
            failed.wait(10)

    with pytest.raises(ValueError, match="file 5 failed"):
        parallel.in_lanes(lanes_of(account), range(1000), run, LANES)
    # Only the jobs already taken when 5 failed ran: at most one more per other lane.
    assert 5 in started and len(started) <= 6 + LANES - 1
    assert all(lane.conn.closed_by is not None for lane in account.siblings)


class _Bar:
    def __init__(self) -> None:
        self.n = 0
        self.closed = False

    def update(self, n: int) -> None:
        self.n += n

    def reset(self, total: int | None = None) -> None:
        self.n = 0

    def close(self) -> None:
        self.closed = True


def test_small_files_share_a_bar_that_takes_back_a_failed_attempt_and_others_go_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[int, str, _Bar]] = []

    def make_progress(total: int, label: str, **options: Any) -> _Bar:
        made.append((total, label, _Bar()))
        return made[-1][2]

    monkeypatch.setattr(parallel, "make_progress", make_progress)
    account = _Account()
    threads: dict[str, str] = {}

    def run(own: Account, size: int, progress: Any) -> None:
        threads[str(size)] = threading.current_thread().name
        progress.reset(total=size)
        progress.update(size // 2)
        progress.reset(total=size)  # a second attempt starts over
        progress.update(size)
        progress.close()  # the file's view: a shared bar stays open

    sizes = [100, 200, 300, 5000, 400]
    jobs = [parallel.Job(n, f"f{n}", size, size) for n, size in enumerate(sizes, 1)]
    err = io.StringIO()
    parallel.each(lanes_of(account), jobs, run, lanes=2, chunk_size=1000, quiet=False, stream=err)
    # Three small files under one bar, the large one alone, and the last small one alone
    # too (a run of one is not worth a lane).
    assert [(total, label) for total, label, _ in made] == [
        (600, "[1-3/5]"),
        (5000, "[4/5] f4"),
        (400, "[5/5] f5"),
    ]
    assert all(bar.closed for _, _, bar in made) and made[0][2].n == 600
    assert {threads[str(size)][:5] for size in (100, 200, 300)} == {"lane-"}
    assert threads["5000"] == threads["400"] == threading.current_thread().name
    assert len(account.siblings) == 2


@pytest.mark.parametrize(("lanes", "sizes"), [(1, [1, 2, 3]), (4, [1])])
def test_one_lane_or_one_file_goes_alone(
    monkeypatch: pytest.MonkeyPatch, lanes: int, sizes: list[int]
) -> None:
    monkeypatch.setattr(parallel, "make_progress", lambda total, label, **_: _Bar())
    account, ran = _Account(), []
    jobs = [parallel.Job(n, f"f{n}", size, size) for n, size in enumerate(sizes, 1)]
    parallel.each(
        lanes_of(account),
        jobs,
        lambda own, size, progress: ran.append(threading.current_thread().name),
        lanes=lanes,
        chunk_size=1000,
        quiet=True,
        stream=io.StringIO(),
    )
    assert not account.siblings and ran == [threading.current_thread().name] * len(sizes)
