"""The commands of ``cipherdrop``: register, put, get, ls, rm, whoami.

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

import argparse
import getpass
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

from client.connection import Account, Connection, TransportOptions, register
from client.identity import (
    IDENTITY_FILE,
    Identity,
    is_encrypted_pem,
    load_identity,
    load_private_key,
)
from client.listing import (
    delete_file,
    discard_upload,
    format_size,
    format_table,
    format_unfinished,
    list_files,
    list_unfinished,
    rename_file,
    to_json,
    unfinished_to_json,
)
from client.progress import make_progress, progress_label
from client.sources import download_targets, stored_below, tree_names, upload_sources
from client.transfer_info import read_transfer_info
from common.errors import ConfigError, FileAccessError, RefusedError
from common.messages import Codec, ErrorCode, FileInfo, UploadInfo
from common.names import validate_client_name, validate_file_name
from config import Settings

__all__ = ["COMMANDS", "PASSPHRASE_VARIABLE", "Invocation"]

PASSPHRASE_VARIABLE = "CIPHERDROP_PASSPHRASE"  # noqa: S105 (a variable name)


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


def _explicit_server(settings: Settings) -> str | None:
    """``client.server`` if it was given on purpose (flag, environment or config file).

    Only then does it override the endpoint an identity saved at registration; the
    default endpoint never does.
    """
    return settings.client.server if "client.server" in settings.given else None


def _options(settings: Settings) -> TransportOptions:
    c = settings.client
    return TransportOptions(timeout=c.request_timeout, retries=c.retries, window=c.window)


STDIO = Path("-")  # as FILE of put, or PATH of get -o: standard input or output
_COPY_BLOCK = 1024 * 1024
Listed = TypeVar("Listed", FileInfo, UploadInfo)


class Invocation:
    """One run of a command: its arguments, environment and streams, and what it learnt."""

    def __init__(
        self, args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO
    ) -> None:
        self.args, self.env, self.out, self.err = args, env, out, err
        self.endpoint: str | None = None
        self.passphrase: str | None = None  # once asked, not asked again in this run

    def say(self, text: str) -> None:
        if not getattr(self.args, "quiet", False):
            print(text, file=self.err, flush=True)


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
def _account(ctx: Invocation, settings: Settings, endpoint: str | None = None) -> Iterator[Account]:
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
    ctx.endpoint = endpoint or _explicit_server(settings) or identity.server
    conn = Connection(ctx.endpoint, _options(settings))
    try:
        server_key, _ = conn.pinned_server_key(home, identity.server_fingerprint)
        yield Account(conn, identity, private_key, server_key)
    finally:
        conn.close()


def _put(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    if args.transfer_info is not None:
        _upload(ctx, settings, *_from_transfer_info(ctx, settings, args.transfer_info))
    elif args.files == [STDIO]:
        name = validate_file_name(args.name)
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
    from client.upload import UploadOptions, open_source, unchanged, upload_file

    args = ctx.args
    for path, _ in sources:  # a missing file fails before any network traffic
        open_source(path)[0].close()
    options = UploadOptions(
        chunk_size=settings.client.chunk_size,
        compression=Codec.NONE if settings.client.compression == "none" else Codec.ZLIB,
        level=settings.client.compression_level,
    )
    with _account(ctx, settings, endpoint) as account:
        stored = (
            {info.name: info.source for info in list_files(account)} if args.skip_unchanged else {}
        )
        for number, (path, name) in enumerate(sources, 1):
            stream, size = open_source(path)
            with stream:
                if unchanged(account, stream, stored.get(name)):
                    print(f"{name}  {size} bytes  unchanged, skipped", file=ctx.out, flush=True)
                    continue
                label = progress_label(name, number, len(sources))
                progress = make_progress(size, label, quiet=args.quiet, stream=ctx.err)
                try:
                    result = upload_file(account, stream, size, name, options, progress)
                finally:
                    progress.close()
            line = f"{result.name}  {result.size} bytes  cksum {result.crc}  verified"
            print(line, file=ctx.out, flush=True)


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
    from client.download import DownloadOptions, download_file
    from client.partial import part_paths

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
    )
    with _account(ctx, settings) as account:
        if trees is not None:
            stored = [info.name for info in list_files(account)]
            targets = _into(_below(trees, stored, missing_ok=False), args.output)
        for number, (name, target) in enumerate(targets, 1):
            target.parent.mkdir(parents=True, exist_ok=True)
            label = progress_label(name, number, len(targets))
            progress = make_progress(0, label, quiet=args.quiet, stream=ctx.err)
            try:
                result = download_file(account, name, target, options, progress)
            except (Exception, KeyboardInterrupt):
                if part_paths(target)[1].exists():
                    print(f"{name}: partial download kept; run again to resume", file=ctx.err)
                raise
            finally:
                progress.close()
            if result.unchanged:
                print(
                    f"{result.path}  {result.size} bytes  unchanged, skipped",
                    file=ctx.out,
                    flush=True,
                )
                continue
            if args.verbose:
                print(
                    f"{name}: received {result.fetched} of {result.chunks} chunks"
                    f" ({result.resumed} already here)",
                    file=ctx.err,
                )
            line = f"{result.path}  {result.size} bytes  cksum {result.crc}  verified"
            print(line, file=ctx.out, flush=True)


def _get_to_stdout(ctx: Invocation, settings: Settings) -> None:
    """``get NAME -o -``: download into a private temporary directory, and only once the
    file is verified, copy it to standard output. A consumer never sees bytes that failed
    a check; such a download does not resume."""
    from client.download import DownloadOptions, download_file

    name = validate_file_name(ctx.args.names[0])
    options = DownloadOptions(window=2 * settings.client.window)
    with tempfile.TemporaryDirectory(prefix="cipherdrop-get-") as work:
        with _account(ctx, settings) as account:
            progress = make_progress(0, name, quiet=ctx.args.quiet, stream=ctx.err)
            try:
                result = download_file(account, name, Path(work) / "file", options, progress)
            finally:
                progress.close()
        ctx.out.flush()
        with result.path.open("rb") as data:
            shutil.copyfileobj(data, ctx.out.buffer, _COPY_BLOCK)
        ctx.out.buffer.flush()
    ctx.say(f"{name}  {result.size} bytes  cksum {result.crc}  verified, on standard output")


def _below(trees: Sequence[str], stored: Sequence[str], *, missing_ok: bool) -> list[str]:
    """``-r``: the names in ``stored`` of each tree (the name itself and those below
    ``tree/``), each once; a tree with none is ``not-found`` unless ``missing_ok``."""
    chosen: dict[str, None] = {}
    for tree in trees:
        found = stored_below(tree, stored)
        if not found and not missing_ok:
            raise RefusedError(str(ErrorCode.NOT_FOUND), f"nothing stored as {tree} or in it")
        chosen.update(dict.fromkeys(found))
    return list(chosen)


def _into(names: list[str], output: Path | None) -> list[tuple[str, Path]]:
    """``get -r``: ``names`` written below ``output`` (a directory, created if missing)."""
    if output is not None:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise FileAccessError(f"cannot make the directory {output}: {reason}") from exc
    return download_targets(names, output)


def _ls(ctx: Invocation, settings: Settings) -> None:
    trees = tree_names(ctx.args.names)
    with _account(ctx, settings) as account:
        if ctx.args.partial:
            uploads = _only(list_unfinished(account), trees)
            text = unfinished_to_json(uploads) if ctx.args.json else format_unfinished(uploads)
        else:
            files = _only(list_files(account), trees)
            text = to_json(files) if ctx.args.json else format_table(files)
    print(text, file=ctx.out)


def _only(entries: Sequence[Listed], trees: Sequence[str]) -> tuple[Listed, ...]:
    """``ls NAME...``: the entries of those trees (all of them when no NAME is given)."""
    if not trees:
        return tuple(entries)
    chosen = set(_below(trees, [entry.name for entry in entries], missing_ok=True))
    return tuple(entry for entry in entries if entry.name in chosen)


def _rm(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    names = tree_names(args.names) if args.recursive else args.names
    with _account(ctx, settings) as account:
        if args.partial:
            _discard(ctx, account, names)
            return
        if args.recursive:
            stored = [info.name for info in list_files(account)]
            names = _below(names, stored, missing_ok=args.force)
        for name in names:
            if delete_file(account, name):
                print(f"{name}  deleted", file=ctx.out, flush=True)
            elif not args.force:
                raise RefusedError(str(ErrorCode.NOT_FOUND), f"no such file: {name}")


def _mv(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    for name in (args.name, args.new_name):
        validate_file_name(name)
    with _account(ctx, settings) as account:
        try:
            renamed = rename_file(account, args.name, args.new_name, args.force)
        except RefusedError as exc:
            if exc.code != ErrorCode.CONFLICT:
                raise
            raise RefusedError(
                exc.code, f"{args.new_name} exists; use --force to replace it"
            ) from None
    replaced = "  (replaced the file of that name)" if renamed.replaced else ""
    print(f"{renamed.name} -> {renamed.new_name}  renamed{replaced}", file=ctx.out)


def _discard(ctx: Invocation, account: Account, names: Sequence[str]) -> None:
    """``rm --partial``: discard every unfinished upload of each name (with ``-r``, of
    each tree) given."""
    uploads = list_unfinished(account)
    for name in names:
        below = stored_below(name, [u.name for u in uploads]) if ctx.args.recursive else [name]
        mine = [upload for upload in uploads if upload.name in below]
        if not mine and not ctx.args.force:
            raise RefusedError(str(ErrorCode.NOT_FOUND), f"no unfinished upload of {name}")
        for upload in mine:
            if not discard_upload(account, upload):
                continue  # gone since it was listed: nothing left to discard
            held = f"{format_size(upload.held)} of {format_size(upload.size)}"
            print(f"{upload.name}  unfinished upload discarded ({held})", file=ctx.out, flush=True)


def _whoami(ctx: Invocation, settings: Settings) -> None:
    identity = load_identity(settings.client.home)
    print(f"name         {identity.name}", file=ctx.out)
    print(f"client id    {identity.client_id.hex()}", file=ctx.out)
    print(f"server       {identity.server}", file=ctx.out)
    print(f"fingerprint  {identity.server_fingerprint}", file=ctx.out)
    print(f"home         {identity.home}", file=ctx.out)


COMMANDS: dict[str, Callable[[Invocation, Settings], None]] = {
    "register": _register,
    "put": _put,
    "get": _get,
    "ls": _ls,
    "rm": _rm,
    "mv": _mv,
    "whoami": _whoami,
}
