"""Start and stop real broker and worker processes for integration tests.

Readiness is detected, never waited for: the broker's first log line on standard error
names the endpoint it bound, and a worker is ready when the broker's MMI ``mmi.service``
says "200" for its service. Every wait has a deadline (:func:`wait_for` is the one loop
for what can only be polled); every socket opened here is closed with linger 0. The
output of each process is read by a background thread (so a full pipe never blocks it)
and kept for the test to look at and for the failure report.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import zmq

ROOT = Path(__file__).resolve().parents[2]
ECHO_WORKER = Path(__file__).resolve().parent / "echo_worker.py"
WAIT = 10.0  # the longest any single readiness wait may take


def run_module(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the checkout, to completion; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Proc:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, argv: Sequence[str], name: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.transcript: list[str] = []
        self._pumps: list[threading.Thread] = []
        for pipe, lines in ((self.popen.stdout, self.stdout), (self.popen.stderr, self.stderr)):
            assert pipe is not None
            pump = threading.Thread(target=self._pump, args=(pipe, lines), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, pipe: IO[str], lines: queue.Queue[str]) -> None:
        for line in pipe:
            self.transcript.append(line.rstrip("\n"))
            lines.put(line.rstrip("\n"))
        pipe.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def expect(
        self, lines: queue.Queue[str], match: Callable[[str], bool], timeout: float = WAIT
    ) -> str:
        """The next line that ``match`` accepts; earlier lines are skipped."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if match(line):
                return line
        raise TimeoutError(f"{self.name}: no matching line in {timeout} s; output: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye, as in a crash."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=WAIT)

    def stop(self, timeout: float = WAIT) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=WAIT)
        return self.popen.returncode

    def wait_transcript(self, timeout: float = WAIT) -> list[str]:
        """``transcript`` once it holds every line the process wrote: its pipes are at
        their end (it has exited, and so has any child that shared them).

        Lines reach ``transcript`` through threads reading the pipes, so a line the process
        wrote before it answered a request, or before it exited, may not be there yet
        when the test looks; a test that reads ``transcript`` of a stopped process calls
        this first."""
        deadline = time.monotonic() + timeout
        for pump in self._pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
            if pump.is_alive():
                raise TimeoutError(f"{self.name}: output still open after {timeout} s")
        return self.transcript

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.transcript[-lines:])


class Broker(Proc):
    """``python -m broker`` with the endpoint it reported as bound."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *flags: str) -> None:
        argv = [sys.executable, "-m", "broker", "--endpoint", endpoint, "--log-format", "json"]
        super().__init__([*argv, *flags], "broker")
        first = self.expect(self.stderr, lambda line: True)
        record = json.loads(first)
        if record.get("event") != "broker.listening":
            raise RuntimeError(f"broker did not start: {first}")
        self.endpoint: str = record["endpoint"]


def start_worker(endpoint: str, service: str = "echo", *options: str, name: str = "worker") -> Proc:
    """An echo worker process (see ``echo_worker.py`` for ``options``)."""
    argv = [sys.executable, str(ECHO_WORKER), endpoint, "--service", service, *options]
    return Proc(argv, name)


def mmi_service(endpoint: str, service: str, timeout: float = 1.0) -> bytes | None:
    """Ask the broker whether ``service`` has workers: b"200", b"404", or None if silent."""
    dealer: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(endpoint)
        dealer.send_multipart([b"", b"MDPC01", b"mmi.service", service.encode()])
        if not dealer.poll(int(timeout * 1000)):
            return None
        reply = dealer.recv_multipart()
        return reply[3] if len(reply) >= 4 else None
    finally:
        dealer.close(linger=0)


def wait_for(condition: Callable[[], bool], timeout: float = WAIT, pace: float = 0.02) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds, asking again after a
    pause of ``pace`` seconds each time it is false.

    For states a test can only observe by looking again (an MMI answer, a log line read
    by a thread, a row, a process gone): every wait is bounded, and the pause is the pace
    of looking, never what the test relies on. ``condition`` may raise to give up at once
    (for example when the process being watched has died).
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()  # never set: wait() is a bounded pause between looks
    while not condition():
        if time.monotonic() >= deadline:
            return False
        pause.wait(pace)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_service(
    endpoint: str, service: str, status: bytes = b"200", timeout: float = WAIT
) -> None:
    """Ask MMI until it answers ``status`` for ``service``; TimeoutError at the deadline.

    Asking is the only way to observe registration from outside, so this polls, at a
    modest pace so as not to flood the broker.
    """
    last: bytes | None = None

    def answered() -> bool:
        nonlocal last
        last = mmi_service(endpoint, service, timeout=min(1.0, timeout))
        return last == status

    if not wait_for(answered, timeout):
        raise TimeoutError(f"mmi.service {service}: wanted {status!r}, last answer {last!r}")
