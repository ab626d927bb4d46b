"""The whole server as real processes, for end-to-end tests and the upload benchmark.

:class:`Stack` starts ``python -m broker`` on a random port of 127.0.0.1 and
``python -m workers register|key|file`` against it, all sharing one temporary data
directory, and runs the ``cipherdrop`` client (``python -m client``) as a subprocess.

Readiness is observed, never waited for blindly: the broker's first log line names the
endpoint it bound (:class:`procs.Broker`), each worker counts as ready once the broker
has logged its READY (``broker.worker_ready``) and MMI ``mmi.service`` answers "200" for
its service. Every wait has a deadline. :meth:`Stack.stop` stops every process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .procs import ROOT, WAIT, Broker, Proc, wait_for, wait_for_service

__all__ = ["SERVICES", "Stack", "running_stack"]

SERVICES = {"register": "cipherdrop.register", "key": "cipherdrop.key", "file": "cipherdrop.file"}
# Fast enough to notice a dead worker in a test, slow enough for a long commit (fsync).
HEARTBEAT = (1.0, 3)


class Stack:
    """A broker and its workers on one data directory; see the module docstring."""

    def __init__(
        self,
        base: Path,
        *,
        file_workers: int = 2,
        rsa_bits: int = 2048,
        log_level: str = "info",
        broker_endpoint: str = "tcp://127.0.0.1:*",
        heartbeat: tuple[float, int] = HEARTBEAT,
        store: Mapping[str, int | float | str] | None = None,
    ) -> None:
        self.base = Path(base)
        self.data_dir = self.base / "server"
        self.config = self.base / "server.toml"
        # Settings no flag sets go through a config file, so the test environment
        # (os.environ) stays untouched.
        self.base.mkdir(parents=True, exist_ok=True)
        data_dir = json.dumps(str(self.data_dir))  # a JSON string is a valid TOML string
        extra = "".join(f"{name} = {json.dumps(value)}\n" for name, value in (store or {}).items())
        self.config.write_text(
            f"[crypto]\nrsa_bits = {rsa_bits}\n[store]\ndata_dir = {data_dir}\n{extra}"
        )
        self.log_level = log_level
        self.rsa_bits = rsa_bits
        interval, liveness = heartbeat
        self.heartbeat = [
            "--heartbeat-interval",
            str(interval),
            "--heartbeat-liveness",
            str(liveness),
        ]
        self.procs: list[Proc] = []
        self.workers: dict[str, list[Proc]] = {name: [] for name in SERVICES}
        self.broker = Broker(
            broker_endpoint, *self.heartbeat
        )  # info: its first line is the endpoint
        self.procs.append(self.broker)
        try:
            # One of each first, so the data dir is made once, then the other file workers.
            for service in SERVICES:
                self.start_worker(service)
            for _ in range(file_workers - 1):
                self.start_worker("file")
        except BaseException:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        return self.broker.endpoint

    def start_worker(self, service: str) -> Proc:
        """Start one more worker of ``service`` and wait until the broker has it."""
        before = self._ready_count(service)
        argv = [sys.executable, "-m", "workers", service, "--broker", self.endpoint]
        argv += ["--config", str(self.config), "--log-format", "json"]
        argv += ["--log-level", self.log_level, *self.heartbeat]
        argv += ["--reconnect-min", "0.05", "--reconnect-max", "0.5"]
        proc = Proc(argv, f"{service}-worker-{len(self.workers[service]) + 1}")
        self.procs.append(proc)
        self.workers[service].append(proc)
        self._wait_ready(service, before + 1, proc)
        return proc

    def _ready_count(self, service: str) -> int:
        count = 0
        for line in list(self.broker.transcript):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "broker.worker_ready":
                count += record.get("service") == SERVICES[service]
        return count

    def _wait_ready(self, service: str, count: int, proc: Proc) -> None:
        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited before it was ready: {proc.tail()}")
            return self._ready_count(service) >= count

        if not wait_for(ready, 3 * WAIT):  # the first worker makes the server key
            raise RuntimeError(f"{proc.name} did not become ready: {proc.tail()}")
        wait_for_service(self.endpoint, SERVICES[service])

    def fingerprint(self) -> str:
        """The server fingerprint, as the workers logged it at start."""
        for proc in self.workers["register"]:
            for line in list(proc.transcript):  # a thread appends to it
                if '"worker.ready"' in line:
                    return str(json.loads(line)["fingerprint"])
        raise RuntimeError("no worker logged the server fingerprint")

    def client_env(self, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
        env.update(
            PYTHONPATH=str(ROOT),
            CIPHERDROP_HOME=str(home),
            CIPHERDROP_CLIENT_SERVER=self.endpoint,
            CIPHERDROP_CRYPTO_RSA_BITS=str(self.rsa_bits),
            CIPHERDROP_CLIENT_REQUEST_TIMEOUT="5",
        )
        env.update(extra or {})
        return env

    def client(
        self,
        home: Path,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m client ARGS`` to completion; its exit status and output."""
        return subprocess.run(
            [sys.executable, "-m", "client", *args],
            cwd=ROOT,
            env=self.client_env(home, env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn_client(
        self, home: Path, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``python -m client ARGS`` without waiting for it."""
        return subprocess.Popen(
            [sys.executable, "-m", "client", *args],
            cwd=ROOT,
            env=self.client_env(home, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> None:
        """Stop the workers, then the broker (SIGTERM, then SIGKILL after a deadline)."""
        for proc in reversed(self.procs):
            proc.stop()


@contextmanager
def running_stack(base: Path, **options: object) -> Iterator[Stack]:
    """A :class:`Stack` for the duration of a ``with`` block."""
    stack = Stack(base, **options)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stack.stop()
