"""Fixtures that run a real broker process (``python -m broker``) on a random local port.

``broker`` gives a running broker with short timers (heartbeat 0.5 s, liveness 3, request
expiry 3 s); ``broker_factory(**flags)`` starts more, e.g. ``broker_factory(endpoint=
old.endpoint)`` to restart one on the same port. Flags are the command-line flags of
``python -m broker`` with underscores (``request_expiry=0.5``). Every process is stopped
at the end of the test; its JSON log lines are in ``BrokerProcess.lines``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 10.0
DEFAULT_FLAGS = {"heartbeat_interval": 0.5, "heartbeat_liveness": 3, "request_expiry": 3.0}


@dataclass
class BrokerProcess:
    """A running broker: its bound endpoint, the process, and its log so far."""

    endpoint: str
    process: subprocess.Popen[bytes]
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the broker and wait for it to exit; returns the exit status."""
        if self.alive():
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if line.get("event") == name]


def _read_line(stream: Any, deadline: float) -> bytes:
    """One line from a pipe, or b"" at the deadline (the broker never started)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        buffer = b""
        while not buffer.endswith(b"\n"):
            if not selector.select(max(0.0, deadline - time.monotonic())):
                return b""
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                return buffer
            buffer += chunk
        return buffer


def start_broker(**flags: object) -> BrokerProcess:
    """Start ``python -m broker`` and wait for its ``broker.listening`` line."""
    options = {"endpoint": "tcp://127.0.0.1:*", "log_format": "json", **DEFAULT_FLAGS, **flags}
    argv = [sys.executable, "-m", "broker"]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    first = _read_line(process.stderr, time.monotonic() + START_TIMEOUT)
    try:
        line = json.loads(first)
    except ValueError:
        process.kill()
        rest = process.stderr.read().decode(errors="replace")
        process.wait()
        process.stderr.close()
        raise RuntimeError(f"broker did not start: {first!r} {rest}") from None
    if line.get("event") != "broker.listening":
        process.kill()
        process.wait()
        process.stderr.close()
        raise RuntimeError(f"first broker log line is not broker.listening: {line}")
    broker = BrokerProcess(line["endpoint"], process, [line])

    def drain() -> None:  # keeps the pipe from filling up and blocking the broker
        assert process.stderr is not None
        for raw in process.stderr:
            try:
                broker.lines.append(json.loads(raw))
            except ValueError:
                broker.lines.append({"event": "<not json>", "text": raw.decode(errors="replace")})

    broker._reader = threading.Thread(target=drain, daemon=True)
    broker._reader.start()
    return broker


@pytest.fixture
def broker_factory() -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def factory(**flags: object) -> BrokerProcess:
        started.append(start_broker(**flags))
        return started[-1]

    yield factory
    for process in started:
        process.stop(signal.SIGKILL if not process.alive() else signal.SIGTERM)


@pytest.fixture
def broker(broker_factory: Callable[..., BrokerProcess]) -> BrokerProcess:
    return broker_factory()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def dealer(
    zmq_context: zmq.Context[zmq.Socket[bytes]],
) -> Iterator[Callable[[str], zmq.Socket[bytes]]]:
    """A factory of DEALER sockets connected to an endpoint, closed (linger 0) at the end."""
    sockets: list[zmq.Socket[bytes]] = []

    def connect(endpoint: str) -> zmq.Socket[bytes]:
        sock = zmq_context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sockets.append(sock)
        return sock

    yield connect
    for sock in sockets:
        sock.close(linger=0)
