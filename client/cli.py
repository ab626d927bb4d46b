"""The ``cipherdrop`` command: register, put, get, ls, rm, whoami.

Every failure ends in :func:`main` as one line on standard error and an exit status from
:class:`ExitStatus` (documented in ``docs/cli.md``); a traceback is printed only with
``--debug``, for expected and unexpected errors alike. Standard output carries only
results (one summary line per file, the listing, ``whoami``), so scripts can read it.
Commands over several files stop at the first failure; the files done before it are
listed on standard output.
"""

from __future__ import annotations

import argparse
import enum
import getpass
import os
import sys
import tomllib
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from client.connection import Account, Connection, TransportOptions, register
from client.download import DownloadOptions, download_file
from client.identity import (
    IDENTITY_FILE,
    Identity,
    NotRegisteredError,
    ServerKeyMismatchError,
    is_encrypted_pem,
    load_identity,
    load_private_key,
)
from client.listing import delete_file, format_table, list_files, to_json
from client.partial import part_paths
from client.progress import make_progress
from client.sources import download_targets, upload_sources
from client.transfer_info import read_transfer_info
from client.upload import FileAccessError, UploadOptions, open_source, upload_file
from common.errors import (
    CipherdropError,
    ConfigError,
    IntegrityError,
    ProtocolError,
    RefusedError,
    TransportError,
)
from common.log import configure_logging
from common.messages import Codec, ErrorCode
from common.names import InvalidNameError, validate_client_name
from config import Settings, load_settings
from config.settings import CONFIG_VARIABLE, env_name

__all__ = ["ExitStatus", "build_parser", "exit_status_for", "main"]

PASSPHRASE_VARIABLE = "CIPHERDROP_PASSPHRASE"  # noqa: S105 (a variable name)


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
    get = commands.add_parser("get", help="download files")
    get.add_argument("names", nargs="+", metavar="NAME", help="stored names to download")
    get.add_argument("-o", "--output", type=Path, help="file or directory to write to")
    get.add_argument("--force", action="store_true", help="replace existing files")
    for sub in (put, get):
        sub.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
        sub.add_argument("--verbose", "-v", action="store_true", help="chunk counts")
    ls = commands.add_parser("ls", help="list this client's files")
    ls.add_argument("--json", action="store_true", help="JSON for scripts")
    rm = commands.add_parser("rm", help="delete files")
    rm.add_argument("names", nargs="+", metavar="NAME", help="stored names to delete")
    rm.add_argument("-f", "--force", action="store_true", help="a missing name is no error")
    commands.add_parser("whoami", help="show this client's identity")
    for sub in (put, get, ls, rm):
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


def _explicit_server(
    args: argparse.Namespace, env: Mapping[str, str], settings: Settings
) -> str | None:
    """``client.server`` if it was given on purpose (flag, environment or config file).

    Only then does it override the endpoint an identity saved at registration; the
    default endpoint never does.
    """
    if args.server or env_name("client.server") in env:
        return settings.client.server
    config = args.config or env.get(CONFIG_VARIABLE)
    if config and _config_sets_server(Path(config)):
        return settings.client.server
    return None


def _config_sets_server(path: Path) -> bool:
    # load_settings has read and checked this file already; only the key's presence is new.
    try:
        with path.open("rb") as stream:
            table = tomllib.load(stream).get("client")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    return isinstance(table, dict) and "server" in table


def _passphrase(
    env: Mapping[str, str], asked: bool, needed: bool, confirm: bool, stderr: TextIO
) -> str | None:
    if env.get(PASSPHRASE_VARIABLE):
        return env[PASSPHRASE_VARIABLE]
    if not (asked or needed):
        return None
    if not sys.stdin.isatty():
        raise ConfigError(f"a passphrase is needed: set {PASSPHRASE_VARIABLE} or use a terminal")
    first = getpass.getpass("passphrase for the private key: ", stream=stderr)
    if confirm and getpass.getpass("again: ", stream=stderr) != first:
        raise ConfigError("the two passphrases differ")
    if not first:
        raise ConfigError("empty passphrase")
    return first


def _options(settings: Settings) -> TransportOptions:
    c = settings.client
    return TransportOptions(timeout=c.request_timeout, retries=c.retries, window=c.window)


# --- the commands ------------------------------------------------------------------------


class _Context:
    def __init__(
        self, args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO
    ) -> None:
        self.args, self.env, self.out, self.err = args, env, out, err
        self.endpoint: str | None = None
        self.passphrase: str | None = None  # once asked, not asked again in this run

    def say(self, text: str) -> None:
        if not getattr(self.args, "quiet", False):
            print(text, file=self.err, flush=True)


def _register(ctx: _Context, settings: Settings) -> None:
    name = validate_client_name(ctx.args.name)
    identity = _new_identity(ctx, settings, name, settings.client.server)
    print(f"registered {identity.name} as {identity.client_id.hex()}", file=ctx.out)


def _new_identity(ctx: _Context, settings: Settings, name: str, endpoint: str) -> Identity:
    """Register ``name`` at ``endpoint`` into an empty home (TOFU or the configured pin)."""
    home = settings.client.home
    if (home / IDENTITY_FILE).exists():
        current = load_identity(home)
        raise ConfigError(
            f"{home} already holds the identity {current.name!r}; use --home for another one"
        )
    ctx.passphrase = _passphrase(ctx.env, ctx.args.passphrase, False, True, ctx.err)
    ctx.endpoint = endpoint
    conn = Connection(endpoint, _options(settings))
    try:
        return register(
            conn,
            home,
            name,
            server_fingerprint=settings.client.server_fingerprint or None,
            rsa_bits=settings.crypto.rsa_bits,
            passphrase=ctx.passphrase,
            on_event=ctx.say,
        )
    finally:
        conn.close()


