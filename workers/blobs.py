"""File contents on disk, outside SQLite: one file per upload, one fixed slot per chunk.

Layout: ``<blobs>/<transfer id hex>`` is one file. Its first 4 KiB page holds a header
(magic and the upload's chunk size); chunk ``i`` lives in slot ``i`` at
``4096 + i * stride``, where ``stride`` is the largest sealed chunk plus a 5-byte slot
header, rounded up to whole pages. A slot holds the chunk's codec (one byte), the sealed
length (u32, big-endian) and the sealed chunk exactly as the client sent it (AES-256-GCM
under the upload's data key: the server never encrypts the same bytes a second time).
Slots not written, and the unused tail of a compressed chunk's slot, are holes: the file
takes the disk space of what was written. Chunk ``i`` is found without the database, so
a download or a resume reads any chunk directly.

Guarantees:

* :meth:`Blobs.slot` holds an exclusive lock on one slot (an open-file-description lock,
  so it works between worker processes and is released if the process dies). Whoever
  writes a chunk checks that no row records it, writes it and records it under that lock:
  two copies of one chunk sealed differently (a resumed upload racing its own leftover
  requests) can never be mixed in a slot. Writing the same slot again is harmless before
  its row exists, and never happens after.
* :meth:`Blobs.sync` makes a transfer's contents durable (``fsync`` of the file and of
  ``blobs/``); the file worker calls it at commit, before the CRC that lets the client
  confirm, so a file is never marked verified while its chunks might still be only in the
  page cache. To keep that final wait short, writes already hand finished stretches of the
  file to a background ``fdatasync`` while the upload goes on (see docs/storage.md).
* :meth:`Blobs.remove` deletes a transfer's file (after the database commit that made it
  garbage); :meth:`Blobs.sweep` deletes files no row refers to, so a crash between commit
  and removal never leaks space for good.
* Names come only from transfer ids (hex): no client-chosen text reaches the file system.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import struct
from collections.abc import Callable, Iterator, Set
from pathlib import Path

from common import background
from common.crypto import OVERHEAD
from common.earlysync import count_written
from common.errors import NoSpaceError, StorageError

__all__ = ["DEFAULT_CHUNK_SIZE", "REMOVAL", "Blobs", "Slot", "slot_offset"]

REMOVAL = "blob-removal"  # the background purpose of remove_soon

DEFAULT_CHUNK_SIZE = 1024 * 1024
_FILE_MODE = 0o600
_PAGE = 4096
_MAGIC = b"cdblob1\x00"
_FILE_HEADER = struct.Struct(">8sI4x")  # magic, chunk size
_SLOT_HEADER = struct.Struct(">BI")  # codec, sealed length
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FULL = (errno.ENOSPC, errno.EDQUOT)  # a write that fails for want of space
_TRACKED = 64  # uploads whose unsynced byte counts one process remembers
_COPY_BLOCK = 1024 * 1024
# Where the platform has them (Linux, the BSDs, macOS): lseek to the next data, the next hole.
_SEEKS: tuple[int, int] | None = (
    (os.SEEK_DATA, os.SEEK_HOLE) if hasattr(os, "SEEK_DATA") and hasattr(os, "SEEK_HOLE") else None
)
# An open file description lock (Linux): owned by the open file, not the process, so closing
# another descriptor of the same file (the background sync's) never drops it.
_OFD_SETLKW: int | None = getattr(fcntl, "F_OFD_SETLKW", None)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock: type, whence, start, len, pid (= 0)


def slot_offset(chunk_size: int, index: int) -> int:
    """Where chunk ``index`` of an upload with ``chunk_size`` starts in its file."""
    return _PAGE + index * _stride(chunk_size)


def _stride(chunk_size: int) -> int:
    need = _SLOT_HEADER.size + chunk_size + OVERHEAD
    return -(-need // _PAGE) * _PAGE


def _lock(fd: int, start: int, length: int, exclusive: bool) -> None:
    if _OFD_SETLKW is None:  # no OFD locks: POSIX record locks (then no background sync)
        fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_UN, length, start)
        return
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_UNLCK
    fcntl.fcntl(fd, _OFD_SETLKW, _FLOCK.pack(kind, os.SEEK_SET, start, length, 0))


class Slot:
    """The locked slot of one chunk; see :meth:`Blobs.slot`."""

    __slots__ = ("_blobs", "_fd", "_offset", "_transfer_id", "chunk_size", "index")

    def __init__(
        self, blobs: Blobs, transfer_id: bytes, fd: int, index: int, chunk_size: int
    ) -> None:
        self._blobs = blobs
        self._transfer_id = transfer_id
        self._fd = fd
        self._offset = slot_offset(chunk_size, index)
        self.chunk_size = chunk_size
        self.index = index

    def write(self, codec: int, sealed: memoryview | bytes) -> None:
        """Store the sealed chunk with its codec in this slot."""
        view = memoryview(sealed).cast("B")
        if len(view) > self.chunk_size + OVERHEAD:
            raise ValueError(f"a sealed chunk of {len(view)} bytes does not fit its slot")
        header = _SLOT_HEADER.pack(codec, len(view))
        try:
            written = os.pwritev(self._fd, [header, view], self._offset)
            if written != len(header) + len(view):  # a short write: finish it plainly
                data = header + bytes(view)
                while written < len(data):
                    written += os.pwrite(self._fd, data[written:], self._offset + written)
        except OSError as exc:
            if exc.errno in _FULL:
                raise NoSpaceError(f"no space left on the server for chunk {self.index}") from exc
            raise StorageError(f"cannot write chunk {self.index}: {exc.strerror or exc}") from exc
        self._blobs._written(self._transfer_id, self._fd, written)


class Blobs:
    """The blob directory of one data dir, used by one thread of one process."""

    def __init__(self, root: Path, *, background_sync: bool = True) -> None:
        self.root = Path(root)
        self._unsynced: dict[bytes, int] = {}  # bytes written since the last early sync
        self._background = background_sync and _OFD_SETLKW is not None

    def path(self, transfer_id: bytes) -> Path:
        """The file holding a transfer's chunks."""
        return self.root / transfer_id.hex()

    directory = path  # the name of earlier layouts (one directory per transfer)

    def location(self, transfer_id: bytes) -> str:
        """The ``files.location`` of a transfer: its file relative to the data dir."""
        return f"{self.root.name}/{transfer_id.hex()}"

    @contextlib.contextmanager
    def slot(self, transfer_id: bytes, index: int, chunk_size: int) -> Iterator[Slot]:
        """Lock chunk ``index``'s slot (creating the file if needed) for the block."""
        fd = self._open(transfer_id, chunk_size)
        try:
            start, length = slot_offset(chunk_size, index), _stride(chunk_size)
            try:
                _lock(fd, start, length, exclusive=True)
            except OSError as exc:
                raise StorageError(f"cannot lock chunk {index}: {exc.strerror or exc}") from exc
            yield Slot(self, transfer_id, fd, index, chunk_size)
        finally:
            os.close(fd)  # which releases the lock

    def write(
        self,
        transfer_id: bytes,
        index: int,
        codec: int,
        sealed: memoryview | bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        """Store one sealed chunk in its slot (an earlier copy of it is replaced)."""
        with self.slot(transfer_id, index, chunk_size) as slot:
            slot.write(codec, sealed)

    def read(self, transfer_id: bytes, index: int) -> tuple[int, bytes]:
        """``(codec, sealed chunk)`` of a stored chunk."""
        try:
            fd = os.open(self.path(transfer_id), os.O_RDONLY | _CLOEXEC)
        except OSError as exc:
            raise StorageError(f"cannot read chunk {index}: {exc.strerror or exc}") from exc
        try:
            chunk_size = _chunk_size(os.pread(fd, _FILE_HEADER.size, 0))
            offset = slot_offset(chunk_size, index)
            header = os.pread(fd, _SLOT_HEADER.size, offset)
            if len(header) != _SLOT_HEADER.size:
                raise StorageError(f"chunk {index} is missing on disk")
            codec, length = _SLOT_HEADER.unpack(header)
            if length == 0:
                raise StorageError(f"chunk {index} is missing on disk")
            if length > chunk_size + OVERHEAD:
                raise StorageError(f"chunk {index} is damaged on disk")
            sealed = os.pread(fd, length, offset + _SLOT_HEADER.size)
            if len(sealed) != length:
                raise StorageError(f"chunk {index} is truncated on disk")
            return codec, sealed
        except OSError as exc:
            raise StorageError(f"cannot read chunk {index}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def free_space(self) -> int:
        """Bytes an unprivileged writer may still use on the blobs' file system."""
        try:
            info = os.statvfs(self.root)
        except OSError as exc:
            raise StorageError(f"cannot read the free space: {exc.strerror or exc}") from exc
        return info.f_bavail * info.f_frsize

    def sync(self, transfer_id: bytes) -> None:
        """Make a transfer's file, its contents and its name durable."""
        self._forget(transfer_id)
        try:
            fd = os.open(self.path(transfer_id), os.O_RDONLY | _CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_directory(self.root)
        except OSError as exc:
            if exc.errno in _FULL:  # delayed allocation: the space is taken at writeback
                raise NoSpaceError("no space left on the server for the upload") from exc
            raise StorageError(f"cannot sync chunks: {exc.strerror or exc}") from exc

    def remove(self, transfer_id: bytes) -> None:
        """Delete a transfer's chunks; a missing file is fine."""
        self._forget(transfer_id)
        _delete(self.path(transfer_id))

    def remove_soon(self, transfer_id: bytes) -> None:
        """Delete a transfer's file on a background thread (:mod:`common.background`).

        For a file no row refers to any more, whose deletion need not delay a reply:
        unlinking a 1 GiB file takes 0.4-0.8 s here. If the process dies first, the
        start-up sweep removes it.
        """
        self._forget(transfer_id)
        background.submit(REMOVAL, _delete, self.path(transfer_id))

    def copy_to(self, transfer_id: bytes, other: Blobs) -> None:
        """Copy a transfer's file into another blob directory (a backup), mode 0600, holes
        kept as holes where the system can say where they are (``SEEK_DATA``).

        FileNotFoundError if this directory has no file for the transfer.
        """
        with self.path(transfer_id).open("rb") as source:
            fd = os.open(other.path(transfer_id), os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
            with os.fdopen(fd, "wb") as target:
                if _SEEKS is None:
                    shutil.copyfileobj(source, target, _COPY_BLOCK)
                else:
                    _copy_data(source.fileno(), target.fileno(), *_SEEKS)

    def sweep(self, referenced: Callable[[], Set[bytes]]) -> int:
        """Remove files of transfers that ``referenced()`` does not name; the count.

        ``referenced`` is called *after* listing the files: a transfer row is always
        inserted before its first chunk is written, so a file listed here whose id is
        absent from the later answer belongs to a forgotten transfer.
        """
        names = [entry.name for entry in os.scandir(self.root) if _HEX_ID.fullmatch(entry.name)]
        keep = referenced()
        removed = 0
        for name in names:
            if bytes.fromhex(name) not in keep:
                self._forget(bytes.fromhex(name))
                _delete(self.root / name)
                removed += 1
        return removed

    def close(self) -> None:
        """Forget per-upload bookkeeping. No file stays open between calls, so this is
        all there is to release; callers may treat a Blobs like any other resource."""
        self._unsynced.clear()

    # -- internals -----------------------------------------------------------------------

    def _open(self, transfer_id: bytes, chunk_size: int) -> int:
        # Opened for each chunk, not kept: a descriptor kept open would keep the disk space
        # of a deleted file in use, and opening costs microseconds against milliseconds.
        try:
            fd = os.open(self.path(transfer_id), os.O_RDWR | os.O_CREAT | _CLOEXEC, _FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open the upload's file: {exc.strerror or exc}") from exc
        try:
            _check_header(fd, chunk_size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _written(self, transfer_id: bytes, fd: int, count: int) -> None:
        if not self._background:
            return
        unsynced = count_written(fd, self._unsynced.pop(transfer_id, 0), count)
        self._unsynced[transfer_id] = unsynced  # most recent last
        while len(self._unsynced) > _TRACKED:
            del self._unsynced[next(iter(self._unsynced))]

    def _forget(self, transfer_id: bytes) -> None:
        self._unsynced.pop(transfer_id, None)


def _copy_data(source: int, target: int, seek_data: int, seek_hole: int) -> None:
    """Copy the data of ``source`` to ``target`` at the same offsets, skipping holes; the
    length is set at the end. A system that cannot tell holes reports all of it as data."""
    size = os.fstat(source).st_size
    offset = 0
    while offset < size:
        try:
            start = os.lseek(source, offset, seek_data)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole up to the end
                break
            raise
        end = os.lseek(source, start, seek_hole)
        while start < end:
            piece = os.pread(source, min(_COPY_BLOCK, end - start), start)
            if not piece:
                break  # the file shrank meanwhile: blob files never do, but never loop
            os.pwrite(target, piece, start)
            start += len(piece)
        offset = end
    os.ftruncate(target, size)


def _check_header(fd: int, chunk_size: int) -> None:
    """Write the file header of a new file; check an existing one's chunk size."""
    expected = _FILE_HEADER.pack(_MAGIC, chunk_size)
    found = os.pread(fd, _FILE_HEADER.size, 0)
    if found == expected:
        return
    if found and found != bytes(len(found)):  # zeros: another writer is about to write it
        raise StorageError("the upload's file has another header")
    os.pwrite(fd, expected, 0)  # every writer writes the same bytes


def _chunk_size(header: bytes) -> int:
    if len(header) != _FILE_HEADER.size:
        raise StorageError("the upload's file has no header")
    magic, chunk_size = _FILE_HEADER.unpack(header)
    if magic != _MAGIC or chunk_size <= 0:
        raise StorageError("the upload's file has a damaged header")
    return int(chunk_size)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete(path: Path) -> None:
    if path.is_dir():  # an earlier layout
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
