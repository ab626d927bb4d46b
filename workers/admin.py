"""``cipherdrop-admin`` / ``python -m workers.admin``: the operator's commands.

``init``, ``fingerprint``, ``clients``, ``files [CLIENT]``, ``invite``, ``quota``,
``revoke CLIENT``, ``purge CLIENT``, ``rotate-master-key``, ``rotate-server-key``,
``backup PATH``, ``check`` and ``ping`` (a health check over MMI); ``docs/operations.md``
describes each. Settings come from the same sources as the server (``--config``,
``CIPHERDROP_*``, flags), so ``--data`` / ``CIPHERDROP_DATA`` name the data directory.

Every failure ends here as one line on standard error and an exit status from
:class:`ExitStatus`; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from common.errors import CipherdropError, ConfigError, IntegrityError, StorageError
from config import load_settings
from workers.admin_commands import (
    COMMANDS,
    CorruptionError,
    Invocation,
    NotFoundError,
    UnhealthyError,
)

__all__ = ["ExitStatus", "build_parser", "main"]


class ExitStatus(enum.IntEnum):
    """Exit statuses of ``cipherdrop-admin``."""

    OK = 0
    ERROR = 1  # anything unexpected
    USAGE = 2  # bad command line
    CONFIG = 3  # bad setting, no data directory, wrong master key, database in use
    STORAGE = 4  # the store failed (busy, damaged, disk)
    NOT_FOUND = 5  # no such client
    CORRUPT = 6  # check (or backup) found damaged files
    UNHEALTHY = 7  # ping: broker silent, or a service without workers
    INTERRUPTED = 130


_STATUS = (
    (UnhealthyError, ExitStatus.UNHEALTHY),
    (CorruptionError, ExitStatus.CORRUPT),
    (IntegrityError, ExitStatus.CORRUPT),
    (NotFoundError, ExitStatus.NOT_FOUND),
    (ConfigError, ExitStatus.CONFIG),
    (StorageError, ExitStatus.STORAGE),
    (CipherdropError, ExitStatus.ERROR),
)


def exit_status_for(exc: BaseException) -> ExitStatus:
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), ExitStatus.ERROR)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, CipherdropError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)"


def _seconds(most: float) -> Callable[[str], float]:
    """An argparse type: seconds, more than 0 and at most ``most``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be a number of seconds") from None
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(f"must be between 0 and {most:.0f} seconds")
        return value

    return parse


def _quota(text: str) -> int | str:
    if text == "default":
        return text
    if not (text.isascii() and text.isdigit()) or int(text) > 1 << 62:
        raise argparse.ArgumentTypeError("must be a number of bytes (0 to 2^62) or 'default'")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cipherdrop-admin", description="Administer a cipherdrop server's data directory."
    )
    parser.add_argument("--config", metavar="PATH", help="TOML settings file")
    parser.add_argument("--data", metavar="DIR", help="the data directory (store.data_dir)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("init", help="create the data directory, keys and database if missing")
    sub.add_parser("fingerprint", help="print the server fingerprint")
    listing = sub.add_parser("clients", help="list registered clients")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    files = sub.add_parser("files", help="list stored files (of one client)")
    files.add_argument("client", nargs="?", help="client name or id (hex)")
    files.add_argument("--json", action="store_true", help="one JSON object per line")
    invite = sub.add_parser("invite", help="make a one-time registration code")
    invite.add_argument(
        "--valid",
        type=_seconds(365 * 86400),
        default=7 * 86400.0,
        metavar="SECONDS",
        help="how long it may be used (default 7 days)",
    )
    limit = sub.add_parser("quota", help="show or set a client's quota")
    limit.add_argument("client", help="client name or id (hex)")
    limit.add_argument(
        "value",
        nargs="?",
        type=_quota,
        help="bytes (0: no limit), or 'default' for the server's store.quota",
    )
    revoke = sub.add_parser("revoke", help="revoke a client and end its sessions")
    revoke.add_argument("client", help="client name or id (hex)")
    purge = sub.add_parser("purge", help="delete a revoked client with all its files")
    purge.add_argument("client", help="client name or id (hex)")
    sub.add_parser("rotate-master-key", help="new master key; re-wrap stored keys (server off)")
    sub.add_parser(
        "rotate-server-key", help="new server key, endorsed by the previous one (server off)"
    )
    backup = sub.add_parser("backup", help="consistent online copy of database and contents")
    backup.add_argument("path", help="a new (or empty) directory")
    backup.add_argument(
        "--with-keys", action="store_true", help="also copy server_key.pem and the master key"
    )
    sub.add_parser("check", help="verify every stored file; non-zero exit on damage")
    ping = sub.add_parser("ping", help="ask the broker (MMI) whether services have workers")
    ping.add_argument("services", nargs="*", help="register, key, file or full service names")
    ping.add_argument("--broker", metavar="ENDPOINT", help="broker address (worker.broker)")
    ping.add_argument("--timeout", type=_seconds(3600), default=2.0, help="seconds (default 2)")
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``cipherdrop-admin``; the exit status (argparse exits 2 itself on usage errors)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    environ = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    try:
        flags = {"store.data_dir": args.data, "worker.broker": getattr(args, "broker", None)}
        settings = load_settings(args.config, environ, flags)
        return COMMANDS[args.command](Invocation(args, settings, environ, out, err))
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exc(file=err)
        print(f"cipherdrop-admin: error: {_message(exc)}", file=err, flush=True)
        return exit_status_for(exc)


if __name__ == "__main__":
    sys.exit(main())
