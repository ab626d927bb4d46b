"""The ``cipherdrop.file`` service: uploads (:mod:`workers.uploads`), list, download, delete,
rename.

Every request is session-protected and answered under the session key; a client sees
and touches only its own files and transfers (anything else is ``not-found``).
Downloads send each stored chunk exactly as it was uploaded: sealed under the file's
data key, which :class:`DownloadReady` hands to the owner inside the session-sealed reply.
The server never decrypts a chunk on the way out: a download costs one file read per chunk.

Guarantees:

* Deleting removes the file row (and its upload) in one transaction that records the
  reply, then the stored chunks, so the space is reclaimed; a retry of the same request
  gets the same ``Deleted`` answer. A crash between the two leaves only unreferenced
  blobs, which the start-up sweep removes. Renaming is one such transaction too; a file
  it replaces goes the same way. Chunks are sealed under their transfer id, never the
  name, so a renamed file's contents stay as they are.
* A listing is paged (:data:`LIST_PAGE` files per reply, in name order, ``more`` when
  there are others), so its reply stays small whatever a client stores; so is the list
  of unfinished uploads (in transfer id order), which the client discards with
  ``UploadConfirm(GIVE_UP)``.
* Unfinished uploads older than ``upload_expiry`` are discarded and their chunks
  removed, and recorded replies no retry can reach any more are forgotten
  (:class:`Expiry`). The check runs on the first request a worker handles and
  then at most once per :data:`EXPIRY_INTERVAL`, on ``UploadBegin``, ``ListFiles``,
  ``ListUploads``, ``DownloadBegin`` and ``DeleteFile``; never on the chunk path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from common.errors import RefusedError, StorageError
from common.messages import (
    Deleted,
    DeleteFile,
    DownloadBegin,
    DownloadChunk,
    DownloadReady,
    ErrorCode,
    FileInfo,
    FileList,
    Flags,
    ListFiles,
    ListUploads,
    MessageType,
    Renamed,
    RenameFile,
    StreamPosition,
    UploadInfo,
    UploadList,
)
from config.sections import MAX_SESSION_TTL
from workers.blobs import Blobs
from workers.datadir import DataDir
from workers.protection import SessionKey, data_reply
from workers.service import Context, DataReply, Dispatcher, Route
from workers.sessions import SessionCache
from workers.store import FileRow, Rename, Store
from workers.uploads import Uploads, data_key_context, open_sha256

__all__ = ["DEFAULT_UPLOAD_EXPIRY", "EXPIRY_INTERVAL", "SERVICE", "Expiry", "file_service"]

SERVICE = "cipherdrop.file"
DEFAULT_UPLOAD_EXPIRY = 24 * 3600.0  # seconds, as ``store.upload_expiry``
EXPIRY_INTERVAL = 60_000  # ms between two checks for expired uploads in one worker
# Files per FileList page: at most ~1.1 MB even with the longest names (255 code points of
# 4 bytes each), far below any message size limit, however many files a client keeps.
LIST_PAGE = 1000
# Recorded replies are kept this long (ms): longer than any request can still be taken.
# A request under a session is refused once the session (at most MAX_SESSION_TTL long)
# has ended, before its reply is looked up; a key request, outside its 5-minute window; a
# registration runs again and finds its name taken (names are never freed).
REPLY_RETENTION = int((MAX_SESSION_TTL + 24 * 3600) * 1000)


class Expiry:
    """Discards unfinished uploads begun more than ``age`` ms ago, and recorded replies
    older than :data:`REPLY_RETENTION`, at most once per ``interval`` ms; the first call
    always checks. Times are ms since the epoch."""

    def __init__(self, store: Store, blobs: Blobs, age: int, interval: int = EXPIRY_INTERVAL):
        self.store = store
        self.blobs = blobs
        self.age = age
        self.interval = interval
        self._next: int | None = None

    def run(self, now: int) -> list[bytes]:
        """Check now if it is time; the transfer ids discarded (their blobs are gone)."""
        if self._next is not None and now < self._next:
            return []
        self._next = now + self.interval
        # Housekeeping only: what fails here (a busy store) is tried again at the next check.
        try:
            expired = self.store.expire_uploads(now - self.age)
        except StorageError:
            expired = []
        for transfer_id in expired:
            self.blobs.remove(transfer_id)
        with contextlib.suppress(StorageError):
            self.store.prune_replies(now - REPLY_RETENTION)
        return expired


def _after(expiry: Expiry, handler: Callable[[Context, Any], Any]) -> Callable[[Context, Any], Any]:
    """``handler``, preceded by an expiry check."""

    def handle(ctx: Context, msg: Any) -> Any:
        expiry.run(ctx.now)
        return handler(ctx, msg)

    return handle


class Files:
    """List, download and delete."""

    def __init__(self, store: Store, blobs: Blobs, data: DataDir) -> None:
        self.store = store
        self.blobs = blobs
        self.master = data.master

    def list(self, ctx: Context, msg: ListFiles) -> FileList:
        rows = self.store.list_files(ctx.client_id, msg.after, LIST_PAGE + 1)
        return FileList(
            tuple(
                FileInfo(
                    row.name,
                    row.size,
                    row.uploaded_at,
                    row.verified,
                    row.crc,
                    self._sha256(row),
                    row.source,
                )
                for row in rows[:LIST_PAGE]
            ),
            more=len(rows) > LIST_PAGE,
        )

    def _sha256(self, row: FileRow) -> bytes | None:
        if row.sha256 is None:
            return None
        key = self.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        return open_sha256(key, row.transfer_id, row.sha256)

    def list_uploads(self, ctx: Context, msg: ListUploads) -> UploadList:
        rows = self.store.list_unfinished(ctx.client_id, msg.after, LIST_PAGE + 1)
        return UploadList(
            tuple(
                UploadInfo(row.transfer_id, row.name, row.size, row.held, row.created_at)
                for row in rows[:LIST_PAGE]
            ),
            more=len(rows) > LIST_PAGE,
        )

    def download(self, ctx: Context, msg: DownloadBegin) -> DownloadReady:
        row = self.store.get_file(ctx.client_id, msg.name)
        if row is None:
            raise RefusedError(ErrorCode.NOT_FOUND, "no such file")
        key = self.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        sha256 = open_sha256(key, row.transfer_id, row.sha256)
        return DownloadReady(
            row.transfer_id, key, row.size, row.chunk_size, row.chunk_count, row.crc, sha256
        )

    def chunk(self, ctx: Context, msg: DownloadChunk) -> DataReply:
        row = self.store.get_file_by_transfer(ctx.client_id, msg.transfer_id)
        if row is None or msg.index >= row.chunk_count:
            raise RefusedError(ErrorCode.NOT_FOUND, "no such file or chunk")
        codec, sealed = self.blobs.read(row.transfer_id, msg.index)
        stream = StreamPosition(row.transfer_id, msg.index, msg.index == row.chunk_count - 1)
        if not isinstance(ctx.protection, SessionKey):
            raise RefusedError(ErrorCode.BAD_REQUEST, "downloads need a session")
        return DataReply(data_reply(ctx.protection, ctx.envelope.request_id, stream, codec, sealed))

    def rename(self, ctx: Context, msg: RenameFile) -> Renamed:
        replies = {
            replaced: Renamed(msg.name, msg.new_name, replaced) for replaced in (False, True)
        }
        outcome, replaced = self.store.rename_file(
            ctx.client_id,
            msg.name,
            msg.new_name,
            msg.replace,
            ctx.now,
            lambda replaced: ctx.record(replies[replaced]),
        )
        if outcome is Rename.MISSING:
            raise RefusedError(ErrorCode.NOT_FOUND, "no such file")
        if outcome is Rename.TAKEN:
            raise RefusedError(ErrorCode.CONFLICT, f"a file named {msg.new_name} exists")
        if replaced is not None:  # the replaced file's contents: the reply need not wait
            self.blobs.remove_soon(replaced)
        return replies[replaced is not None]

    def delete(self, ctx: Context, msg: DeleteFile) -> Deleted:
        replies = {existed: Deleted(msg.name, existed) for existed in (False, True)}
        removed = self.store.delete_file(
            ctx.client_id, msg.name, ctx.now, lambda existed: ctx.record(replies[existed])
        )
        if removed is not None:
            self.blobs.remove(removed)
        return replies[removed is not None]


def file_service(
    store: Store,
    data: DataDir,
    max_chunk_size: int,
    sessions: SessionCache | None = None,
    *,
    upload_expiry: float = DEFAULT_UPLOAD_EXPIRY,
    min_free_space: int = 0,
    quota: int = 0,
) -> Dispatcher:
    """The dispatcher of ``cipherdrop.file``; ``upload_expiry`` in seconds, the space a new
    upload must leave free and each client's quota in bytes (:class:`workers.uploads.Uploads`)."""
    blobs = Blobs(data.blobs_path)
    uploads = Uploads(
        store, blobs, data.master, max_chunk_size, min_free_space=min_free_space, quota=quota
    )
    files = Files(store, blobs, data)
    expiry = Expiry(store, blobs, round(upload_expiry * 1000))
    session = Flags.SESSION
    routes = {
        MessageType.UPLOAD_BEGIN: Route(session, _after(expiry, uploads.begin), mutating=True),
        MessageType.UPLOAD_CHUNK: Route(session, uploads.chunk),
        MessageType.UPLOAD_COMMIT: Route(session, uploads.commit, mutating=True),
        MessageType.UPLOAD_CONFIRM: Route(session, uploads.confirm, mutating=True),
        MessageType.LIST_FILES: Route(session, _after(expiry, files.list)),
        MessageType.LIST_UPLOADS: Route(session, _after(expiry, files.list_uploads)),
        MessageType.DOWNLOAD_BEGIN: Route(session, _after(expiry, files.download)),
        MessageType.DOWNLOAD_CHUNK: Route(session, files.chunk),
        MessageType.DELETE_FILE: Route(session, _after(expiry, files.delete), mutating=True),
        MessageType.RENAME_FILE: Route(session, files.rename, mutating=True),
    }
    return Dispatcher(
        routes,
        store=store,
        master=data.master,
        sessions=sessions or SessionCache(store, data.master),
    )
