"""The original client's ``transfer.info``, read by ``cipherdrop put --transfer-info``.

The clients of the legacy protocol read a three-line file from their working directory;
reading the same file lets their users keep their workflow with the native client
(docs/cli.md)::

    line 1   host:port of the server   (here: the cipherdrop broker, not the gateway)
    line 2   the client name
    line 3   the path of the file to upload

Guarantees: :func:`read_transfer_info` returns a :class:`TransferInfo` only with a
``tcp://host:port`` endpoint (port 1..65535), a client name valid by the protocol's rules
(docs/protocol.md 3.1) and a path to a regular file this process can open for reading.
Anything else -- a missing or extra line, a bad ``host:port``, a bad name, a file that
cannot be read -- is one :class:`~common.errors.ConfigError` naming the file, the line and
what is wrong. Surrounding whitespace and Windows line endings are ignored on every line,
as are blank lines at the end; a path wrapped in double quotes loses one pair (some
originals write it so); a relative path is relative to the ``transfer.info``'s directory.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError
from common.names import InvalidNameError, validate_client_name

__all__ = ["TransferInfo", "parse_transfer_info", "read_transfer_info"]

MAX_SIZE = 64 * 1024  # three short lines; anything larger is not a transfer.info
_LINES = ("host:port", "client name", "file path")
# A host name or IPv4 address, or an IPv6 address in brackets; then a decimal port.
_HOST_PORT = re.compile(
    r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r":(?P<port>[0-9]{1,5})"
)


@dataclass(frozen=True, slots=True)
class TransferInfo:
    """What ``transfer.info`` asks for: register or reconnect ``name`` at ``endpoint``,
    then upload ``path``."""

    endpoint: str
    name: str
    path: Path


def parse_transfer_info(text: str, where: Path) -> TransferInfo:
    """Check the three lines of ``text``; ``where`` is the file (for messages and paths)."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < len(_LINES):
        missing = len(lines) + 1
        raise ConfigError(f"{where}: line {missing} ({_LINES[missing - 1]}) is missing")
    if len(lines) > len(_LINES):
        raise ConfigError(f"{where}: line 4: unexpected, the file has exactly 3 lines")
    endpoint = _endpoint(lines[0], where)
    try:
        name = validate_client_name(lines[1], "name")
    except InvalidNameError as exc:
        raise ConfigError(f"{where}: line 2 (client name): {exc}") from None
    raw = lines[2]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    if not raw or "\0" in raw:
        raise ConfigError(f"{where}: line 3 (file path) is empty or not a path")
    return TransferInfo(endpoint, name, where.parent / Path(raw).expanduser())


def read_transfer_info(path: Path) -> TransferInfo:
    """Read and check ``path``, including that the file it names can be read."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SIZE:
        raise ConfigError(f"{path}: larger than {MAX_SIZE} bytes, not a transfer.info file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    info = parse_transfer_info(text, path)
    _check_readable(info.path, path)
    return info


def _endpoint(text: str, where: Path) -> str:
    match = _HOST_PORT.fullmatch(text)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{where}: line 1 (host:port): {text!r} is not a host and a port 1-65535")
    return f"tcp://{match['host']}:{int(match['port'])}"


def _check_readable(target: Path, where: Path) -> None:
    problem = f"{where}: line 3 (file path)"
    try:
        regular = stat.S_ISREG(target.stat().st_mode)  # before opening: a FIFO would block
        if regular:
            with target.open("rb"):
                pass
    except OSError as exc:
        raise ConfigError(f"{problem}: cannot read {target}: {exc.strerror or exc}") from None
    if not regular:
        raise ConfigError(f"{problem}: {target} is not a regular file")
