"""Converters that turn a raw setting value into a typed, checked one.

A raw value comes from a TOML file (already an ``int``, ``float``, ``str``...), from the
environment (always a ``str``) or from a command-line flag (either). Each converter
accepts all of these, returns the typed value, and is idempotent: converting its own
output gives the same output. On a bad value it raises :class:`Invalid` whose text is the
requirement ("must be an integer between 1 and 256"); the loader adds the setting's name,
where the value came from and the value itself.

Strings are parsed strictly (ASCII digits, no ``nan``/``inf``, no ``1_000``) so that a
value means the same thing here as it does to the person who typed it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError
from common.keys import parse_fingerprint

Check = Callable[[object], object]

_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_DECIMAL = re.compile(r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,3})?")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")
_TCP = re.compile(r"tcp://(?P<host>[^:/\s]+|\[[^\]\s]+\]):(?P<port>[0-9]{1,5}|\*)")
_IPC = re.compile(r"ipc://[^\s\x00]{1,200}")


class Invalid(ValueError):
    """A raw value does not meet its setting's requirement (the message says which)."""


def integer(low: int, high: int, step: int = 1) -> Check:
    """Whole numbers in ``low..high`` (and multiples of ``step``), from int or decimal text."""
    need = f"an integer between {low} and {high}"
    if step != 1:
        need = f"a multiple of {step} between {low} and {high}"

    def check(value: object) -> int:
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            value = int(value.strip())
        # bool is an int subclass: "chunk_size = true" must not read as 1.
        if type(value) is int and low <= value <= high and value % step == 0:
            return value
        raise Invalid(f"must be {need}")

    return check


def seconds(high: float) -> Check:
    """A duration in seconds: a finite number greater than 0 and at most ``high``."""

    def check(value: object) -> float:
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
            value = float(value.strip())
        # The range test also rejects nan and infinities; bool is no number of seconds.
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= high:
            return float(value)
        raise Invalid(f"must be a number of seconds greater than 0 and at most {high:g}")

    return check


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def boolean() -> Check:
    """True or false: a TOML boolean, or the words true/yes/on/1 and false/no/off/0 in any
    case (the environment only has text)."""

    def check(value: object) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise Invalid("must be true or false")

    return check


def choice(*options: str) -> Check:
    """One word out of ``options``, case-insensitive; returned in lower case."""
    listed = ", ".join(repr(option) for option in options)

    def check(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise Invalid(f"must be one of {listed}")

    return check


def endpoint(bind: bool) -> Check:
    """A ZeroMQ endpoint: ``tcp://host:port`` or ``ipc://path``.

    A bind address may use ``*`` as host (all interfaces) or port (any free port); a
    connect address needs a real host and port.
    """
    need = (
        "tcp://host:port, tcp://host:* or ipc://path" if bind else "tcp://host:port or ipc://path"
    )

    def check(value: object) -> str:
        if isinstance(value, str) and (_IPC.fullmatch(value) or _good_tcp(value, bind)):
            return value
        raise Invalid(f"must be an endpoint like {need}")

    return check


def _good_tcp(value: str, bind: bool) -> bool:
    match = _TCP.fullmatch(value)
    if match is None:
        return False
    host, port = match["host"], match["port"]
    host_ok = _HOST.fullmatch(host) is not None or (bind and host == "*")
    # Binding to port 0 or "*" picks a free port; connecting to one makes no sense.
    port_ok = (bind and port == "*") or (port != "*" and int(not bind) <= int(port) <= 65535)
    return host_ok and port_ok


def fingerprint(value: object) -> str:
    """Empty, or a server fingerprint as :func:`common.keys.fingerprint` shows it.

    Case, spaces, colons, dashes and the ``SHA256:`` prefix are tolerated; the result is
    64 lower-case hex digits, which :func:`common.keys.parse_fingerprint` reads back.
    """
    if isinstance(value, str):
        if value.strip() == "":
            return ""
        try:
            return parse_fingerprint(value).hex()
        except ConfigError:
            pass
    raise Invalid("must be empty (trust on first use) or 'SHA256:' and 64 hex digits")


def path(value: object) -> Path:
    """A file-system path; a leading ``~`` is expanded to the user's home directory."""
    if isinstance(value, str | Path):
        text = str(value)
        if text and "\x00" not in text:
            try:
                return Path(text).expanduser()
            except RuntimeError as exc:  # no home directory to expand "~" to
                raise Invalid("must be a path whose '~' can be expanded") from exc
    raise Invalid("must be a non-empty path")
