"""Logging set-up, done once per entry point, and the client's lazily loaded logger.

Server modules call ``structlog.get_logger()``; code on the path of a ``cipherdrop``
command calls :func:`get_logger`, the same logger with structlog loaded only when a line
is actually written. Importing structlog loads asyncio, ssl and logging: 50-65 ms of a
command's 0.3 s start-up (A/B runs), for a command that at its default level writes no
log line at all.
Entry points call :func:`configure_logging`: at once if structlog is loaded, otherwise
on the first line that passes the level (nothing below it loads structlog).

On a terminal the output is coloured console lines, otherwise one JSON object per line,
always with an ISO-8601 UTC timestamp and the level. Log lines go to standard error so
that standard output stays free for a command's result.

Never pass key material or file contents to a logger: nothing here can redact them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TextIO

from common.errors import ConfigError

if TYPE_CHECKING:
    from structlog.typing import BindableLogger

LogFormat = Literal["auto", "json", "console"]
# The level names and their numbers (the standard library's).
_NUMBERS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
LEVELS = tuple(_NUMBERS)

# (level number, set-up) of a configuration that waits for structlog to be needed.
_pending: tuple[int, Callable[[], None]] | None = None


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog for this process: level names from :data:`LEVELS`."""
    global _pending
    number = _NUMBERS.get(level.lower())
    if number is None:
        raise ConfigError(f"log.level: must be one of {', '.join(LEVELS)}, got {level!r}")
    out = stream if stream is not None else sys.stderr
    set_up = partial(_configure, number, fmt, out)
    if "structlog" in sys.modules:
        _pending = None
        set_up()
    else:
        _pending = (number, set_up)


def get_logger(**context: Any) -> Logger:
    """A logger with ``context`` bound; structlog is loaded on its first written line."""
    return Logger(context)


class Logger:
    """structlog's bound logger, for the methods this project calls, loaded on demand."""

    __slots__ = ("_context", "_proxy")

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = context
        self._proxy: BindableLogger | None = None

    def bind(self, **context: Any) -> Logger:
        return Logger({**self._context, **context})

    def debug(self, event: str, **fields: Any) -> None:
        self._write("debug", "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._write("info", "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._write("warning", "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._write("error", "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._write("error", "exception", event, fields)

    def _write(self, level: str, method: str, event: str, fields: dict[str, Any]) -> None:
        global _pending
        if _pending is not None:
            threshold, set_up = _pending
            if _NUMBERS[level] < threshold:
                return
            _pending = None
            set_up()
        if self._proxy is None:
            import structlog

            self._proxy = structlog.get_logger(**self._context)
        getattr(self._proxy, method)(event, **fields)


def _configure(level: int, fmt: LogFormat, out: TextIO) -> None:
    import structlog

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
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
