"""``python -m broker`` / ``cipherdrop-broker``: run the Majordomo broker.

The first log line is ``broker.listening`` with the endpoint actually bound (so a
``tcp://127.0.0.1:*`` endpoint reveals its port); SIGINT or SIGTERM stop the broker
cleanly with exit status 0 after a ``broker.stopped`` line. Exit status 2 means a bad
setting, 1 that the endpoint could not be bound.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import structlog

from common.errors import ConfigError
from common.log import configure_logging
from common.memory import keep_freed_buffers
from config import load_settings

from .core import Broker
from .server import BrokerServer

# Command-line flags and the settings they set; each overrides file and environment.
_FLAGS = {
    "--endpoint": "broker.endpoint",
    "--heartbeat-interval": "broker.heartbeat_interval",
    "--heartbeat-liveness": "broker.heartbeat_liveness",
    "--request-expiry": "broker.request_expiry",
    "--queue-per-service": "broker.queue_per_service",
    "--queue-total": "broker.queue_total",
    "--max-message-size": "broker.max_message_size",
    "--hwm": "broker.hwm",
    "--log-level": "log.level",
    "--log-format": "log.format",
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cipherdrop-broker", description="Run the cipherdrop Majordomo broker."
    )
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    for flag, name in _FLAGS.items():
        parser.add_argument(flag, dest=name, metavar="VALUE", help=f"sets {name}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    keep_freed_buffers()
    try:
        settings = load_settings(
            args.config, flags={name: vars(args)[name] for name in _FLAGS.values()}
        )
        conf = settings.broker
        core = Broker(
            heartbeat_interval=conf.heartbeat_interval,
            heartbeat_liveness=conf.heartbeat_liveness,
            request_expiry=conf.request_expiry,
            queue_per_service=conf.queue_per_service,
            queue_total=conf.queue_total,
        )
    except ConfigError as exc:
        print(f"cipherdrop-broker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log.level, settings.log.format)
    log = structlog.get_logger()
    server = BrokerServer(core, conf.endpoint, hwm=conf.hwm, max_message_size=conf.max_message_size)
    try:
        endpoint = server.bind()
    except ConfigError as exc:
        log.error("broker.bind_failed", endpoint=conf.endpoint, error=str(exc))
        server.close()
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info("broker.listening", endpoint=endpoint)
    try:
        server.run()
    finally:
        server.close()
    log.info("broker.stopped", **server.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
