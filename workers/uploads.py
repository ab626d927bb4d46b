"""Upload handlers of the ``cipherdrop.file`` service: begin, chunks, commit, confirm.

The state of an upload lives in the store (``uploads.state``: open -> committed -> done,
or deleted when discarded), so any file worker can take any request of any upload.

Guarantees:

* A chunk is stored only if it opens under the upload's data key at its index with the
  right final flag and codec (``integrity`` otherwise), decompresses within the chunk
  size, and has exactly the plaintext length the chunking rule gives its index
  (``conflict`` otherwise). The sealed bytes are stored as received; nothing is stored
  for a refused chunk. A chunk already stored is acknowledged without being rewritten.
* Commit succeeds only with every chunk ``0 .. n-1`` present and their sizes adding up
  to the declared size; its CRC is the POSIX ``cksum`` of the plaintext, combined from
  the per-chunk parts; the chunks are made durable before the CRC is returned.
* Confirm OK publishes the file and replaces an older one of that name in one
  transaction (the old contents are removed after it); RESEND / GIVE_UP discard the upload.
* A client can name only its own uploads: another client's transfer id is ``not-found``.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from common import crypto
from common.compress import Buffer, decompress_chunk
from common.errors import RefusedError, RemoteProtocolError
from common.fields import ID_LEN, MAX_LIST_LEN
from common.messages import (
    ChunkStored,
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
from workers.blobs import Blobs
from workers.crc_combine import chunk_part, combine
from workers.datadir import MasterKey
from workers.service import Context
from workers.store import ChunkRow, OverQuota, Store, UploadRow

__all__ = ["Uploads", "data_key_context", "open_sha256", "seal_sha256"]


def data_key_context(transfer_id: bytes) -> bytes:
    """The master-key wrapping context of a transfer's data key."""
    return b"data-key:" + transfer_id


def _sha256_context(transfer_id: bytes) -> bytes:
    return b"sha256:" + transfer_id


def seal_sha256(data_key: bytes, transfer_id: bytes, digest: bytes) -> bytes:
    """A file's SHA-256 as the store keeps it: sealed under the file's own data key, so a
    stolen database cannot confirm a guess of the contents with it."""
    return crypto.seal(data_key, digest, _sha256_context(transfer_id))


def open_sha256(data_key: bytes, transfer_id: bytes, sealed: bytes | None) -> bytes | None:
    """The SHA-256 recorded with a file (see :func:`seal_sha256`), or None."""
    if sealed is None:
        return None
    return crypto.open_sealed(data_key, sealed, _sha256_context(transfer_id))


def chunk_aad(transfer_id: bytes, codec: int) -> bytes:
    """The caller's part of a chunk's associated data (flows.md section 4)."""
    return transfer_id + bytes([codec])


def _conflict(message: str) -> RefusedError:
    return RefusedError(ErrorCode.CONFLICT, message)


_NOT_FOUND = "no such upload"


@dataclass(frozen=True, slots=True)
class _Open:
    """An upload's fixed facts and its unwrapped data key, cached per process."""

    row: UploadRow
    data_key: bytes = field(repr=False)


