"""The download pipeline: fetch a file chunk by chunk, authenticate, check, place atomically.

``DownloadBegin`` gives the file's transfer id, data key, size, chunking and CRC. Then
``DownloadChunk`` requests go out with at most ``window`` in flight; replies are taken in
chunk order, so at most ``window`` chunks are ever held (memory is bounded by the window,
never by the file). Each chunk is opened with the data key at its index with the final
flag the chunking rule gives it (so a chunk moved, dropped, replayed from another file or
truncated fails), decompressed bounded by the chunk size, length-checked, fed to the
POSIX ``cksum`` CRC and written to the part file (:mod:`client.partial`).

Guarantees:

* Nothing is ever written under the final name until the whole file authenticated and
  its size and CRC equal the server's; the part file is then fsynced and renamed into
  place (with ``force`` only may it replace an existing file; without it, an existing
  target is refused before anything is fetched, and a file that appears meanwhile is
  never overwritten). The directory is fsynced after the rename.
* An interrupted download (killed, Ctrl-C, server gone) leaves only the part and state
  files; running it again fetches only the chunks not yet received, if the server still
  has the same file. A CRC or size mismatch discards them: the next run starts over.
* If the session expires mid-download the key exchange runs again and the download
  continues where it stopped.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from client import session as core
from client.connection import FILE_SERVICE, Account
from client.partial import PartialDownload
from client.progress import Progress
from client.throttle import Throttle
from common import crypto
from common.cksum import Cksum, CksumSha256
from common.codec import decode_envelope
from common.compress import Buffer, decompress_chunk
from common.earlysync import count_written
from common.errors import FileAccessError, IntegrityError, RemoteProtocolError
from common.fields import chunk_count_for
from common.log import get_logger
from common.messages import (
    DownloadBegin,
    DownloadChunk,
    DownloadReady,
    Flags,
    MessageType,
    StreamPosition,
)

__all__ = [
    "MAX_CHUNK_SIZE",
    "DownloadOptions",
    "DownloadResult",
    "download_file",
    "open_chunk_data",
]

MAX_CHUNK_SIZE = 64 * 1024 * 1024  # the protocol's bound on chunk_size
_READ_BLOCK = 1024 * 1024
_log = get_logger()


@dataclass(frozen=True, slots=True)
class DownloadOptions:
    """How to download: replace an existing file?, requests in flight, state interval;
    ``skip_unchanged``: leave an existing file with the server's size and CRC as it is."""

    force: bool = False
    window: int = 8
    save_every: int = 8 * 1024 * 1024  # bytes between two updates of the state file
    skip_unchanged: bool = False
    rate: int | None = None  # --limit-rate: bytes per second on the wire


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """A placed, verified file; ``fetched`` chunks came over the wire, ``resumed`` were
    already on disk from an earlier run; ``unchanged``: the file there was left alone."""

    name: str
    path: Path
    size: int
    crc: int
    chunks: int
    fetched: int
    resumed: int
    unchanged: bool = False
    sha256: bytes | None = None  # recorded with the file, and the download's equalled it


def open_chunk_data(
    session: core.Session,
    req: core.Outgoing,
    reply: Sequence[bytes | memoryview],
    ready: DownloadReady,
    index: int,
    out: bytearray | None = None,
) -> Buffer:
    """The plaintext of chunk ``index`` from a CHUNK_DATA reply, authenticated and
    decompressed; RefusedError for an error reply, IntegrityError for a bad chunk.

    The chunk is opened into ``out`` when it is large enough (the plaintext is then a view
    of it, unless the chunk was compressed), else into a new buffer."""
    if len(reply) != 2:
        raise RemoteProtocolError(f"reply has {len(reply)} body frames, expected 2")
    env = decode_envelope(bytes(reply[0]))
    if env.request_id != req.request_id:
        raise RemoteProtocolError("reply answers another request")
    if env.type is MessageType.ERROR_REPLY:
        core.open_reply(session, req, reply, DownloadReady)  # raises the refusal
        raise RemoteProtocolError("an error reply without an error")
    if env.type is not MessageType.CHUNK_DATA:
        raise RemoteProtocolError(f"reply of type {env.type.name}, expected CHUNK_DATA")
    if env.flags is not Flags.SESSION or env.key_id != session.session_id:
        raise RemoteProtocolError("chunk data is not under this session")
    final = index == ready.chunk_count - 1
    if env.stream != StreamPosition(ready.transfer_id, index, final):
        raise RemoteProtocolError(f"chunk data for another position than chunk {index}")
    # Opened into a buffer of its own (it waits for the writer): one pass, no copy.
    length = max(len(reply[1]) - crypto.OVERHEAD, 0)
    if out is None or len(out) < length:
        out = bytearray(length)
    opened = memoryview(out)[:length]
    crypto.open_chunk_into(
        ready.data_key,
        index,
        final,
        reply[1],
        opened,
        core.chunk_aad(ready.transfer_id, env.codec),
    )
    expected = min(ready.chunk_size, ready.size - index * ready.chunk_size)
    try:
        plain = decompress_chunk(env.codec, opened, ready.chunk_size)
    except RemoteProtocolError as exc:
        raise IntegrityError(f"chunk {index} does not decompress") from exc
    if len(plain) != expected:
        raise IntegrityError(f"chunk {index} holds {len(plain)} bytes, expected {expected}")
    return plain


