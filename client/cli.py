"""The ``cipherdrop`` command line: its parser, and the one place errors become exit statuses.

:func:`main` parses the arguments, builds the settings once and runs one of the commands
of :mod:`client.commands`. Every failure ends here as one line on standard error and an
exit status from :class:`ExitStatus` (documented in ``docs/cli.md``); a traceback is
printed only with ``--debug``, for expected and unexpected errors alike. Standard output
carries only results (one summary line per file, the listing, ``whoami``), so scripts
can read it.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from client.commands import COMMANDS, STDIO
from client.identity import NotRegisteredError, ServerKeyMismatchError
from client.invocation import Invocation
from client.throttle import parse_rate
from common.errors import (
    CipherdropError,
    ConfigError,
    FileAccessError,
    IntegrityError,
    ProtocolError,
    RefusedError,
    TransportError,
)
from common.fields import INVITE_LEN
from common.keys import parse_fingerprint, typed_hex
from common.log import configure_logging
from common.memory import keep_freed_buffers
from common.messages import ErrorCode
from common.names import InvalidNameError
from config import Settings, load_settings

__all__ = ["ExitStatus", "build_parser", "exit_status_for", "main"]


class ExitStatus(enum.IntEnum):
    """Exit statuses of ``cipherdrop``; ``docs/cli.md`` documents each one."""

    OK = 0
    ERROR = 1  # anything not listed below (a bug, a malformed reply)
    USAGE = 2  # bad command line (argparse) or a name the protocol does not allow
    CONFIG = 3  # bad setting, config file, home directory or passphrase
    UNREACHABLE = 4  # no answer from the server, or no worker for the service
    NOT_REGISTERED = 5  # no identity in the home directory, or the server does not know it
    REFUSED = 6  # the server said no: name taken, bad proof, not found...
    FILE_ERROR = 7  # the local file is missing, unreadable or changed while read
    INTEGRITY = 8  # the upload could not be verified (CRC/size mismatch, tampered chunk)
    SERVER_KEY_MISMATCH = 9  # the server's key is not the pinned one
    INTERRUPTED = 130  # Ctrl-C


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The one mapping from an error to the exit status."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, ServerKeyMismatchError):
        return ExitStatus.SERVER_KEY_MISMATCH
    if isinstance(exc, NotRegisteredError):
        return ExitStatus.NOT_REGISTERED
    if isinstance(exc, InvalidNameError):
        return ExitStatus.USAGE
    if isinstance(exc, ConfigError):
        return ExitStatus.CONFIG
    if isinstance(exc, TransportError):
        return ExitStatus.UNREACHABLE
    if isinstance(exc, RefusedError):
        if exc.code == "503":
            return ExitStatus.UNREACHABLE
        if exc.code == ErrorCode.UNKNOWN_CLIENT:
            return ExitStatus.NOT_REGISTERED
        return ExitStatus.REFUSED
    if isinstance(exc, FileAccessError):
        return ExitStatus.FILE_ERROR
    if isinstance(exc, IntegrityError):
        return ExitStatus.INTEGRITY
    return ExitStatus.ERROR


def _message(exc: BaseException, endpoint: str | None) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, TransportError | RefusedError) and exit_status_for(exc) == 4:
        return f"cannot reach the server at {endpoint or '?'}: {exc}"
    if isinstance(exc, InvalidNameError):
        return f"invalid name: {exc}"
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}"
    if isinstance(exc, CipherdropError):
        return str(exc) or type(exc).__name__
    return f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)"


# --- the command line --------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    # Added to the main parser and every subcommand, so they work before or after it; on
    # subcommands the default is SUPPRESS so they do not erase a value given earlier.
    parser.add_argument("--config", type=Path, default=default, help="TOML settings file")
    parser.add_argument("--server", default=default, help="broker endpoint, tcp://HOST:PORT")
    parser.add_argument("--home", default=default, help="client home (CIPHERDROP_HOME)")
    parser.add_argument(
        "--debug", action="store_true", default=default or False, help="show tracebacks"
    )
    parser.add_argument(
        "--log-level",
        default=default,
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level (default: warning)",
    )


def _rate(text: str) -> int:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fingerprint(text: str) -> bytes:
    """A server fingerprint as ``fingerprint`` prints it (or in pairs, or without spaces)."""
    try:
        return parse_fingerprint(text)
    except ConfigError:
        raise argparse.ArgumentTypeError("a fingerprint is SHA256: and 64 hex digits") from None


def _invite_code(text: str) -> bytes:
    """An invite as ``cipherdrop-admin invite`` prints it: 32 hex digits."""
    code = typed_hex(text, INVITE_LEN)
    if code is None:
        raise argparse.ArgumentTypeError("an invite code is 32 hex digits")
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cipherdrop``."""
    parser = argparse.ArgumentParser(
        prog="cipherdrop", description="Encrypted file drop client. Exit statuses: docs/cli.md."
    )
    _global_options(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    reg = commands.add_parser("register", help="create an identity and register it")
    reg.add_argument("name", help="the client name to register")
    reg.add_argument("--server-fingerprint", help="expected server fingerprint (SHA256:...)")
    reg.add_argument("--passphrase", action="store_true", help="protect the private key")
    reg.add_argument(
        "--invite", type=_invite_code, metavar="CODE", help="the operator's invite code"
    )
    put = commands.add_parser("put", help="upload files")
    put.add_argument("files", type=Path, nargs="*", metavar="FILE", help="files to upload")
    put.add_argument(
        "--transfer-info",
        type=Path,
        metavar="PATH",
        help="the original client's transfer.info: server, name, file (register if needed)",
    )
    put.add_argument("-r", "--recursive", action="store_true", help="upload directories")
    put.add_argument("--name", help="name to store one file under (default: its name)")
    put.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="skip files put before and unchanged since (same size and modification time)",
    )
    put.add_argument(
        "--sha256",
        action=argparse.BooleanOptionalAction,
        help="also record each file's SHA-256 (shown by ls, checked by every get; more CPU;"
        " default: client.sha256, false)",
    )
    get = commands.add_parser("get", help="download files")
    get.add_argument("names", nargs="+", metavar="NAME", help="stored names to download")
    get.add_argument("-o", "--output", type=Path, help="file or directory to write to")
    get.add_argument("--force", action="store_true", help="replace existing files")
    get.add_argument(
        "-r", "--recursive", action="store_true", help="NAME and every file stored below NAME/"
    )
    get.add_argument(
        "--skip-unchanged",
        action="store_true",
        help="leave existing files that have the stored size and cksum CRC as they are",
    )
    for sub in (put, get):
        sub.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        sub.add_argument(
            "--limit-rate",
            type=_rate,
            metavar="RATE",
            help="at most RATE bytes per second on the wire (k, M, G: binary units)",
        )
        sub.add_argument("--verbose", "-v", action="store_true", help="chunk counts")
    ls = commands.add_parser("ls", help="list this client's files")
    ls.add_argument("names", nargs="*", metavar="NAME", help="only NAME and the files below NAME/")
    ls.add_argument("--json", action="store_true", help="JSON for scripts")
    ls.add_argument("--partial", action="store_true", help="list unfinished uploads instead")
    rm = commands.add_parser("rm", help="delete files")
    rm.add_argument("names", nargs="+", metavar="NAME", help="stored names to delete")
    rm.add_argument("-f", "--force", action="store_true", help="a missing name is no error")
    rm.add_argument(
        "-r", "--recursive", action="store_true", help="NAME and every file stored below NAME/"
    )
    rm.add_argument(
        "--partial", action="store_true", help="discard unfinished uploads of NAME instead"
    )
    mv = commands.add_parser("mv", help="rename a stored file")
    mv.add_argument("name", metavar="NAME", help="the stored file")
    mv.add_argument("new_name", metavar="NEW_NAME", help="its new name")
    mv.add_argument("-f", "--force", action="store_true", help="replace a file named NEW_NAME")
    rekey = commands.add_parser(
        "rekey", help="replace this client's key pair (both keys sign the change)"
    )
    phrase = commands.add_parser(
        "passphrase", help="put the private key under a new passphrase (local only)"
    )
    phrase.add_argument("--remove", action="store_true", help="leave the key without one")
    trust = commands.add_parser(
        "trust", help="pin the server's new key, given its fingerprint from its operator"
    )
    trust.add_argument(
        "fingerprint", type=_fingerprint, metavar="FINGERPRINT", help="SHA256:... as published"
    )
    commands.add_parser("whoami", help="show this client's identity")
    for sub in (put, get, ls, rm, mv, rekey):
        sub.add_argument("--passphrase", action="store_true", help="ask for the key's passphrase")
    for sub in commands.choices.values():
        _global_options(sub, argparse.SUPPRESS)
    return parser


