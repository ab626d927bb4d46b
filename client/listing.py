"""The client's view of its stored files: list them, show them, delete them.

:func:`format_table` is for people (sizes in binary units, times in UTC, one file a line);
:func:`to_json` is for scripts and keeps every value exact (sizes in bytes, times as ISO
8601 UTC and as milliseconds since the epoch, the SHA-256 as hex or null). Names are shown
as they are: the protocol guarantees they hold no control or bidirectional characters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import pairwise

from client.connection import Account
from common.errors import RemoteProtocolError
from common.messages import Deleted, DeleteFile, FileInfo, FileList, ListFiles

__all__ = ["all_pages", "delete_file", "format_size", "format_table", "list_files", "to_json"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_HEADER = ("NAME", "SIZE", "UPLOADED (UTC)", "VERIFIED", "CKSUM", "SHA-256")


def list_files(account: Account) -> tuple[FileInfo, ...]:
    """The client's own files, sorted by name (code point order), page by page."""
    return all_pages(lambda after: account.call(ListFiles(after), FileList))


def all_pages(ask: Callable[[str], FileList]) -> tuple[FileInfo, ...]:
    """Every page of a listing: ``ask(after)`` again after the last name while the
    server says there is more.

    Each page must hold names after the one asked from, in ascending order: a server that
    repeats or reorders names is a protocol error, never an endless loop.
    """
    files: list[FileInfo] = []
    after = ""
    while True:
        page = ask(after)
        names = [after, *(info.name for info in page.files)]
        if any(a >= b for a, b in pairwise(names)):
            raise RemoteProtocolError("file list: names not after the last one, in order")
        files.extend(page.files)
        if not page.more:
            return tuple(files)
        if not page.files:
            raise RemoteProtocolError("file list: more files promised, none given")
        after = names[-1]


def delete_file(account: Account, name: str) -> bool:
    """Delete ``name`` and its stored contents; False if there was no such file."""
    return account.call(DeleteFile(name), Deleted).existed


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


def format_table(files: Sequence[FileInfo]) -> str:
    """A plain-text table, one file a line, columns aligned; a note when there are none."""
    if not files:
        return "no files"
    rows = [_HEADER] + [
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    right = {1, 4}  # numbers are right-aligned
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


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
