"""The commands of ``cipherdrop``: register, put, get (ls, rm and mv are in
:mod:`client.manage`; rekey, passphrase, trust and whoami in :mod:`client.account`).

Each command is a function of the invocation (parsed arguments, environment, output
streams) and the settings. Results go to standard output, one line per file done, so a
command over several files that stops at the first failure has listed the ones before
it; progress and notices go to standard error. Failures are raised, never printed:
:func:`client.cli.main` turns each into one line and an exit status. A command that
talks to the server uses the registered identity's pinned key whichever endpoint it
reaches (docs/cli.md, "Which server").

The upload and download pipelines are imported by ``put`` and ``get`` when they run: a
command loads only what it uses and starts sooner (``ls`` loads neither pipeline; ``put``
does without the download's ``concurrent.futures`` and ``logging``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, TextIO

from client.account import passphrase, rekey, trust, whoami
from client.connection import Account, Connection, register
from client.identity import (
    IDENTITY_FILE,
    Identity,
    load_identity,
)
from client.invocation import (
    Invocation,
    ask_passphrase,
    open_account,
    transport_options,
)
from client.listing import list_files
from client.manage import ls, mv, rm
from client.parallel import Job, each
from client.progress import Progress, make_progress
from client.sources import download_targets, names_below, tree_names, upload_sources
from client.transfer_info import read_transfer_info
from common.errors import ConfigError, FileAccessError
from common.messages import Codec
from common.names import validate_client_name, validate_file_name
from config import Settings

if TYPE_CHECKING:
    from client.download import DownloadOptions, DownloadResult
    from client.upload import UploadOptions, UploadResult

__all__ = ["COMMANDS", "STDIO"]

STDIO = Path("-")  # as FILE of put, or PATH of get -o: standard input or output
_COPY_BLOCK = 1024 * 1024


def _register(ctx: Invocation, settings: Settings) -> None:
    name = validate_client_name(ctx.args.name)
    identity = _new_identity(ctx, settings, name, settings.client.server)
    print(f"registered {identity.name} as {identity.client_id.hex()}", file=ctx.out)


def _new_identity(ctx: Invocation, settings: Settings, name: str, endpoint: str) -> Identity:
    """Register ``name`` at ``endpoint`` into an empty home (TOFU or the configured pin)."""
    home = settings.client.home
    if (home / IDENTITY_FILE).exists():
        current = load_identity(home)
        raise ConfigError(
            f"{home} already holds the identity {current.name!r}; use --home for another one"
        )
    ctx.passphrase = ask_passphrase(ctx.env, ctx.args.passphrase, False, True, ctx.err)
    ctx.endpoint = endpoint
    conn = Connection(endpoint, transport_options(settings))
    try:
        return register(
            conn,
            home,
            name,
            server_fingerprint=settings.client.server_fingerprint or None,
            rsa_bits=settings.crypto.rsa_bits,
            passphrase=ctx.passphrase,
            invite=getattr(ctx.args, "invite", None) or b"",
            on_event=ctx.say,
        )
    finally:
        conn.close()


def _put(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    if args.transfer_info is not None:
        _upload(ctx, settings, *_from_transfer_info(ctx, settings, args.transfer_info))
    elif args.files == [STDIO]:
        name = validate_file_name(args.name)
        if sys.stdin.isatty():  # nothing piped in: waiting for a typed end of file helps no one
            raise FileAccessError("put -: standard input is a terminal; pipe the data in")
        with _spooled(sys.stdin.buffer) as path:
            _upload(ctx, settings, None, [(path, name)])
    else:
        sources = upload_sources(args.files, recursive=args.recursive, name=args.name)
        _upload(ctx, settings, None, sources)


@contextmanager
def _spooled(stream: BinaryIO) -> Iterator[Path]:
    """``stream`` copied whole into a private temporary file (mode 0600, removed after):
    an upload states its exact size before its first chunk."""
    with tempfile.NamedTemporaryFile(prefix="cipherdrop-stdin-") as spool:
        shutil.copyfileobj(stream, spool, _COPY_BLOCK)
        spool.flush()
        yield Path(spool.name)


def _upload(
    ctx: Invocation, settings: Settings, endpoint: str | None, sources: list[tuple[Path, str]]
) -> None:
    from client.upload import UploadOptions, open_source

    args = ctx.args
    jobs: list[Job[tuple[Path, str]]] = []
    for number, (path, name) in enumerate(sources, 1):  # a missing file fails here, early
        stream, size = open_source(path)
        stream.close()
        jobs.append(Job(number, name, size, (path, name)))
    options = UploadOptions(
        chunk_size=settings.client.chunk_size,
        compression=Codec.NONE if settings.client.compression == "none" else Codec.ZLIB,
        level=settings.client.compression_level,
        rate=args.limit_rate,
        sha256=settings.client.sha256 if args.sha256 is None else args.sha256,
    )
    with open_account(ctx, settings, endpoint) as account:
        put = _Put(ctx, account, options, args.skip_unchanged)
        each(
            account,
            jobs,
            put.one,
            lanes=_lanes(ctx, settings),
            chunk_size=options.chunk_size,
            quiet=args.quiet,
            stream=ctx.err,
        )


def _lanes(ctx: Invocation, settings: Settings) -> int:
    """How many files of one chunk or less go at once (client/parallel.py): one if a rate
    is set, since each transfer paces itself and lanes would add up past the limit."""
    return 1 if ctx.args.limit_rate is not None else settings.client.parallel_files


_SAYING = threading.Lock()  # lines from several threads come out whole


def _checks(result: UploadResult | DownloadResult) -> str:
    """What a transfer was checked against: its CRC, and its SHA-256 where one is recorded."""
    if result.sha256 is None:
        return f"cksum {result.crc}"
    return f"cksum {result.crc}  sha256 {result.sha256.hex()}"


def _say(stream: TextIO, line: str) -> None:
    with _SAYING:
        print(line, file=stream, flush=True)


class _Put:
    """Uploads one file for whichever thread calls it."""

    def __init__(
        self, ctx: Invocation, account: Account, options: UploadOptions, skip_unchanged: bool
    ) -> None:
        self.out, self.options = ctx.out, options
        self.stored = (
            {info.name: info.source for info in list_files(account)} if skip_unchanged else {}
        )

    def one(self, account: Account, file: tuple[Path, str], progress: Progress) -> None:
        from client.upload import open_source, unchanged, upload_file

        path, name = file
        stream, size = open_source(path)
        with stream:
            if unchanged(account, stream, self.stored.get(name)):
                _say(self.out, f"{name}  {size} bytes  unchanged, skipped")
                return
            result = upload_file(account, stream, size, name, self.options, progress)
        _say(self.out, f"{result.name}  {result.size} bytes  {_checks(result)}  verified")


def _from_transfer_info(
    ctx: Invocation, settings: Settings, path: Path
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


def _get(ctx: Invocation, settings: Settings) -> None:
    from client.download import DownloadOptions

    args = ctx.args
    if args.output == STDIO:
        _get_to_stdout(ctx, settings)
        return
    # With -r the names to fetch are known once the listing is in; the trees are checked now.
    trees = tree_names(args.names) if args.recursive else None
    targets = [] if trees is not None else download_targets(args.names, args.output)
    # Replies are consumed in chunk order, so one slow chunk holds the others back: a
    # deeper pipeline than the upload's keeps the server busy (memory: 2 x window chunks).
    options = DownloadOptions(
        force=args.force,
        window=2 * settings.client.window,
        skip_unchanged=args.skip_unchanged,
        rate=args.limit_rate,
    )
    with open_account(ctx, settings) as account:
        # With several names the listing tells their sizes: the small ones go together.
        listed = trees is not None or (len(targets) > 1 and _lanes(ctx, settings) > 1)
        sizes = {info.name: info.size for info in list_files(account)} if listed else {}
        if trees is not None:
            targets = _into(names_below(trees, list(sizes), missing_ok=False), args.output)
        jobs = [
            Job(number, name, sizes.get(name), (name, target))
            for number, (name, target) in enumerate(targets, 1)
        ]
        each(
            account,
            jobs,
            _Get(ctx, options).one,
            lanes=_lanes(ctx, settings),
            chunk_size=settings.client.chunk_size,
            quiet=args.quiet,
            stream=ctx.err,
        )


class _Get:
    """Downloads one file for whichever thread calls it."""

    def __init__(self, ctx: Invocation, options: DownloadOptions) -> None:
        self.ctx, self.options = ctx, options

    def one(self, account: Account, file: tuple[str, Path], progress: Progress) -> None:
        from client.download import download_file
        from client.partial import part_paths

        (name, target), out, err = file, self.ctx.out, self.ctx.err
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            result = download_file(account, name, target, self.options, progress)
        except (Exception, KeyboardInterrupt):
            if part_paths(target)[1].exists():
                _say(err, f"{name}: partial download kept; run again to resume")
            raise
        if result.unchanged:
            _say(out, f"{result.path}  {result.size} bytes  unchanged, skipped")
            return
        if self.ctx.args.verbose:
            _say(
                err,
                f"{name}: received {result.fetched} of {result.chunks} chunks"
                f" ({result.resumed} already here)",
            )
        _say(out, f"{result.path}  {result.size} bytes  {_checks(result)}  verified")


def _get_to_stdout(ctx: Invocation, settings: Settings) -> None:
    """``get NAME -o -``: download into a private temporary directory, and only once the
    file is verified, copy it to standard output. A consumer never sees bytes that failed
    a check; such a download does not resume."""
    from client.download import DownloadOptions, download_file

    name = validate_file_name(ctx.args.names[0])
    options = DownloadOptions(window=2 * settings.client.window, rate=ctx.args.limit_rate)
    with tempfile.TemporaryDirectory(prefix="cipherdrop-get-") as work:
        with open_account(ctx, settings) as account:
            progress = make_progress(0, name, quiet=ctx.args.quiet, stream=ctx.err)
            try:
                result = download_file(account, name, Path(work) / "file", options, progress)
            finally:
                progress.close()
        ctx.out.flush()
        with result.path.open("rb") as data:
            shutil.copyfileobj(data, ctx.out.buffer, _COPY_BLOCK)
        ctx.out.buffer.flush()
    ctx.say(f"{name}  {result.size} bytes  {_checks(result)}  verified, on standard output")


def _into(names: list[str], output: Path | None) -> list[tuple[str, Path]]:
    """``get -r``: ``names`` written below ``output`` (a directory, created if missing)."""
    if output is not None:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise FileAccessError(f"cannot make the directory {output}: {reason}") from exc
    return download_targets(names, output)


COMMANDS: dict[str, Callable[[Invocation, Settings], None]] = {
    "register": _register,
    "put": _put,
    "get": _get,
    "ls": ls,
    "rm": rm,
    "mv": mv,
    "passphrase": passphrase,
    "rekey": rekey,
    "trust": trust,
    "whoami": whoami,
}
