"""The upload pipeline: read, checksum, compress, seal and send a file chunk by chunk.

One attempt is ``UploadBegin`` (the server may already hold some chunks: resume), one
``UPLOAD_CHUNK`` per chunk with at most ``window`` in flight, ``UploadCommit``, then the
verdict. The client computes the POSIX ``cksum`` CRC of what it read and compares size and
CRC with what the server assembled: equal means ``UploadConfirm(OK)`` and a verified file;
different means ``RESEND`` and another attempt, up to :data:`MAX_ATTEMPTS`, then
``GIVE_UP`` and an :class:`IntegrityError`. A chunk the server could not authenticate
(altered in transit) fails the attempt the same way.

Guarantees: memory is bounded by the window, not the file: a few read buffers are reused
for every chunk (the sealed copy is what waits in flight), and the file is never read
whole. Reading and the CRC overlap with compressing and sealing (helper threads), and
both with the network (zmq's I/O thread).
Success is returned only for a file the server reported as verified. If the session
expires mid-upload the key exchange runs once more and the upload resumes.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue

import zmq
from zmq import MessageTracker

from client import session as core
from client.connection import FILE_SERVICE, Account
from client.progress import Progress
from client.throttle import Throttle
from common import crypto
from common.cksum import Cksum, CksumSha256
from common.codec import peek_request_id
from common.compress import compress_chunk
from common.errors import FileAccessError, IntegrityError, RefusedError, RemoteProtocolError
from common.fields import chunk_count_for
from common.log import get_logger
from common.messages import (
    Codec,
    ErrorCode,
    StreamPosition,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadReady,
    Verdict,
)

__all__ = [
    "MAX_ATTEMPTS",
    "UploadOptions",
    "UploadResult",
    "open_source",
    "unchanged",
    "upload_file",
]

MAX_ATTEMPTS = 3  # the seed's rule: CRC ok / resend / give up after three tries
# Chunks being compressed and sealed by a helper thread while the next one is read.
SEAL_AHEAD = 1
# Sealed buffers followed for reuse: the default window of 8 in flight, the ones being
# sealed, and room for a few the socket has not let go of yet.
SPARE_LIMIT = 16
_log = get_logger()


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """Upload tuning, from ``settings.client``."""

    chunk_size: int = 1024 * 1024
    compression: Codec = Codec.ZLIB
    level: int = 1
    rate: int | None = None  # --limit-rate: bytes per second on the wire
    sha256: bool = False  # --sha256: record the file's SHA-256 with it


@dataclass(frozen=True, slots=True)
class UploadResult:
    """A verified upload: the size and CRC both sides agreed on (and the SHA-256 recorded
    with it, with ``UploadOptions.sha256``)."""

    name: str
    size: int
    crc: int
    attempts: int
    sha256: bytes | None = None


class _Mismatch(Exception):
    """This attempt ended with a size/CRC disagreement or a refused chunk."""


class _SourceChanged(FileAccessError):
    """The file changed while this attempt read it: what was sent is no one version of it."""


def open_source(path: Path) -> tuple[io.FileIO, int]:
    """Open a regular file for reading; its size. FileAccessError on any failure."""
    try:
        # Unbuffered: readinto fills our buffer straight from the kernel, no second copy.
        stream = Path(path).open("rb", buffering=0)  # noqa: SIM115 (the caller closes it)
    except OSError as exc:
        raise FileAccessError(f"cannot read {path}: {exc.strerror or exc}") from exc
    info = os.fstat(stream.fileno())
    if not stat.S_ISREG(info.st_mode):
        stream.close()
        raise FileAccessError(f"cannot read {path}: not a regular file")
    return stream, info.st_size


def unchanged(account: Account, stream: io.FileIO, stored_source: bytes | None) -> bool:
    """True if ``stored_source``, the source token of a stored file, names this version
    of ``stream``: this client put a file of the same size and modification time."""
    return bool(stored_source) and stored_source == account.source_token(*_version(stream))


def upload_file(
    account: Account,
    stream: io.FileIO,
    size: int,
    name: str,
    options: UploadOptions,
    progress: Progress,
) -> UploadResult:
    """Upload the ``size`` bytes of ``stream`` (see :func:`open_source`) as ``name``.

    Returns only once the server has verified the file; the caller closes ``stream``.
    """
    attempt = 1  # counts on across a reconnect: only a verification failure ends an attempt

    def attempts() -> UploadResult:
        nonlocal attempt
        while True:
            try:
                return _attempt(account, stream, size, name, options, progress, attempt)
            except _Mismatch as exc:
                _log.warning("upload.mismatch", name=name, attempt=attempt, reason=str(exc))
                if attempt >= MAX_ATTEMPTS:
                    raise IntegrityError(
                        f"upload of {name} failed verification {attempt} times ({exc}); gave up"
                    ) from None
                attempt += 1

    return account.with_session(attempts)


def _attempt(
    account: Account,
    stream: io.FileIO,
    size: int,
    name: str,
    options: UploadOptions,
    progress: Progress,
    attempt: int,
) -> UploadResult:
    count = chunk_count_for(size, options.chunk_size)
    version = _version(stream)  # what is read must be this version, and only it resumes
    begin = UploadBegin(name, size, options.chunk_size, count, account.source_token(*version))
    ready = account.call(begin, UploadReady)
    last = attempt >= MAX_ATTEMPTS
    progress.reset(total=size)
    try:
        check = _send_chunks(account, stream, size, version, ready, options, progress)
    except _SourceChanged as exc:
        account.conn.reset()  # chunks of this attempt may still be in flight
        _confirm(account, ready.transfer_id, Verdict.GIVE_UP)  # nothing of it is kept
        raise FileAccessError(
            f"{name}: the file {exc} while it was being read; not stored"
        ) from None
    except RefusedError as exc:
        account.conn.reset()  # chunks of this attempt may still be in flight
        if exc.code != ErrorCode.INTEGRITY:
            raise
        _confirm(account, ready.transfer_id, Verdict.GIVE_UP if last else Verdict.RESEND)
        raise _Mismatch("a chunk failed authentication on the server") from exc
    crc, sha256 = check.digest(), check.sha256()
    committed = _commit(account, ready.transfer_id)
    if committed.transfer_id != ready.transfer_id:
        raise RemoteProtocolError("UploadCommitted names another transfer")
    if (committed.size, committed.crc) != (size, crc):
        _confirm(account, ready.transfer_id, Verdict.GIVE_UP if last else Verdict.RESEND)
        raise _Mismatch(
            f"server has {committed.size} bytes with CRC {committed.crc},"
            f" we sent {size} bytes with CRC {crc}"
        )
    done = account.call(UploadConfirm(ready.transfer_id, Verdict.OK, sha256), UploadDone)
    if not done.verified:
        raise IntegrityError(f"the server did not mark {name} as verified")
    _log.info("upload.done", name=name, size=size, crc=crc, attempts=attempt)
    return UploadResult(name, size, crc, attempt, sha256)


def _commit(account: Account, transfer_id: bytes) -> UploadCommitted:
    """Commit; a second time if the server reports a concurrent change (two workers may both
    hold the commit when the broker re-queued it), which then answers the settled state."""
    try:
        return account.call(UploadCommit(transfer_id), UploadCommitted)
    except RefusedError as exc:
        if exc.code != ErrorCode.CONFLICT:
            raise
        _log.info("upload.commit_again", reason=str(exc))
    return account.call(UploadCommit(transfer_id), UploadCommitted)


def _confirm(account: Account, transfer_id: bytes, verdict: Verdict) -> None:
    """Tell the server to drop a failed attempt; a refusal here changes nothing for us."""
    try:
        account.call(UploadConfirm(transfer_id, verdict), UploadDone)
    except RefusedError as exc:
        _log.info("upload.confirm_refused", verdict=verdict.name, code=exc.code)


def _send_chunks(
    account: Account,
    stream: io.FileIO,
    size: int,
    version: tuple[int, int],
    ready: UploadReady,
    options: UploadOptions,
    progress: Progress,
) -> Cksum:
    """Send every chunk the server lacks, ``window`` in flight; the CRC (and SHA-256, with
    ``options.sha256``) of the whole file.

    ``version`` (:func:`_version`) is the file's when the upload began: it must still be
    that once every chunk is stored, else what was sent is no one version of it."""
    crc = CksumSha256() if options.sha256 else Cksum()
    in_flight: dict[bytes, tuple[core.Outgoing, int]] = {}
    session = account.session
    bodies = _chunk_requests(session, stream, size, ready, options, crc, in_flight, progress)
    for reply in account.conn.transport.map(FILE_SERVICE, (req.frames for req in bodies)):
        req, length = in_flight.pop(peek_request_id(reply[0]))
        stored = core.open_chunk_stored(session, req, reply)
        if stored.transfer_id != ready.transfer_id:
            raise RemoteProtocolError("ChunkStored names another transfer")
        progress.update(length)
    if _version(stream) != version:  # a shorter or longer read has failed already
        raise _SourceChanged("changed")
    return crc


def _chunk_requests(
    session: core.Session,
    stream: io.FileIO,
    size: int,
    ready: UploadReady,
    options: UploadOptions,
    crc: Cksum,
    in_flight: dict[bytes, tuple[core.Outgoing, int]],
    progress: Progress,
) -> Iterator[core.Outgoing]:
    """The chunk requests of the chunks the server lacks, in order.

    Two stages overlap: this thread reads chunk ``i + 1`` and feeds the CRC (which must
    see the file in order) while a helper thread (:class:`_Sealer`) compresses and seals
    the :data:`SEAL_AHEAD` chunk(s) before it. Reading, the CRC, deflate and AES-GCM all
    release the GIL, so on two cores the stages really run at once. Each chunk in the
    works has its own read buffer; it is sealed into another buffer that the transport
    sends without copying, and that takes a later chunk once sent (:class:`_SentBuffers`).
    """
    chunk_size = options.chunk_size
    count = chunk_count_for(size, chunk_size)
    stored = frozenset(ready.stored)
    buffers = [memoryview(bytearray(min(chunk_size, size))) for _ in range(SEAL_AHEAD + 1)]
    free = 0  # the buffer no pending seal uses: the one used SEAL_AHEAD + 1 submits ago
    sealer = _Sealer(session, ready.data_key, options, helper=count > 1)
    throttle = Throttle(options.rate)

    def paced(done: tuple[core.Outgoing, int]) -> core.Outgoing:
        outgoing = _take(done, in_flight)
        throttle.take(len(outgoing.frames[1]))  # the sealed chunk, as it crosses the wire
        return outgoing

    try:
        stream.seek(0)
        for index in range(count):
            length = min(chunk_size, size - index * chunk_size)
            piece = buffers[free][:length]
            _read_exact(stream, piece)
            crc.update(piece)
            if index in stored:  # read for the CRC only; the buffer stays free
                progress.update(length)
                continue
            sealer.submit(StreamPosition(ready.transfer_id, index, index == count - 1), piece)
            free = (free + 1) % len(buffers)
            if sealer.pending > SEAL_AHEAD:
                yield paced(sealer.result())
        while sealer.pending:
            yield paced(sealer.result())
    finally:
        sealer.close()
    if stream.read(1):
        raise _SourceChanged("grew")


def _version(stream: io.FileIO) -> tuple[int, int]:
    """What a write to the file changes: its size and modification time."""
    info = os.fstat(stream.fileno())
    return info.st_size, info.st_mtime_ns


class _Sealer:
    """Compresses and seals chunks in the order they are submitted: on a helper thread,
    or for a single chunk on the submitting thread (a thread of its own costs more than
    sealing a small file).

    Two ``SimpleQueue``s (compiled) carry the helper's work: a ``ThreadPoolExecutor``
    costs a Future and a Python ``Condition`` per chunk, which on two busy cores was a
    noticeable part of the client's interpreter time.
    """

    def __init__(
        self, session: core.Session, data_key: bytes, options: UploadOptions, *, helper: bool
    ) -> None:
        self.session, self.data_key, self.options = session, data_key, options
        self.pending = 0  # submitted, result not yet taken
        self._buffers = _SentBuffers()
        self._jobs: SimpleQueue[tuple[StreamPosition, memoryview] | None] = SimpleQueue()
        self._done: SimpleQueue[tuple[core.Outgoing, int] | BaseException] = SimpleQueue()
        self._thread: threading.Thread | None = None
        if helper:
            self._thread = threading.Thread(target=self._run, name="cipherdrop-seal", daemon=True)
            self._thread.start()

    def submit(self, position: StreamPosition, piece: memoryview) -> None:
        self.pending += 1
        if self._thread is None:
            self._done.put(self._seal(position, piece))
        else:
            self._jobs.put((position, piece))

    def result(self) -> tuple[core.Outgoing, int]:
        """The oldest submitted chunk's request and plaintext length, or its error."""
        self.pending -= 1
        done = self._done.get()
        if isinstance(done, BaseException):
            raise done
        return done

    def close(self) -> None:
        """Stop the helper thread once it has sealed what it was given."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._done.put(self._seal(*job))
            except BaseException as exc:  # raised in the submitting thread by result()
                self._done.put(exc)

    def _seal(self, position: StreamPosition, piece: memoryview) -> tuple[core.Outgoing, int]:
        codec, data = compress_chunk(piece, self.options.compression, self.options.level)
        buffer = None
        if core.zero_copy(len(data)):  # a smaller one is copied: no buffer to lend
            buffer = self._buffers.take(self.options.chunk_size + crypto.OVERHEAD)
        request = core.chunk_request(self.session, self.data_key, position, codec, data, buffer)
        if buffer is not None:
            self._buffers.lend(buffer, request.frames[1])
        return request, len(piece)


class _SentBuffers:
    """Buffers chunks are sealed into, each reused once ZeroMQ has sent it: a new 1 MiB
    buffer per chunk would be zeroed first, with the GIL held.

    At most :data:`SPARE_LIMIT` are followed; one still unsent past that is left to the
    garbage collector (freed once sent), so memory stays bounded even if a send stalls.
    """

    def __init__(self) -> None:
        self._lent: deque[tuple[bytearray, MessageTracker]] = deque()

    def take(self, size: int) -> bytearray:
        """A sent buffer, or a new one of ``size`` bytes."""
        for position, (buffer, tracker) in enumerate(self._lent):
            if tracker.done:
                del self._lent[position]
                return buffer
        return bytearray(size)

    def lend(self, buffer: bytearray, payload: object) -> None:
        """Follow ``buffer`` until ``payload``, the frame sealed into it, is sent."""
        tracker = payload.tracker if isinstance(payload, zmq.Frame) else None
        if tracker is None:  # not sealed into ``buffer`` (it was too small): let it go
            return
        self._lent.append((buffer, tracker))
        if len(self._lent) > SPARE_LIMIT:
            self._lent.popleft()


def _take(
    sealed: tuple[core.Outgoing, int], in_flight: dict[bytes, tuple[core.Outgoing, int]]
) -> core.Outgoing:
    req, length = sealed
    in_flight[req.request_id] = (req, length)
    return req


def _read_exact(stream: io.FileIO, piece: memoryview) -> None:
    filled = 0
    while filled < len(piece):
        try:
            got = stream.readinto(piece[filled:])
        except OSError as exc:
            raise FileAccessError(f"cannot read the file: {exc.strerror or exc}") from exc
        if not got:
            raise _SourceChanged("shrank")
        filled += got