def _check_ready(ready: DownloadReady) -> None:
    if not 1 <= ready.chunk_size <= MAX_CHUNK_SIZE:
        raise RemoteProtocolError(f"chunk_size {ready.chunk_size} out of range")
    if ready.chunk_count != chunk_count_for(ready.size, ready.chunk_size):
        raise RemoteProtocolError("chunk_count does not follow the chunking rule")


def _refuse_existing(target: Path, force: bool) -> None:
    if target.is_dir():
        raise FileAccessError(f"{target} is a directory")
    if not force and (target.exists() or target.is_symlink()):
        raise FileAccessError(f"{target} exists; use --force to replace it")


def download_file(
    account: Account,
    name: str,
    target: Path,
    options: DownloadOptions,
    progress: Progress,
) -> DownloadResult:
    """Download the file ``name`` to ``target``; returns once it is verified and in place."""
    if not options.skip_unchanged:  # else only once the server's size and CRC are known
        _refuse_existing(target, options.force)
    return account.with_session(lambda: _download(account, name, target, options, progress))


def _download(
    account: Account, name: str, target: Path, options: DownloadOptions, progress: Progress
) -> DownloadResult:
    ready = account.call(DownloadBegin(name), DownloadReady)
    _check_ready(ready)
    if options.skip_unchanged:
        if _holds(target, ready.size, ready.crc, ready.sha256):
            n, sha256 = ready.chunk_count, ready.sha256
            return DownloadResult(
                name, target, ready.size, ready.crc, n, 0, 0, unchanged=True, sha256=sha256
            )
        _refuse_existing(target, options.force)
    partial = PartialDownload(target, ready)
    resume = partial.resume_point()
    try:
        fd = partial.open_part(resume)
    except OSError as exc:
        raise FileAccessError(f"cannot write {partial.part}: {exc.strerror or exc}") from exc
    try:
        crc = _crc_of_prefix(fd, partial.offset(resume), sha256=ready.sha256 is not None)
        progress.reset(total=ready.size)
        progress.update(crc.length)
        try:
            _fetch(account, ready, fd, partial, crc, progress, options)
        finally:
            partial.save()  # whatever happened, the next run resumes from here
        if (crc.length, crc.digest()) != (ready.size, ready.crc):
            partial.discard()
            raise IntegrityError(
                f"download of {name} does not match: {crc.length} bytes with CRC"
                f" {crc.digest()}, the server has {ready.size} bytes with CRC {ready.crc}"
            )
        got, recorded = crc.sha256(), ready.sha256  # both None without a recorded one
        if got != recorded:
            partial.discard()
            raise IntegrityError(
                f"download of {name} does not match the SHA-256 recorded with it:"
                f" {got.hex() if got else '-'}, recorded {recorded.hex() if recorded else '-'}"
            )
        os.ftruncate(fd, ready.size)
        os.fsync(fd)
    except OSError as exc:
        raise FileAccessError(f"cannot write {partial.part}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
        partial.close()
    _place(partial, options.force)
    fetched = ready.chunk_count - resume
    _log.info("download.done", name=name, size=ready.size, fetched=fetched, resumed=resume)
    return DownloadResult(
        name, target, ready.size, ready.crc, ready.chunk_count, fetched, resume, sha256=ready.sha256
    )


def _holds(target: Path, size: int, crc: int, sha256: bytes | None = None) -> bool:
    """True if ``target`` is a regular file of ``size`` bytes with the POSIX CRC ``crc``
    (and the SHA-256 ``sha256``, when one is given)."""
    try:
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False  # missing, a symbolic link, unreadable: not the same file
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != size:
            return False
        found = _crc_of_prefix(fd, size, sha256=sha256 is not None)
    except (OSError, FileAccessError):
        return False
    finally:
        os.close(fd)
    return found.digest() == crc and found.sha256() == sha256


def _crc_of_prefix(fd: int, length: int, *, sha256: bool = False) -> Cksum:
    """The CRC (and SHA-256, if asked) of the part file's first ``length`` bytes (chunks
    kept from a run before)."""
    crc = CksumSha256() if sha256 else Cksum()
    offset = 0
    while offset < length:
        block = os.pread(fd, min(_READ_BLOCK, length - offset), offset)
        if not block:
            raise FileAccessError("the partial download shrank")
        crc.update(block)
        offset += len(block)
    return crc


def _fetch(
    account: Account,
    ready: DownloadReady,
    fd: int,
    partial: PartialDownload,
    crc: Cksum,
    progress: Progress,
    options: DownloadOptions,
) -> None:
    """Fetch chunks ``partial.received ..`` in order, ``window`` in flight.

    This thread receives and decrypts; a writer thread computes the CRC and writes, so the
    two overlap (AES, the CRC and pwrite release the GIL). At most ``window`` opened
    chunks wait for the writer, so memory stays bounded by the window. A file of one
    chunk is written by this thread: a thread of its own would cost more than the write.
    """
    session = account.session
    transport = account.conn.transport
    every = max(1, options.save_every // ready.chunk_size)
    helper = ready.chunk_count - partial.received > 1
    writer = _Writer(fd, partial, crc, progress, every, options.window, helper=helper)
    size = min(ready.chunk_size, ready.size)  # of the buffers chunks are opened into
    pending: deque[tuple[int, core.Outgoing, bytes]] = deque()
    throttle = Throttle(options.rate)
    following = index = partial.received
    try:
        while index < ready.chunk_count:
            while following < ready.chunk_count and len(pending) < options.window:
                req = core.session_request(session, DownloadChunk(ready.transfer_id, following))
                pending.append((following, req, transport.submit(FILE_SERVICE, req.frames)))
                following += 1
            index, req, key = pending.popleft()
            reply, spare = transport.result(key), writer.spare(size)
            throttle.take(len(reply[-1]))  # the stored chunk, as it crossed the wire
            writer.put(index, open_chunk_data(session, req, reply, ready, index, spare), spare)
            index += 1
    except BaseException:
        writer.finish()
        raise
    writer.finish()
    writer.check()


_Chunk: TypeAlias = tuple[int, Buffer, bytearray]  # index, plaintext, its buffer


class _Writer:
    """Feeds the CRC, writes chunks in order (starting their way to disk early, see
    common.earlysync) and records progress: on a thread of its own, or with ``helper``
    false on the thread that puts them.

    The buffers chunks were opened into come back for the next chunks once written: at
    most ``window`` + 2 of them ever exist, and none is allocated and zeroed per chunk.
    Waiting for a buffer is what holds the fetching thread back when the disk is slower
    than the network: at most that many chunks are ever held."""

    def __init__(
        self,
        fd: int,
        partial: PartialDownload,
        crc: Cksum,
        progress: Progress,
        every: int,
        window: int,
        *,
        helper: bool = True,
    ) -> None:
        self.fd, self.partial, self.crc, self.progress = fd, partial, crc, progress
        self.every = every
        self.unsynced = 0  # bytes written since the last early sync
        self.queue: queue.SimpleQueue[_Chunk | None] = queue.SimpleQueue()
        self.spares: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self.unmade = window + 2  # buffers that may still be made
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if helper:
            self.thread = threading.Thread(target=self._run, name="download-writer", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            index, plain, buffer = item
            if self.error is None:  # after an error, only hand the buffers back
                try:
                    self._write(index, plain)
                except BaseException as exc:  # handed to the fetching thread by check()
                    self.error = exc
            self.spares.put(buffer)  # written: the next chunk may be opened into it

    def _write(self, index: int, plain: Buffer) -> None:
        _write_at(self.fd, plain, self.partial.offset(index))
        # the disk starts now, not at the final fsync
        self.unsynced = count_written(self.fd, self.unsynced, len(plain))
        self.crc.update(plain)
        self.partial.received = index + 1
        self.progress.update(len(plain))
        if self.partial.received % self.every == 0:
            self.partial.save()

    def check(self) -> None:
        """Raise what went wrong in the writer, if anything did."""
        if self.error is not None:
            raise self.error

    def spare(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes to open the next chunk into: a written one, a new
        one while fewer than ``window`` + 2 exist, else the next one written."""
        if self.unmade and self.spares.empty():  # this thread is the only reader
            self.unmade -= 1
            return bytearray(size)
        return self.spares.get()

    def put(self, index: int, plain: Buffer, buffer: bytearray) -> None:
        """Write ``plain`` (a view of ``buffer`` or not) as chunk ``index``; ``buffer``
        becomes a spare once written."""
        self.check()
        if self.thread is None:
            self._write(index, plain)
            self.spares.put(buffer)
        else:
            self.queue.put((index, plain, buffer))

    def finish(self) -> None:
        """Let the writer drain what it was given, then stop it."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()


def _write_at(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _place(partial: PartialDownload, force: bool) -> None:
    """Move the verified part file to the target name, then forget the state."""
    part, target = partial.part, partial.target
    try:
        if force:
            os.replace(part, target)
        else:
            _link_or_rename(part, target)
        _fsync_directory(target.parent)
    except FileExistsError:
        raise FileAccessError(f"{target} exists; use --force to replace it") from None
    except OSError as exc:
        raise FileAccessError(f"cannot create {target}: {exc.strerror or exc}") from exc
    partial.discard()


def _link_or_rename(part: Path, target: Path) -> None:
    # A hard link fails if the target exists, so a file that appeared meanwhile is kept;
    # where links are not supported, check and rename instead.
    try:
        os.link(part, target)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(part, target)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
