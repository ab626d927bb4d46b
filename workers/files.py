"""The ``cipherdrop.file`` service: uploads (:mod:`workers.uploads`), list, download, delete.

Every request is session-protected and answered under the session key; a client sees
and touches only its own files and transfers (anything else is ``not-found``).
Downloads send each stored chunk exactly as it was uploaded: sealed under the file's
data key, which :class:`DownloadReady` hands to the owner inside the session-sealed reply.
"""

from __future__ import annotations

from common.errors import RefusedError
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
    MessageType,
    StreamPosition,
)
from workers.blobs import Blobs
from workers.datadir import DataDir
from workers.protection import SessionKey, data_reply
from workers.service import Context, DataReply, Dispatcher, Route
from workers.sessions import SessionCache
from workers.store import Store
from workers.uploads import Uploads, data_key_context

__all__ = ["SERVICE", "file_service"]

SERVICE = "cipherdrop.file"


class Files:
    """List, download and delete."""

    def __init__(self, store: Store, blobs: Blobs, data: DataDir) -> None:
        self.store = store
        self.blobs = blobs
        self.master = data.master

    def list(self, ctx: Context, msg: ListFiles) -> FileList:
        rows = self.store.list_files(ctx.client_id)
        return FileList(
            tuple(
                FileInfo(row.name, row.size, row.uploaded_at, row.verified, row.crc, row.sha256)
                for row in rows
            )
        )

    def download(self, ctx: Context, msg: DownloadBegin) -> DownloadReady:
        row = self.store.get_file(ctx.client_id, msg.name)
        if row is None:
            raise RefusedError(ErrorCode.NOT_FOUND, "no such file")
        key = self.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        return DownloadReady(
            row.transfer_id, key, row.size, row.chunk_size, row.chunk_count, row.crc
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

    def delete(self, ctx: Context, msg: DeleteFile) -> Deleted:
        replies = {existed: Deleted(msg.name, existed) for existed in (False, True)}
        removed = self.store.delete_file(
            ctx.client_id, msg.name, ctx.now, lambda existed: ctx.record(replies[existed])
        )
        if removed is not None:
            self.blobs.remove(removed)
        return replies[removed is not None]


def file_service(
    store: Store, data: DataDir, max_chunk_size: int, sessions: SessionCache | None = None
) -> Dispatcher:
    blobs = Blobs(data.blobs_path)
    uploads = Uploads(store, blobs, data.master, max_chunk_size)
    files = Files(store, blobs, data)
    session = Flags.SESSION
    routes = {
        MessageType.UPLOAD_BEGIN: Route(session, uploads.begin, mutating=True),
        MessageType.UPLOAD_CHUNK: Route(session, uploads.chunk),
        MessageType.UPLOAD_COMMIT: Route(session, uploads.commit, mutating=True),
        MessageType.UPLOAD_CONFIRM: Route(session, uploads.confirm, mutating=True),
        MessageType.LIST_FILES: Route(session, files.list),
        MessageType.DOWNLOAD_BEGIN: Route(session, files.download),
        MessageType.DOWNLOAD_CHUNK: Route(session, files.chunk),
        MessageType.DELETE_FILE: Route(session, files.delete, mutating=True),
    }
    return Dispatcher(
        routes,
        store=store,
        master=data.master,
        sessions=sessions or SessionCache(store, data.master),
    )
