"""Child processes of ``cipherdrop-server``: start one, stop a group of them, no orphans.

Guarantees:

* Every child runs ``sys.executable -m MODULE ...`` in its own process group, so a
  Ctrl-C on the terminal reaches only the supervisor, which then stops the children in
  order (workers first, then the broker).
* Children share the supervisor's standard error, one whole log line per write.
* On Linux every child asks the kernel for SIGTERM when the supervisor dies
  (``PR_SET_PDEATHSIG``), so even a supervisor killed with SIGKILL leaves no orphans.
* :func:`stop_all` sends SIGTERM to a group, waits up to a deadline for all of them,
  then SIGKILLs and reaps whatever is left: it always returns with every child reaped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Child", "connect_endpoint", "resolve_bind_endpoint", "stop_all"]

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    return getattr(libc, "prctl", None)


# Looked up once in the parent: the code between fork and exec must stay trivial.
_PRCTL = _prctl()


def _die_with(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


def _child_environment() -> dict[str, str]:
    """The supervisor's environment, minus ``PYTHONUNBUFFERED``: children share one
    standard error, and a line-buffered stream writes each log line with one call, so
    lines of different children never interleave."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}


@dataclass
class Child:
    """One supervised process: its name (``broker``, ``file-2``...) and command line."""

    name: str
    argv: Sequence[str]
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> int:
        """Start the process (``argv`` after ``sys.executable``); its pid."""
        self.popen = subprocess.Popen(
            [sys.executable, *self.argv],
            stdin=subprocess.DEVNULL,
            env=_child_environment(),
            process_group=0,
            # Safe here: the supervisor runs no threads (MMI probes end theirs).
            preexec_fn=_die_with(os.getpid()),
        )
        return self.popen.pid

    def exit_status(self) -> int | None:
        """The exit status once the process has ended (negative: killed by a signal)."""
        return self.popen.poll() if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        popen = self.popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signum)


def stop_all(children: Sequence[Child], timeout: float, stop_wait: threading.Event) -> list[str]:
    """SIGTERM every running child, wait up to ``timeout`` seconds, SIGKILL the rest.

    Returns the names of the children that had to be killed. ``stop_wait`` is only used
    as a bounded pause (it is never set by this function).
    """
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(child.running() for child in children) and time.monotonic() < deadline:
        stop_wait.wait(0.05)
    killed = [child.name for child in children if child.running()]
    for child in children:
        child.signal(signal.SIGKILL)
    for child in children:
        if child.popen is not None:
            child.popen.wait()
    return killed


def _split_tcp(endpoint: str) -> tuple[str, str] | None:
    if not endpoint.startswith("tcp://"):
        return None
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    return host, port


def resolve_bind_endpoint(endpoint: str) -> str:
    """``endpoint`` with a ``*`` or ``0`` port replaced by a port free right now.

    The supervisor fixes the port once, so a restarted broker binds the same one and the
    workers, which were told where to connect, find it again.
    """
    parts = _split_tcp(endpoint)
    if parts is None or parts[1] not in ("*", "0"):
        return endpoint
    host = parts[0]
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    bare = host.strip("[]")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind(("" if bare in ("*", "") else bare, 0))
        port = probe.getsockname()[1]
    return f"tcp://{host}:{port}"


def connect_endpoint(bind: str) -> str:
    """Where a local worker connects to reach a broker bound to ``bind`` (concrete port)."""
    parts = _split_tcp(bind)
    if parts is None:
        return bind
    host, port = parts
    if host in ("*", "0.0.0.0"):  # noqa: S104 (turning a wildcard into loopback)
        host = "127.0.0.1"
    elif host in ("[::]", "[*]"):
        host = "[::1]"
    return f"tcp://{host}:{port}"
