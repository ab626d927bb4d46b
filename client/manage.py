"""The commands on what is stored: ``ls``, ``rm`` and ``mv`` (and their ``--partial``
forms for unfinished uploads).

With ``-r`` (and for ``ls NAME...``) a NAME is a tree: the file stored as NAME and every
file below ``NAME/`` (:func:`client.sources.stored_below`). Results go to standard
output, one line per file done; failures are raised for :func:`client.cli.main`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from client.connection import Account
from client.invocation import Invocation, open_account
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
from client.sources import names_below, stored_below, tree_names
from common.errors import RefusedError
from common.messages import ErrorCode, FileInfo, UploadInfo
from common.names import validate_file_name
from config import Settings

__all__ = ["ls", "mv", "rm"]

Listed = TypeVar("Listed", FileInfo, UploadInfo)


def ls(ctx: Invocation, settings: Settings) -> None:
    trees = tree_names(ctx.args.names)
    with open_account(ctx, settings) as account:
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
    chosen = set(names_below(trees, [entry.name for entry in entries], missing_ok=True))
    return tuple(entry for entry in entries if entry.name in chosen)


def rm(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    names = tree_names(args.names) if args.recursive else args.names
    with open_account(ctx, settings) as account:
        if args.partial:
            _discard(ctx, account, names)
            return
        if args.recursive:
            stored = [info.name for info in list_files(account)]
            names = names_below(names, stored, missing_ok=args.force)
        for name in names:
            if delete_file(account, name):
                print(f"{name}  deleted", file=ctx.out, flush=True)
            elif not args.force:
                raise RefusedError(str(ErrorCode.NOT_FOUND), f"no such file: {name}")


def mv(ctx: Invocation, settings: Settings) -> None:
    args = ctx.args
    for name in (args.name, args.new_name):
        validate_file_name(name)
    with open_account(ctx, settings) as account:
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
