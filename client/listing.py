"""The client's view of its stored files and unfinished uploads: list, show, delete.

:func:`format_table` and :func:`format_unfinished` are for people (sizes in binary units,
times in UTC, one entry a line); :func:`to_json` and :func:`unfinished_to_json` are for
scripts and keep every value exact (sizes in bytes, times as ISO 8601 UTC and as
milliseconds since the epoch, the SHA-256 and ids as hex). Names are shown as they are:
the protocol guarantees they hold no control or bidirectional characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import TypeVar

from client.connection import Account
from common.errors import RefusedError, RemoteProtocolError
from common.messages import (
    Deleted,
    DeleteFile,
    ErrorCode,
    FileInfo,
    FileList,
    ListFiles,
    ListUploads,
    Renamed,
    RenameFile,
    UploadConfirm,
    UploadDone,
    UploadInfo,
    UploadList,
    Verdict,
)

__all__ = [
    "all_pages",
    "delete_file",
    "discard_upload",
    "format_size",
    "format_table",
    "format_unfinished",
    "list_files",
    "list_unfinished",
    "rename_file",
    "to_json",
    "unfinished_pages",
    "unfinished_to_json",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_HEADER = ("NAME", "SIZE", "UPLOADED (UTC)", "VERIFIED", "CKSUM", "SHA-256")
_UNFINISHED_HEADER = ("NAME", "STORED", "SIZE", "BEGAN (UTC)", "UPLOAD")

K = TypeVar("K", str, bytes)
T = TypeVar("T")


def list_files(account: Account) -> tuple[FileInfo, ...]:
    """The client's own files, sorted by name (code point order), page by page."""
    return all_pages(lambda after: account.call(ListFiles(after), FileList))


def list_unfinished(account: Account) -> tuple[UploadInfo, ...]:
    """The client's unfinished uploads, in transfer id order, page by page."""
    return unfinished_pages(lambda after: account.call(ListUploads(after), UploadList))


def all_pages(ask: Callable[[str], FileList]) -> tuple[FileInfo, ...]:
    """Every page of a listing: ``ask(after)`` again after the last name while the
    server says there is more."""

    def page(after: str) -> tuple[Sequence[FileInfo], bool]:
        reply = ask(after)
        return reply.files, reply.more

    return _gather(page, lambda info: info.name, "", "file list")


def unfinished_pages(ask: Callable[[bytes], UploadList]) -> tuple[UploadInfo, ...]:
    """Every page of the unfinished uploads, as :func:`all_pages` for transfer ids."""

    def page(after: bytes) -> tuple[Sequence[UploadInfo], bool]:
        reply = ask(after)
        return reply.uploads, reply.more

    return _gather(page, lambda info: info.transfer_id, b"", "upload list")


def _gather(
    page: Callable[[K], tuple[Sequence[T], bool]], key: Callable[[T], K], first: K, what: str
) -> tuple[T, ...]:
    """Each page must hold keys after the one asked from, in ascending order: a server
    that repeats or reorders entries is a protocol error, never an endless loop."""
    gathered: list[T] = []
    after = first
    while True:
        entries, more = page(after)
        keys = [after]
        keys.extend(key(entry) for entry in entries)
        if any(a >= b for a, b in pairwise(keys)):
            raise RemoteProtocolError(f"{what}: entries not after the last one, in order")
        gathered.extend(entries)
        if not more:
            return tuple(gathered)
        if not entries:
            raise RemoteProtocolError(f"{what}: more entries promised, none given")
        after = keys[-1]


def delete_file(account: Account, name: str) -> bool:
    """Delete ``name`` and its stored contents; False if there was no such file."""
    return account.call(DeleteFile(name), Deleted).existed


def rename_file(account: Account, name: str, new_name: str, replace: bool) -> Renamed:
    """Give the stored file ``name`` the name ``new_name`` (replacing a file of that name
    only with ``replace``)."""
    return account.call(RenameFile(name, new_name, replace), Renamed)


def discard_upload(account: Account, upload: UploadInfo) -> bool:
    """Discard an unfinished upload and the chunks the server holds of it; False if it
    was gone already (finished, expired or discarded since it was listed)."""
    try:
        account.call(UploadConfirm(upload.transfer_id, Verdict.GIVE_UP), UploadDone)
    except RefusedError as exc:
        if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.CONFLICT):  # conflict: a file now
            return False
        raise
    return True


def format_size(size: int) -> str:
    """``1.5 MiB`` style; exact bytes below 1 KiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    power = 0
    while value >= 1024 and power < len(_UNITS) - 1:
        value /= 1024
        power += 1
    return f"{value:.1f} {_UNITS[power]}"


def _time(ms: int, sep: str = " ") -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(sep, "seconds").replace("+00:00", "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _table(header: tuple[str, ...], body: Sequence[tuple[str, ...]], right: set[int]) -> str:
    """Columns aligned, those in ``right`` (numbers) to the right."""
    rows = [header, *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def format_table(files: Sequence[FileInfo]) -> str:
    """A plain-text table, one file a line, columns aligned; a note when there are none."""
    if not files:
        return "no files"
    rows = [
        (
            info.name,
            format_size(info.size),
            _time(info.uploaded_at),
            "yes" if info.verified else "no",
            str(info.crc),
            info.sha256.hex()[:16] if info.sha256 is not None else "-",
        )
        for info in files
    ]
    total = format_size(sum(info.size for info in files))
    return _table(_HEADER, rows, {1, 4}) + f"\n{_count(len(files), 'file')}, {total} in all"


def format_unfinished(uploads: Sequence[UploadInfo]) -> str:
    """One unfinished upload a line, sorted by name then start; a note when there are none."""
    if not uploads:
        return "no unfinished uploads"
    rows = [
        (
            info.name,
            format_size(info.held),
            format_size(info.size),
            _time(info.began_at),
            info.transfer_id.hex()[:8],
        )
        for info in sorted(uploads, key=lambda info: (info.name, info.began_at))
    ]
    held = format_size(sum(info.held for info in uploads))
    size = format_size(sum(info.size for info in uploads))
    count = _count(len(uploads), "unfinished upload")
    return _table(_UNFINISHED_HEADER, rows, {1, 2}) + f"\n{count}, {held} of {size} stored"


def to_json(files: Sequence[FileInfo]) -> str:
    """A JSON array of objects, one per file, for scripts."""
    return json.dumps(
        [
            {
                "name": info.name,
                "size": info.size,
                "uploaded_at": _time(info.uploaded_at, "T") + "Z",
                "uploaded_at_ms": info.uploaded_at,
                "verified": info.verified,
                "crc": info.crc,
                "sha256": info.sha256.hex() if info.sha256 is not None else None,
            }
            for info in files
        ],
        indent=2,
    )


def unfinished_to_json(uploads: Sequence[UploadInfo]) -> str:
    """A JSON array of objects, one per unfinished upload, in transfer id order."""
    return json.dumps(
        [
            {
                "name": info.name,
                "size": info.size,
                "stored": info.held,
                "began_at": _time(info.began_at, "T") + "Z",
                "began_at_ms": info.began_at,
                "upload_id": info.transfer_id.hex(),
            }
            for info in uploads
        ],
        indent=2,
    )
