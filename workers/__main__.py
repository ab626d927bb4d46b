"""``python -m workers SERVICE`` / ``cipherdrop-worker SERVICE``: run one worker process.

SERVICE is ``register``, ``key`` or ``file``; run any number of each against one data
directory. The first start creates the data directory, the server key and the master key
(see docs/storage.md). One log line per request (service, type, client id prefix,
request id, outcome, milliseconds), never keys or contents. SIGINT or SIGTERM stop the
worker cleanly (exit 0); exit status 2 means a bad setting, 1 a store that cannot open.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import structlog
import zmq

from common.errors import ConfigError, StorageError
from common.log import configure_logging
from common.memory import keep_freed_buffers
from config import load_settings
from workers.app import SERVICES, build_service, open_server
from workers.loop import Handler, run_worker
from workers.runtime import BodyPart
from workers.service import Dispatcher

# Command-line flags and the settings they set; each overrides file and environment.
_FLAGS = {
    "--broker": "worker.broker",
    "--data": "store.data_dir",
    "--heartbeat-interval": "worker.heartbeat_interval",
    "--heartbeat-liveness": "worker.heartbeat_liveness",
    "--reconnect-min": "worker.reconnect_min",
    "--reconnect-max": "worker.reconnect_max",
    "--log-level": "log.level",
    "--log-format": "log.format",
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cipherdrop-worker", description="Run one cipherdrop worker process."
    )
    parser.add_argument("service", choices=sorted(SERVICES), help="the service to serve")
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    for flag, name in _FLAGS.items():
        metavar = {"--broker": "ENDPOINT", "--data": "DIR"}.get(flag, "VALUE")
        parser.add_argument(flag, dest=name, metavar=metavar, help=f"sets {name}")
    return parser.parse_args(argv)


def _handler(dispatcher: Dispatcher, service: str) -> Handler:
    log = structlog.get_logger().bind(service=service)

    def handle(frames: list[zmq.Frame]) -> list[BodyPart]:
        started = time.monotonic()
        handled = dispatcher.handle(frames, int(time.time() * 1000))
        # Successful chunk requests log at debug: one info line per chunk would be most of
        # the log (and of the logging cost) of a large upload.
        getattr(log, handled.level)(
            "request",
            type=handled.type,
            client=handled.client,
            request_id=handled.request_id,
            outcome=handled.outcome,
            ms=round((time.monotonic() - started) * 1000, 3),
        )
        if handled.error is not None:
            log.error("request.failed", exc_info=handled.error)
        return list(handled.frames)

    return handle


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    keep_freed_buffers()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Early, so a signal during start-up (first start makes an RSA key) still exits cleanly.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        settings = load_settings(
            args.config, flags={name: vars(args)[name] for name in _FLAGS.values()}
        )
        configure_logging(settings.log.level, settings.log.format)
        server = open_server(settings)
        dispatcher = build_service(args.service, server, settings)
    except ConfigError as exc:
        print(f"cipherdrop-worker: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"cipherdrop-worker: {exc}", file=sys.stderr)
        return 1
    conf = settings.worker
    structlog.get_logger().info(
        "worker.ready",
        service=SERVICES[args.service],
        broker=conf.broker,
        data_dir=str(server.data.path),
        fingerprint=server.data.fingerprint,
    )
    try:
        run_worker(
            conf.broker,
            SERVICES[args.service],
            _handler(dispatcher, SERVICES[args.service]),
            heartbeat_interval=conf.heartbeat_interval,
            heartbeat_liveness=conf.heartbeat_liveness,
            reconnect_min=conf.reconnect_min,
            reconnect_max=conf.reconnect_max,
            stop=stop,
            inline=dispatcher.runs_inline,
        )
    finally:
        server.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
