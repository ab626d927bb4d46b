"""common.background: in order, one failure does not stop the next, settle waits."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from common import background


def test_calls_run_in_order_on_one_thread_and_settle_waits() -> None:
    seen: list[tuple[int, str]] = []
    for index in range(20):
        background.submit(
            "test-order", lambda i: seen.append((i, threading.current_thread().name)), index
        )
    background.settle("test-order", timeout=10)
    assert [i for i, _ in seen] == list(range(20))
    assert len({name for _, name in seen}) == 1
    assert seen[0][1] != threading.current_thread().name


def test_a_failing_call_is_logged_and_the_next_still_runs() -> None:
    ran = threading.Event()

    def fail() -> None:
        raise OSError("disk gone")

    with capture_logs() as logs:
        background.submit("test-failure", fail)
        background.submit("test-failure", ran.set)
        background.settle("test-failure", timeout=10)
    assert ran.is_set()
    assert [(e["event"], e["purpose"]) for e in logs] == [("background.failed", "test-failure")]
