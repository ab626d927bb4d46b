"""``cipherdrop-server`` and the individual launches, as real processes on 127.0.0.1.

The server is started with ``python -m workers.server`` on a random port and a temporary
data directory; readiness is its ``server.ready`` log line, child pids come from its
``child.started`` lines. :class:`ServerProcess` and :func:`run_client` are shared with
``test_admin.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .procs import ROOT, WAIT, Broker, Proc, free_port, run_module, wait_for, wait_for_service

pytestmark = pytest.mark.integration

RSA_BITS = 2048  # keeps key generation quick; the product default is 3072
CONFIG = f"""
[crypto]
rsa_bits = {RSA_BITS}
[broker]
heartbeat_interval = 1.0
[worker]
heartbeat_interval = 1.0
reconnect_min = 0.05
reconnect_max = 0.5
"""


def write_config(base: Path) -> Path:
    path = base / "server.toml"
    path.write_text(CONFIG)
    return path


def alive(pid: int) -> bool:
    """True if ``pid`` is a running process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float = 3 * WAIT) -> list[int]:
    """The processes of ``pids`` still running once all are gone or ``timeout`` passed."""
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout, pace=0.05)
    return [pid for pid in pids if alive(pid)]


class ServerProcess(Proc):
    """``python -m workers.server`` on a random port; ready when it says so."""

    def __init__(self, base: Path, *options: str, workers: str = "file=2,key=1,register=1"):
        self.base = base
        self.data = base / "data"
        self.config = base / "server.toml"
        if not self.config.exists():
            write_config(base)
        argv = [sys.executable, "-m", "workers.server", "--config", str(self.config)]
        argv += ["--endpoint", "tcp://127.0.0.1:*", "--data", str(self.data)]
        argv += ["--workers", workers, "--log-format", "json", "--stop-timeout", "5", *options]
        super().__init__(argv, "server")
        ready = json.loads(self.expect(self.stderr, lambda line: '"server.ready"' in line, 60))
        self.endpoint: str = ready["endpoint"]
        self.fingerprint: str = ready["fingerprint"]

    def records(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.transcript):
            if f'"{event}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def child_pids(self) -> dict[str, int]:
        """The latest pid of every child."""
        return {r["child"]: r["pid"] for r in self.records("child.started")}

    def all_pids(self) -> list[int]:
        return [r["pid"] for r in self.records("child.started")]


def client_env(home: Path, endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
    env.update(
        PYTHONPATH=str(ROOT),
        CIPHERDROP_HOME=str(home),
        CIPHERDROP_CLIENT_SERVER=endpoint,
        CIPHERDROP_CRYPTO_RSA_BITS=str(RSA_BITS),
        CIPHERDROP_CLIENT_REQUEST_TIMEOUT="5",
    )
    return env


def run_client(home: Path, endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m client ARGS`` (the ``cipherdrop`` command) to completion."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=client_env(home, endpoint),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path)
    yield proc
    proc.stop(timeout=20)


def test_server_initialises_serves_restarts_a_dead_child_and_stops_cleanly(
    server: ServerProcess, tmp_path: Path
) -> None:
    stdout = server.expect(server.stdout, lambda line: "fingerprint" in line)
    assert server.fingerprint in stdout
    assert {p.name for p in server.data.iterdir()} >= {"server_key.pem", "master.key", "blobs"}
    pids = server.child_pids()
    assert set(pids) == {"broker", "register-1", "key-1", "file-1", "file-2"}

    home = tmp_path / "alice"
    source = tmp_path / "notes.txt"
    source.write_bytes(b"through the one-command server\n" * 1000)
    assert run_client(home, server.endpoint, "register", "alice").returncode == 0
    assert run_client(home, server.endpoint, "put", str(source), "-q").returncode == 0

    os.kill(pids["file-1"], signal.SIGKILL)
    exited = server.expect(server.stderr, lambda line: '"child.exited"' in line)
    assert json.loads(exited)["child"] == "file-1"
    restarted = json.loads(
        server.expect(server.stderr, lambda line: '"child.started"' in line and "file-1" in line)
    )
    assert restarted["pid"] != pids["file-1"]
    wait_for_service(server.endpoint, "cipherdrop.file")
    again = run_client(home, server.endpoint, "put", str(source), "--name", "again.txt", "-q")
    assert again.returncode == 0, again.stderr

    every_pid = server.all_pids()
    assert server.stop(timeout=30) == 0
    assert wait_gone(every_pid) == []
    server.wait_transcript()
    stopped = server.records("server.stopped")
    assert stopped and stopped[-1]["killed"] == []
    # Workers stop before the broker: every worker's last line precedes the broker's.
    order = [json.loads(line).get("event") for line in server.transcript if line.startswith("{")]
    assert order.index("broker.stopped") > max(
        i for i, event in enumerate(order) if event == "worker.stopped"
    )


def test_children_die_with_a_killed_server(server: ServerProcess) -> None:
    pids = list(server.child_pids().values())
    server.kill()
    assert wait_gone(pids) == []


def test_bad_sizing_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_module("workers.server", "--data", str(tmp_path), "--workers", "fils=2")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--workers" in result.stderr and "Traceback" not in result.stderr


def test_a_worker_started_before_the_broker_connects_when_it_appears(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path)
    argv = [sys.executable, "-m", "workers", "key", "--broker", endpoint]
    argv += ["--config", str(config), "--data", str(tmp_path / "data"), "--log-format", "json"]
    worker = Proc(argv, "key-worker")
    broker = None
    try:
        worker.expect(worker.stderr, lambda line: '"worker.ready"' in line, 60)
        broker = Broker(endpoint, "--heartbeat-interval", "1.0")
        wait_for_service(broker.endpoint, "cipherdrop.key", timeout=3 * WAIT)
    finally:
        assert worker.stop() == 0
        if broker is not None:
            broker.stop()


@pytest.mark.parametrize(
    "module", ["broker", "workers", "workers.server", "workers.admin", "client"]
)
def test_every_command_has_help(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ")
