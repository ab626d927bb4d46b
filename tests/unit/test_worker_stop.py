"""A worker stops when asked, however many signals its main thread handles meanwhile.

The main thread of ``run_worker`` waits for requests in steps of ``STOP_CHECK`` and sees
``stop`` between them. CPython before 3.13 has a trap there: a ``queue.SimpleQueue.get``
with a timeout, interrupted by a signal whose handler returns after the deadline, goes on
waiting with a negative timeout, which means forever; the worker then ignored SIGTERM.
The child below handles a signal about every millisecond while it serves (broker absent,
so it only reconnects), with a wait step shortened to 2 ms so that the race comes up
hundreds of times; ``stop`` is then set and the child must end.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, signal, threading, time
    from workers import loop

    loop.STOP_CHECK = 0.002
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    stop = threading.Event()

    def pester() -> None:
        while not stop.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.001)

    threading.Thread(target=pester, daemon=True).start()
    threading.Timer(2.0, stop.set).start()
    loop.run_worker("tcp://127.0.0.1:1", "stop.test", lambda body: [b"x"], stop=stop)
    print("stopped")
    """
)


def test_the_worker_stops_while_its_main_thread_handles_signals() -> None:
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker did not stop within 30 s of being asked") from None
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "stopped"
