"""File contents on disk, outside SQLite: one file per sealed chunk.

Layout: ``<blobs>/<transfer id hex>/<index>``. A blob file holds one byte, the chunk's
codec, followed by the sealed chunk exactly as the client sent it (AES-256-GCM under the
upload's data key: the server never encrypts the same bytes a second time). The codec
byte is part of the chunk's associated data, so the file is self-describing and a
download sends it back as it is.

Guarantees:

* :meth:`Blobs.write` writes to a temporary name and renames, so a reader or a crash
  sees the whole chunk or no chunk, and writing the same chunk again is harmless.
* :meth:`Blobs.sync` makes every chunk of a transfer durable (``fsync`` of each file and
  of the directory). The file worker calls it at commit, before the CRC that lets the
  client confirm: a file is never marked verified while its chunks might still be only
  in the page cache. (Measured here, fsync per chunk costs up to three times the write;
  once per transfer at commit costs far less; see docs/storage.md.)
* :meth:`Blobs.remove` deletes a transfer's directory (after the database commit that
  made it garbage); :meth:`Blobs.sweep` deletes directories no row refers to, so a crash
  between commit and removal never leaks space for good.
* Names come only from transfer ids (hex) and integers: no client-chosen text reaches
  the file system.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Set
from pathlib import Path

from common.errors import StorageError

__all__ = ["Blobs"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def _fsync_path(path: Path) -> None:
    fd = os.open(path, _READ_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Blobs:
    """The blob directory of one data dir."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def directory(self, transfer_id: bytes) -> Path:
        return self.root / transfer_id.hex()

    def location(self, transfer_id: bytes) -> str:
        """The ``files.location`` of a transfer: its directory relative to the data dir."""
        return f"{self.root.name}/{transfer_id.hex()}"

    def write(self, transfer_id: bytes, index: int, codec: int, sealed: memoryview | bytes) -> None:
        """Store one sealed chunk (atomically replacing an earlier copy of it)."""
        directory = self.directory(transfer_id)
        temporary = directory / f".{index}.{secrets.token_hex(4)}.tmp"
        try:
            directory.mkdir(mode=_DIR_MODE, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            try:
                _write_all(fd, bytes([codec]))
                _write_all(fd, sealed)
            finally:
                os.close(fd)
            os.replace(temporary, directory / str(index))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise StorageError(f"cannot write chunk {index}: {exc.strerror or exc}") from exc

    def read(self, transfer_id: bytes, index: int) -> tuple[int, bytes]:
        """``(codec, sealed chunk)`` of a stored chunk."""
        try:
            data = (self.directory(transfer_id) / str(index)).read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read chunk {index}: {exc.strerror or exc}") from exc
        if not data:
            raise StorageError(f"chunk {index} is empty on disk")
        return data[0], data[1:]

    def sync(self, transfer_id: bytes, count: int) -> None:
        """Make chunks ``0 .. count-1`` of a transfer and their names durable."""
        directory = self.directory(transfer_id)
        try:
            for index in range(count):
                _fsync_path(directory / str(index))
            _fsync_path(directory)
            _fsync_path(self.root)
        except OSError as exc:
            raise StorageError(f"cannot sync chunks: {exc.strerror or exc}") from exc

    def remove(self, transfer_id: bytes) -> None:
        """Delete a transfer's chunks; a missing directory is fine."""
        shutil.rmtree(self.directory(transfer_id), ignore_errors=True)

    def sweep(self, referenced: Callable[[], Set[bytes]]) -> int:
        """Remove directories of transfers that ``referenced()`` does not name; the count.

        ``referenced`` is called *after* listing the directories: a transfer row is always
        inserted before its first chunk is written, so a directory listed here whose id
        is absent from the later answer belongs to a forgotten transfer.
        """
        names = [entry.name for entry in os.scandir(self.root) if _HEX_ID.fullmatch(entry.name)]
        keep = referenced()
        removed = 0
        for name in names:
            if bytes.fromhex(name) not in keep:
                shutil.rmtree(self.root / name, ignore_errors=True)
                removed += 1
        return removed
