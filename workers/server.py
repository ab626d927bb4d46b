"""``cipherdrop-server`` / ``python -m workers.server``: the whole server in one command.

It initialises the data directory on first start (server key, master key, database) and
prints the server fingerprint on standard output, then runs the broker and the workers
as child processes (:mod:`workers.children`) and keeps them running: a child that exits
is started again after the delay :class:`~workers.supervisor.RestartSchedule` gives.
SIGINT or SIGTERM stop the workers first, then the broker, each group with a deadline
after which it is killed; the exit status is then 0. Exit status 2 means a bad setting,
1 a data directory or broker that cannot start.

Log lines (``server.*``, ``child.*``) go to standard error with the children's own.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import structlog

from common.errors import ConfigError, StorageError
from common.log import configure_logging
from config import Settings, load_settings
from workers.app import SERVICES, open_server
from workers.children import Child, connect_endpoint, resolve_bind_endpoint, stop_all
from workers.mmi_probe import ask_service
from workers.supervisor import SERVICE_ORDER, RestartSchedule, parse_sizing

__all__ = ["main"]

_FLAGS = {
    "--endpoint": "broker.endpoint",
    "--data": "store.data_dir",
    "--log-level": "log.level",
    "--log-format": "log.format",
}
BROKER_START = 10.0  # seconds the broker gets to answer before start-up fails
PROBE = 0.5  # seconds one MMI question may take
TICK = 0.1  # seconds between looks at the children


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cipherdrop-server",
        description="Run the cipherdrop broker and workers as one supervised server.",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    for flag, name in _FLAGS.items():
        metavar = {"--endpoint": "ENDPOINT", "--data": "DIR"}.get(flag, "VALUE")
        parser.add_argument(flag, dest=name, metavar=metavar, help=f"sets {name}")
    parser.add_argument(
        "--workers",
        default="",
        metavar="SIZING",
        help="worker counts, e.g. file=4,key=1,register=1 (default: file = cores, others 1)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long children get to exit before they are killed (default 10)",
    )
    return parser.parse_args(argv)


def _children(
    settings: Settings, config: str | None, bind: str, sizing: dict[str, int]
) -> list[Child]:
    """The broker first, then the workers in :data:`SERVICE_ORDER`."""
    common = ["--log-level", settings.log.level, "--log-format", settings.log.format]
    if config:
        common = ["--config", config, *common]
    children = [Child("broker", ["-m", "broker", "--endpoint", bind, *common])]
    data = str(settings.store.data_dir.resolve())
    for service in SERVICE_ORDER:
        for number in range(1, sizing[service] + 1):
            argv = ["-m", "workers", service, "--broker", connect_endpoint(bind), "--data", data]
            children.append(Child(f"{service}-{number}", [*argv, *common]))
    return children


class Supervisor:
    """Runs the children until ``stop`` is set; see the module docstring."""

    def __init__(self, children: list[Child], endpoint: str, stop_timeout: float) -> None:
        self.broker, self.workers = children[0], children[1:]
        self.endpoint = endpoint
        self.stop_timeout = stop_timeout
        self.schedule = RestartSchedule(child.name for child in children)
        self.log = structlog.get_logger()

    def _start(self, child: Child) -> None:
        pid = child.start()
        self.schedule.started(child.name, time.monotonic())
        self.log.info("child.started", child=child.name, pid=pid)

    def _broker_answers(self, stop: threading.Event) -> bool:
        deadline = time.monotonic() + BROKER_START
        while not stop.is_set() and time.monotonic() < deadline:
            if not self.broker.running():
                return False
            if ask_service(self.endpoint, SERVICES["register"], PROBE) is not None:
                return True
        return stop.is_set()

    def _services_ready(self) -> bool:
        wanted = {SERVICES[child.name.partition("-")[0]] for child in self.workers}
        return all(ask_service(self.endpoint, name, PROBE) == b"200" for name in wanted)

    def _reap(self) -> None:
        now = time.monotonic()
        for child in (self.broker, *self.workers):
            status = child.exit_status()
            if status is None or child.popen is None:
                continue
            delay = self.schedule.exited(child.name, now)
            self.log.warning(
                "child.exited", child=child.name, pid=child.pid, status=status, restart_in=delay
            )
            child.popen = None
        for name in self.schedule.due(now):
            self._start(next(c for c in (self.broker, *self.workers) if c.name == name))

    def run(self, stop: threading.Event, fingerprint: str) -> int:
        self._start(self.broker)
        if not self._broker_answers(stop):
            self.log.error("server.broker_failed", endpoint=self.endpoint)
            stop_all([self.broker], self.stop_timeout, threading.Event())
            return 1
        for child in self.workers if not stop.is_set() else ():
            self._start(child)
        ready = False
        while not stop.is_set():
            self._reap()
            if not ready and self._services_ready():
                ready = True
                self.log.info("server.ready", endpoint=self.endpoint, fingerprint=fingerprint)
            stop.wait(TICK)
        self.log.info("server.stopping")
        pause = threading.Event()
        killed = stop_all(self.workers, self.stop_timeout, pause)
        killed += stop_all([self.broker], self.stop_timeout, pause)
        self.log.info("server.stopped", killed=killed)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.stop_timeout <= 0:
            raise ConfigError("--stop-timeout must be greater than 0")
        flags = {name: vars(args)[name] for name in _FLAGS.values()}
        settings = load_settings(args.config, flags=flags)
        configure_logging(settings.log.level, settings.log.format)
        bind = resolve_bind_endpoint(settings.broker.endpoint)
        sizing = parse_sizing(args.workers, _cores())
        children = _children(settings, args.config, bind, sizing)
        server = open_server(settings)  # first start: data dir, keys, database
    except ConfigError as exc:
        print(f"cipherdrop-server: {exc}", file=sys.stderr)
        return 2
    except (StorageError, OSError) as exc:
        print(f"cipherdrop-server: {exc}", file=sys.stderr)
        return 1
    fingerprint = server.data.fingerprint
    server.store.close()
    print(f"server fingerprint: {fingerprint}", flush=True)
    structlog.get_logger().info(
        "server.starting",
        endpoint=bind,
        data_dir=str(server.data.path.resolve()),
        fingerprint=fingerprint,
        workers=sizing,
    )
    return Supervisor(children, connect_endpoint(bind), args.stop_timeout).run(stop, fingerprint)


if __name__ == "__main__":
    sys.exit(main())