@contextmanager
def _account(ctx: _Context, settings: Settings, endpoint: str | None = None) -> Iterator[Account]:
    """The registered client on a connection to its pinned server.

    The endpoint is ``endpoint`` if given (``transfer.info``), else ``client.server`` if
    it was set on purpose (flag, environment, config file), else the one the identity
    saved at registration. Whichever it is, the server there must present the key the
    identity registered with (docs/cli.md, "Which server").
    """
    home = settings.client.home
    identity = load_identity(home)
    if ctx.passphrase is None:
        needed = is_encrypted_pem(home)
        ctx.passphrase = _passphrase(ctx.env, ctx.args.passphrase, needed, False, ctx.err)
    private_key = load_private_key(home, ctx.passphrase)
    ctx.endpoint = endpoint or _explicit_server(ctx.args, ctx.env, settings) or identity.server
    conn = Connection(ctx.endpoint, _options(settings))
    try:
        server_key, _ = conn.pinned_server_key(home, identity.server_fingerprint)
        yield Account(conn, identity, private_key, server_key)
    finally:
        conn.close()


def _put(ctx: _Context, settings: Settings) -> None:
    args = ctx.args
    endpoint = None
    if args.transfer_info is not None:
        endpoint, sources = _from_transfer_info(ctx, settings, args.transfer_info)
    else:
        sources = upload_sources(args.files, recursive=args.recursive, name=args.name)
    for path, _ in sources:  # a missing file fails before any network traffic
        open_source(path)[0].close()
    options = UploadOptions(
        chunk_size=settings.client.chunk_size,
        compression=Codec.NONE if settings.client.compression == "none" else Codec.ZLIB,
        level=settings.client.compression_level,
    )
    with _account(ctx, settings, endpoint) as account:
        for path, name in sources:
            stream, size = open_source(path)
            with stream:
                progress = make_progress(size, name, quiet=args.quiet, stream=ctx.err)
                try:
                    result = upload_file(account, stream, size, name, options, progress)
                finally:
                    progress.close()
            line = f"{result.name}  {result.size} bytes  cksum {result.crc}  verified"
            print(line, file=ctx.out, flush=True)


def _from_transfer_info(
    ctx: _Context, settings: Settings, path: Path
) -> tuple[str, list[tuple[Path, str]]]:
    """The original client's workflow: register the name if this home has no identity,
    else check it is this identity; the endpoint and the one file to upload."""
    info = read_transfer_info(path)
    home = settings.client.home
    if (home / IDENTITY_FILE).exists():
        identity = load_identity(home)
        if identity.name != info.name:
            raise ConfigError(
                f"{path} names {info.name!r} but {home} holds the identity"
                f" {identity.name!r}; use --home for another one"
            )
    else:
        identity = _new_identity(ctx, settings, info.name, info.endpoint)
        ctx.say(f"registered {identity.name} as {identity.client_id.hex()}")
    return info.endpoint, upload_sources([info.path], recursive=False, name=None)


def _get(ctx: _Context, settings: Settings) -> None:
    args = ctx.args
    targets = download_targets(args.names, args.output)
    # Replies are consumed in chunk order, so one slow chunk holds the others back: a
    # deeper pipeline than the upload's keeps the server busy (memory: 2 x window chunks).
    options = DownloadOptions(force=args.force, window=2 * settings.client.window)
    with _account(ctx, settings) as account:
        for name, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            progress = make_progress(0, name, quiet=args.quiet, stream=ctx.err)
            try:
                result = download_file(account, name, target, options, progress)
            except (Exception, KeyboardInterrupt):
                if part_paths(target)[1].exists():
                    print(f"{name}: partial download kept; run again to resume", file=ctx.err)
                raise
            finally:
                progress.close()
            if args.verbose:
                print(
                    f"{name}: received {result.fetched} of {result.chunks} chunks"
                    f" ({result.resumed} already here)",
                    file=ctx.err,
                )
            line = f"{result.path}  {result.size} bytes  cksum {result.crc}  verified"
            print(line, file=ctx.out, flush=True)


def _ls(ctx: _Context, settings: Settings) -> None:
    with _account(ctx, settings) as account:
        files = list_files(account)
    print(to_json(files) if ctx.args.json else format_table(files), file=ctx.out)


def _rm(ctx: _Context, settings: Settings) -> None:
    with _account(ctx, settings) as account:
        for name in ctx.args.names:
            if delete_file(account, name):
                print(f"{name}  deleted", file=ctx.out, flush=True)
            elif not ctx.args.force:
                raise RefusedError(str(ErrorCode.NOT_FOUND), f"no such file: {name}")


def _whoami(ctx: _Context, settings: Settings) -> None:
    identity = load_identity(settings.client.home)
    print(f"name         {identity.name}", file=ctx.out)
    print(f"client id    {identity.client_id.hex()}", file=ctx.out)
    print(f"server       {identity.server}", file=ctx.out)
    print(f"fingerprint  {identity.server_fingerprint}", file=ctx.out)
    print(f"home         {identity.home}", file=ctx.out)


COMMANDS: dict[str, Callable[[_Context, Settings], None]] = {
    "register": _register,
    "put": _put,
    "get": _get,
    "ls": _ls,
    "rm": _rm,
    "whoami": _whoami,
}


def _check_put_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """FILE arguments or --transfer-info, one of the two (argparse exits 2 otherwise)."""
    if args.transfer_info is None:
        if not args.files:
            parser.error("put: give FILE arguments or --transfer-info PATH")
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
    if args.command == "put":
        _check_put_usage(parser, args)
    ctx = _Context(args, environ, out, err)
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