def _settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    flags = {
        "client.server": args.server,
        "client.home": args.home,
        "log.level": args.log_level,
        "client.server_fingerprint": getattr(args, "server_fingerprint", None),
    }
    return load_settings(args.config, env, flags)


def _check_put_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """FILE arguments or --transfer-info, one of the two (argparse exits 2 otherwise);
    ``-`` (standard input) alone and with --name."""
    if args.transfer_info is None:
        if not args.files:
            parser.error("put: give FILE arguments or --transfer-info PATH")
        if STDIO in args.files and (len(args.files) > 1 or args.name is None or args.recursive):
            parser.error("put: - (standard input) goes alone, with --name and without -r")
        return
    clashes = [
        flag
        for flag, given in (
            ("FILE", bool(args.files)),
            ("--name", args.name is not None),
            ("--recursive", args.recursive),
            ("--server", args.server is not None),
        )
        if given
    ]
    if clashes:
        parser.error(f"put: --transfer-info names the server and the file; not with {clashes[0]}")


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``cipherdrop``; the exit status (argparse exits 2 itself on usage errors)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    environ = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_buffers()
    if args.command == "put":
        _check_put_usage(parser, args)
    if args.command == "get" and args.output == STDIO and (len(args.names) > 1 or args.recursive):
        parser.error("get: -o - (standard output) takes one NAME, without -r")
    ctx = Invocation(args, environ, out, err)
    try:
        settings = _settings(args, environ)
        # Logs are for diagnosis; a user command prints warnings and errors only by default.
        level = args.log_level or ("warning" if settings.log.level == "info" else None)
        configure_logging(level or settings.log.level, settings.log.format, err)
        COMMANDS[args.command](ctx, settings)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            traceback.print_exc(file=err)
        print(f"cipherdrop: error: {_message(exc, ctx.endpoint)}", file=err, flush=True)
        return exit_status_for(exc)
    return ExitStatus.OK


def run() -> int:
    """The ``cipherdrop`` command: :func:`main`, then leave without the interpreter's teardown.

    When :func:`main` returns, the command's work is finished: files written are fsynced
    and closed, every reply awaited has come. Python's own shutdown (freeing several
    hundred modules and their objects) then took about 65 ms more per command, a fifth of
    a small ``get``; so the process flushes its output and exits at once. Returns only if
    the output cannot be flushed (a closed pipe), for the interpreter's exit to report.
    """
    status = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        return status
    os._exit(status)