class Uploads:
    """The upload handlers; the store, blobs and master key are given.

    A new upload is refused ``no-space`` when storing it whole would leave less than
    ``min_free_space`` bytes free on the blobs' file system: the client learns it before
    sending anything, not near the end. Uploads running at once each see the space free
    when they began, so a write can still find the disk full; that chunk is refused
    ``no-space`` too (common.errors.NoSpaceError) and the upload can resume later.

    With a quota (the client's own, set by the operator, else ``quota``; bytes, 0 is none),
    a new upload is refused ``over-quota`` when the sizes of the client's files and
    unfinished uploads, with its own, would pass it
    (:meth:`workers.tables.UploadTables.create_upload`). A resume is never refused: its
    size was counted when it began.
    """

    def __init__(
        self,
        store: Store,
        blobs: Blobs,
        master: MasterKey,
        max_chunk_size: int,
        cache: int = 256,
        *,
        min_free_space: int = 0,
        quota: int = 0,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.master = master
        self.max_chunk_size = max_chunk_size
        self.min_free_space = min_free_space
        self.quota = quota
        self._cache: OrderedDict[bytes, _Open] = OrderedDict()
        self._cache_size = cache
        self._scratch = bytearray()  # plaintext of the chunk being checked

    def _owned(self, ctx: Context, transfer_id: bytes) -> UploadRow:
        row = self.store.get_upload(transfer_id)
        if row is None or row.client_id != ctx.client_id:
            raise RefusedError(ErrorCode.NOT_FOUND, _NOT_FOUND)
        return row

    def _open_upload(self, ctx: Context, transfer_id: bytes) -> _Open:
        cached = self._cache.get(transfer_id)
        if cached is None:
            row = self._owned(ctx, transfer_id)
            key = self.master.unwrap(row.data_key, data_key_context(transfer_id))
            cached = self._cache[transfer_id] = _Open(row, key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if cached.row.client_id != ctx.client_id:
            raise RefusedError(ErrorCode.NOT_FOUND, _NOT_FOUND)
        return cached

    def begin(self, ctx: Context, msg: UploadBegin) -> UploadReady:
        if msg.chunk_size > self.max_chunk_size:
            raise RefusedError(ErrorCode.TOO_LARGE, f"chunk_size above {self.max_chunk_size}")
        if msg.chunk_count > MAX_LIST_LEN:
            raise RefusedError(ErrorCode.TOO_LARGE, f"more than {MAX_LIST_LEN} chunks")
        old = self.store.find_open_upload(
            ctx.client_id, msg.name, msg.size, msg.chunk_size, msg.source
        )
        if old is not None:  # resume
            key = self.master.unwrap(old.data_key, data_key_context(old.transfer_id))
            reply = UploadReady(old.transfer_id, key, self.store.stored_indexes(old.transfer_id))
            self.store.record_reply(ctx.record(reply), ctx.now)
            return reply
        needed = msg.size + msg.chunk_count * crypto.OVERHEAD  # the chunks' sealed bytes at most
        if self.blobs.free_space() - needed < self.min_free_space:
            raise RefusedError(ErrorCode.NO_SPACE, f"the server has no room for {msg.size} bytes")
        transfer_id = secrets.token_bytes(ID_LEN)
        key = crypto.random_key()
        row = UploadRow(
            transfer_id,
            ctx.client_id,
            msg.name,
            msg.size,
            msg.chunk_size,
            msg.chunk_count,
            self.master.wrap(key, data_key_context(transfer_id)),
        )
        reply = UploadReady(transfer_id, key, ())
        try:
            self.store.create_upload(row, ctx.now, ctx.record(reply), msg.source, self.quota)
        except OverQuota as exc:
            raise RefusedError(
                ErrorCode.OVER_QUOTA,
                f"{msg.size} more bytes would pass this client's quota of {exc.quota} bytes"
                f" ({exc.used} in use, unfinished uploads included)",
            ) from exc
        return reply

    def chunk(self, ctx: Context, payload: memoryview) -> ChunkStored:
        stream = ctx.envelope.stream
        if stream is None:  # the envelope codec guarantees it; keeps the type checker honest
            raise RemoteProtocolError("chunk without a stream position")
        upload = self._open_upload(ctx, stream.transfer_id)
        row = upload.row
        self._check_position(row, stream)
        if len(payload) > row.chunk_size + crypto.OVERHEAD:
            raise RefusedError(ErrorCode.TOO_LARGE, "the chunk is larger than its chunk size")
        codec = int(ctx.envelope.codec)
        plain = self._plaintext(upload.data_key, stream, codec, payload, row.chunk_size)
        expected = _plain_size(row, stream.index)
        if len(plain) != expected:
            raise _conflict(f"chunk {stream.index} holds {len(plain)} bytes, expected {expected}")
        stored = ChunkRow(stream.index, len(payload), len(plain), chunk_part(plain))
        reply = ChunkStored(stream.transfer_id, stream.index)
        # Under the slot's lock: a copy sealed differently (a resumed upload racing its own
        # leftover requests) waits, then finds the row and leaves the slot alone.
        with self.blobs.slot(stream.transfer_id, stream.index, row.chunk_size) as slot:
            if self.store.get_chunk(stream.transfer_id, stream.index) is not None:
                return reply  # a retry, authenticated: already stored, nothing to do
            slot.write(codec, payload)
            if self.store.add_chunk(stream.transfer_id, stored):
                return reply
        if self.store.get_upload(stream.transfer_id) is None:
            self._cache.pop(stream.transfer_id, None)
            self.blobs.remove_soon(stream.transfer_id)  # discarded meanwhile
        raise _conflict("the upload is no longer open")

    def _plaintext(
        self, key: bytes, stream: StreamPosition, codec: int, payload: memoryview, limit: int
    ) -> Buffer:
        """The chunk opened (into a buffer reused for every chunk) and decompressed."""
        size = max(len(payload) - crypto.OVERHEAD, 0)
        if len(self._scratch) < size:
            self._scratch = bytearray(max(size, limit))
        opened = crypto.open_chunk_into(
            key,
            stream.index,
            stream.final,
            payload,
            memoryview(self._scratch),
            aad=chunk_aad(stream.transfer_id, codec),
        )
        try:  # Codec.NONE: the view itself; the caller is done with it before the next chunk
            return decompress_chunk(codec, opened, limit)
        except RemoteProtocolError as exc:
            raise RefusedError(ErrorCode.INTEGRITY, "the chunk does not decompress") from exc

    @staticmethod
    def _check_position(row: UploadRow, stream: StreamPosition) -> None:
        if stream.index >= row.chunk_count:
            raise _conflict(f"chunk index {stream.index} beyond chunk_count {row.chunk_count}")
        if stream.final != (stream.index == row.chunk_count - 1):
            raise _conflict("only the last chunk is final")

    def commit(self, ctx: Context, msg: UploadCommit) -> UploadCommitted:
        """Check, sync and mark committed; idempotent by the transfer's state.

        A commit of a transfer already committed (or published) answers the recorded size
        and CRC again. Two workers may commit one transfer at once (the broker gave a
        request it thought lost to another worker, or the client committed again): both do
        the work, one marks the transfer, and the other answers what it finds, so neither
        hands the client a spurious failure.
        """
        row = self._owned(ctx, msg.transfer_id)
        if (settled := _settled(row)) is not None:
            return settled
        if row.state != "open":
            raise _conflict("the upload is finished")
        chunks = self.store.chunks(row.transfer_id)
        if [chunk.index for chunk in chunks] != list(range(row.chunk_count)):
            raise _conflict(f"{len(chunks)} of {row.chunk_count} chunks stored")
        if sum(chunk.plain_size for chunk in chunks) != row.size:
            raise RefusedError(ErrorCode.INTEGRITY, "the chunks do not add up to the size")
        crc = combine((chunk.crc_part, chunk.plain_size) for chunk in chunks)
        self.blobs.sync(row.transfer_id)
        reply = UploadCommitted(row.transfer_id, row.size, crc)
        if self.store.commit_upload(row.transfer_id, crc, ctx.now, ctx.record(reply)):
            return reply
        now = self._owned(ctx, msg.transfer_id)
        if (settled := _settled(now)) is not None and settled.crc == crc:
            return settled  # committed meanwhile by another worker, with the same result
        raise _conflict("the upload changed meanwhile")

    def confirm(self, ctx: Context, msg: UploadConfirm) -> UploadDone:
        row = self._owned(ctx, msg.transfer_id)
        self._cache.pop(row.transfer_id, None)
        if msg.verdict is not Verdict.OK:
            if row.state == "done":
                raise _conflict("the upload is already a file")
            self.store.discard_upload(row.transfer_id, ctx.now, ctx.record(_done(row, False)))
            # No row names the file now; unlinking a large one takes seconds, and this runs
            # on the worker's I/O thread: the reply need not wait for it.
            self.blobs.remove_soon(row.transfer_id)
            return _done(row, False)
        if row.state != "committed":
            raise _conflict("confirm needs a committed upload")
        location = self.blobs.location(row.transfer_id)
        sha256 = None
        if msg.sha256 is not None:
            key = self.master.unwrap(row.data_key, data_key_context(row.transfer_id))
            sha256 = seal_sha256(key, row.transfer_id, msg.sha256)
        done = _done(row, True)
        published = self.store.publish_upload(row, location, sha256, ctx.now, ctx.record(done))
        if not published.done:
            raise _conflict("the upload changed meanwhile")
        if published.replaced is not None:  # the old version: the reply need not wait
            self.blobs.remove_soon(published.replaced)
        return done


def _settled(row: UploadRow) -> UploadCommitted | None:
    """The commit answer of a transfer whose CRC is settled (committed or published)."""
    if row.state in ("committed", "done") and row.crc is not None:
        return UploadCommitted(row.transfer_id, row.size, row.crc)
    return None


def _done(row: UploadRow, verified: bool) -> UploadDone:
    return UploadDone(row.name, verified)


def _plain_size(row: UploadRow, index: int) -> int:
    if index < row.chunk_count - 1:
        return row.chunk_size
    return row.size - row.chunk_size * (row.chunk_count - 1)
