"""Logging set-up, done once per entry point.

Modules only call ``structlog.get_logger()``; entry points call :func:`configure_logging`.
On a terminal the output is coloured console lines, otherwise one JSON object per line,
always with an ISO-8601 UTC timestamp and the level. Log lines go to standard error so
that standard output stays free for a command's result.

Never pass key material or file contents to a logger: nothing here can redact them.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

from common.errors import ConfigError

LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error", "critical")


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for this process: level names from :data:`LEVELS`."""
    if level.lower() not in LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(LEVELS)}, got {level!r}")
    out = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
