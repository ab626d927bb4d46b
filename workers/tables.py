"""Upload, chunk and file tables of the store (a base of :class:`workers.store.Store`).

Same rules as the store: each changing method is one ``BEGIN IMMEDIATE`` transaction that
also records the request's reply; ``sqlite3.Error`` becomes ``StorageError``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from workers import db
from workers.db import translated
from workers.rows import (
    ChunkRow,
    DuplicateRequest,
    FileRow,
    OverQuota,
    Published,
    Rename,
    ReplyRecord,
    UnfinishedRow,
    UploadRow,
)

__all__ = ["Tables", "UploadTables"]

_FILE_SELECT = """SELECT f.name, f.location, f.verified, f.size, f.crc, f.sha256,
    f.uploaded_at, f.data_key, f.transfer_id, u.chunk_size, u.chunk_count, u.source
    FROM files f JOIN uploads u ON u.transfer_id = f.transfer_id"""


def _file(row: tuple[Any, ...]) -> FileRow:
    name, location, verified, size, crc, sha256, uploaded_at, data_key, tid, cs, cc, src = row
    return FileRow(
        name, location, bool(verified), size, crc, sha256, uploaded_at, data_key, tid, cs, cc, src
    )


class Tables:
    """One connection and the reply recording every changing method shares."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._db = conn

    def _record(self, record: ReplyRecord | None, now: int) -> None:
        if record is None:
            return
        try:
            self._db.execute(
                "INSERT INTO replies VALUES (?, ?, ?, ?, ?)",
                (record.client_id, record.request_id, record.digest, record.reply, now),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRequest("reply already recorded") from exc


class UploadTables(Tables):
    """Transfers, their chunks, and the files they become."""

    # -- uploads -------------------------------------------------------------------------

    @translated
    def find_open_upload(
        self, client_id: bytes, name: str, size: int, chunk_size: int, source: bytes = b""
    ) -> UploadRow | None:
        """The unfinished upload this UploadBegin resumes, if there is one."""
        row = self._db.execute(
            """SELECT transfer_id, client_id, name, size, chunk_size, chunk_count, data_key,
                state, crc FROM uploads WHERE client_id = ? AND name = ?
                AND size = ? AND chunk_size = ? AND source = ? AND state = 'open'
                ORDER BY created_at DESC LIMIT 1""",
            (client_id, name, size, chunk_size, source),
        ).fetchone()
        return None if row is None else UploadRow(*row)

    @translated
    def create_upload(
        self,
        upload: UploadRow,
        now: int,
        record: ReplyRecord,
        source: bytes = b"",
        quota: int = 0,
    ) -> None:
        """Record a new upload; raise :class:`OverQuota` instead if it would take the
        client's files and unfinished uploads past its quota: the client's own if the
        operator set one, else ``quota`` (0: none).

        The sum and the insert are one write transaction, so uploads begun at once in
        several workers cannot pass the quota together. The file this upload would
        replace is not counted: it goes when the new one is confirmed.
        """
        with db.write(self._db):
            own = self._db.execute(
                "SELECT quota FROM clients WHERE id = ?", (upload.client_id,)
            ).fetchone()
            if own is not None and own[0] is not None:
                quota = own[0]
            if quota:
                used = self._db.execute(
                    """SELECT coalesce(sum(size), 0) FROM uploads
                       WHERE client_id = ? AND NOT (state = 'done' AND name = ?)""",
                    (upload.client_id, upload.name),
                ).fetchone()[0]
                if used + upload.size > quota:
                    raise OverQuota(used, quota)
            self._db.execute(
                """INSERT INTO uploads (transfer_id, client_id, name, size, chunk_size,
                   chunk_count, data_key, state, crc, created_at, source)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                (*_upload_values(upload), now, source),
            )
            self._record(record, now)

    @translated
    def record_reply(self, record: ReplyRecord, now: int) -> None:
        """Remember a reply whose effect is already stored (a resumed upload)."""
        with db.write(self._db):
            self._record(record, now)

    @translated
    def list_unfinished(
        self, client_id: bytes, after: bytes = b"", limit: int = -1
    ) -> list[UnfinishedRow]:
        """The client's unfinished (open or committed) uploads whose transfer ids sort
        after ``after``, in that order; at most ``limit`` (-1: all)."""
        rows = self._db.execute(
            """SELECT u.transfer_id, u.name, u.size,
                 (SELECT coalesce(sum(c.plain_size), 0) FROM chunks c
                  WHERE c.transfer_id = u.transfer_id),
                 u.created_at
               FROM uploads u WHERE u.client_id = ? AND u.state != 'done'
                 AND u.transfer_id > ? ORDER BY u.transfer_id LIMIT ?""",
            (client_id, after, limit),
        )
        return [UnfinishedRow(*row) for row in rows]

    @translated
    def get_upload(self, transfer_id: bytes) -> UploadRow | None:
        row = self._db.execute(
            """SELECT transfer_id, client_id, name, size, chunk_size, chunk_count, data_key,
               state, crc FROM uploads WHERE transfer_id = ?""",
            (transfer_id,),
        ).fetchone()
        return None if row is None else UploadRow(*row)

    @translated
    def stored_indexes(self, transfer_id: bytes) -> tuple[int, ...]:
        rows = self._db.execute(
            "SELECT idx FROM chunks WHERE transfer_id = ? ORDER BY idx", (transfer_id,)
        )
        return tuple(row[0] for row in rows)

    @translated
    def get_chunk(self, transfer_id: bytes, index: int) -> ChunkRow | None:
        row = self._db.execute(
            """SELECT idx, stored_size, plain_size, crc_part FROM chunks
               WHERE transfer_id = ? AND idx = ?""",
            (transfer_id, index),
        ).fetchone()
        return None if row is None else ChunkRow(*row)

    @translated
    def add_chunk(self, transfer_id: bytes, chunk: ChunkRow) -> bool:
        """Record a stored chunk; False if the upload is no longer open (nothing changed)."""
        with db.write(self._db):
            cursor = self._db.execute(
                """INSERT OR IGNORE INTO chunks SELECT ?, ?, ?, ?, ? WHERE EXISTS
                   (SELECT 1 FROM uploads WHERE transfer_id = ? AND state = 'open')""",
                (
                    transfer_id,
                    chunk.index,
                    chunk.stored_size,
                    chunk.plain_size,
                    chunk.crc_part,
                    transfer_id,
                ),
            )
            if cursor.rowcount == 1:
                return True
            state = self._db.execute(
                "SELECT state FROM uploads WHERE transfer_id = ?", (transfer_id,)
            ).fetchone()
        return state is not None and state[0] == "open"

    @translated
    def chunks(self, transfer_id: bytes) -> list[ChunkRow]:
        rows = self._db.execute(
            """SELECT idx, stored_size, plain_size, crc_part FROM chunks
               WHERE transfer_id = ? ORDER BY idx""",
            (transfer_id,),
        )
        return [ChunkRow(*row) for row in rows]

    @translated
    def commit_upload(self, transfer_id: bytes, crc: int, now: int, record: ReplyRecord) -> bool:
        """Mark an open upload committed with its CRC; False if it was not open."""
        with db.write(self._db):
            updated = self._db.execute(
                "UPDATE uploads SET state = 'committed', crc = ? "
                "WHERE transfer_id = ? AND state = 'open'",
                (crc, transfer_id),
            ).rowcount
            if updated:
                self._record(record, now)
        return bool(updated)

    @translated
    def publish_upload(
        self,
        upload: UploadRow,
        location: str,
        sha256: bytes | None,
        now: int,
        record: ReplyRecord,
    ) -> Published:
        """Make a committed upload the client's verified file of that name, in one step,
        with the SHA-256 its client recorded, as sealed by ``workers.uploads`` (or none)."""
        with db.write(self._db):
            updated = self._db.execute(
                "UPDATE uploads SET state = 'done' WHERE transfer_id = ? AND state = 'committed'",
                (upload.transfer_id,),
            ).rowcount
            if not updated:
                return Published(False, None)
            old = self._remove_file(upload.client_id, upload.name)
            self._db.execute(
                "INSERT INTO files VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                (
                    upload.client_id,
                    upload.name,
                    location,
                    upload.size,
                    upload.crc,
                    sha256,
                    now,
                    upload.data_key,
                    upload.transfer_id,
                ),
            )
            self._record(record, now)
        return Published(True, old)

    @translated
    def discard_upload(self, transfer_id: bytes, now: int, record: ReplyRecord) -> bool:
        """Forget an unfinished upload and its chunks; False if there was none."""
        with db.write(self._db):
            deleted = self._db.execute(
                "DELETE FROM uploads WHERE transfer_id = ? AND state != 'done'", (transfer_id,)
            ).rowcount
            self._record(record, now)
        return bool(deleted)

    # -- files -------------------------------------------------------------------------

    def _remove_file(self, client_id: bytes, name: str) -> bytes | None:
        row = self._db.execute(
            "DELETE FROM files WHERE client_id = ? AND name = ? RETURNING transfer_id",
            (client_id, name),
        ).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM uploads WHERE transfer_id = ?", (row[0],))
        return bytes(row[0])

    @translated
    def delete_file(
        self, client_id: bytes, name: str, now: int, record: Callable[[bool], ReplyRecord]
    ) -> bytes | None:
        """Remove a file; the transfer id whose blobs are now garbage, or None.

        ``record(existed)`` gives the reply to record, which depends on what was found.
        """
        with db.write(self._db):
            removed = self._remove_file(client_id, name)
            self._record(record(removed is not None), now)
        return removed

    @translated
    def rename_file(
        self,
        client_id: bytes,
        name: str,
        new_name: str,
        replace: bool,
        now: int,
        record: Callable[[bool], ReplyRecord],
    ) -> tuple[Rename, bytes | None]:
        """Give file ``name`` the name ``new_name``, in one transaction with the reply
        ``record(replaced)``; the outcome, and the transfer id of a file replaced (its
        blobs are now garbage). A refusal changes nothing and records nothing."""
        with db.write(self._db):
            if self.get_file(client_id, name) is None:
                return Rename.MISSING, None
            replaced = None
            if new_name != name and self.get_file(client_id, new_name) is not None:
                if not replace:
                    return Rename.TAKEN, None
                replaced = self._remove_file(client_id, new_name)
            self._db.execute(
                "UPDATE files SET name = ? WHERE client_id = ? AND name = ?",
                (new_name, client_id, name),
            )
            self._db.execute(
                """UPDATE uploads SET name = ? WHERE transfer_id =
                   (SELECT transfer_id FROM files WHERE client_id = ? AND name = ?)""",
                (new_name, client_id, new_name),
            )
            self._record(record(replaced is not None), now)
        return Rename.DONE, replaced

    @translated
    def list_files(self, client_id: bytes, after: str = "", limit: int = -1) -> list[FileRow]:
        """The client's files named after ``after``, in name order; at most ``limit``
        (-1: all). SQLite compares text as UTF-8 bytes: the order of code points."""
        rows = self._db.execute(
            f"{_FILE_SELECT} WHERE f.client_id = ? AND f.name > ? ORDER BY f.name LIMIT ?",
            (client_id, after, limit),
        )
        return [_file(row) for row in rows]

    @translated
    def get_file(self, client_id: bytes, name: str) -> FileRow | None:
        row = self._db.execute(
            f"{_FILE_SELECT} WHERE f.client_id = ? AND f.name = ?", (client_id, name)
        ).fetchone()
        return None if row is None else _file(row)

    @translated
    def get_file_by_transfer(self, client_id: bytes, transfer_id: bytes) -> FileRow | None:
        row = self._db.execute(
            f"{_FILE_SELECT} WHERE f.client_id = ? AND f.transfer_id = ?", (client_id, transfer_id)
        ).fetchone()
        return None if row is None else _file(row)

    # -- lifecycle -----------------------------------------------------------------------

    @translated
    def expire_uploads(self, cutoff: int) -> list[bytes]:
        """Forget every unfinished upload begun before ``cutoff``; their transfer ids.

        Open and committed uploads are unfinished; a ``done`` one backs a file and stays.
        Their chunk rows go with them (ON DELETE CASCADE); the caller removes the blobs
        after this commit, as for any other garbage.
        """
        with db.write(self._db):
            rows = self._db.execute(
                "DELETE FROM uploads WHERE state != 'done' AND created_at < ? "
                "RETURNING transfer_id",
                (cutoff,),
            ).fetchall()
        return [bytes(row[0]) for row in rows]

    @translated
    def transfer_ids(self) -> set[bytes]:
        """Every transfer id a row still refers to (blob directories to keep)."""
        return {bytes(row[0]) for row in self._db.execute("SELECT transfer_id FROM uploads")}


def _upload_values(upload: UploadRow) -> tuple[object, ...]:
    return (
        upload.transfer_id,
        upload.client_id,
        upload.name,
        upload.size,
        upload.chunk_size,
        upload.chunk_count,
        upload.data_key,
        upload.state,
        upload.crc,
    )
