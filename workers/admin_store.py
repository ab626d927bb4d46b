"""The store as the operator sees it: every client and file, revocation, re-wrapping, backup.

:class:`AdminStore` adds to :class:`workers.store.Store` the queries only
``cipherdrop-admin`` makes. Same rules: one ``BEGIN IMMEDIATE`` transaction per change,
``sqlite3.Error`` becomes :class:`~common.errors.StorageError`, keys stay wrapped (the
re-wrapping function is given by the caller, which holds the master keys).

Guarantees: :meth:`AdminStore.revoke` marks the client revoked, deletes its sessions and
bumps the ``revocations`` counter in ``meta`` in one transaction; :meth:`rewrap_all`
replaces every wrapped value in one transaction, so a failure leaves the old key in
force everywhere; :meth:`backup_to` copies a consistent snapshot with SQLite's online
backup API while workers keep writing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import keys
from workers import db
from workers.app import MASTER_CHECK_CONTEXT, MASTER_CHECK_KEY
from workers.db import translated
from workers.service import reply_context
from workers.sessions import session_context
from workers.store import Store
from workers.uploads import data_key_context

__all__ = ["AdminStore", "ClientInfo", "StoredFile"]

# (blob, its wrapping context) -> the blob wrapped under the new key
Rewrap = Callable[[bytes, bytes], bytes]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    id: bytes
    name: str
    created_at: int
    last_seen: int | None
    revoked: bool
    legacy: bool
    files: int
    used: int  # bytes the quota counts: its files' and unfinished uploads' sizes
    quota: int | None  # its own quota (bytes), or None: the server's store.quota
    key: str | None = None  # the fingerprint of its public key (None: none stored yet)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A visible file with what ``check`` and ``files`` need."""

    client_id: bytes
    client_name: str
    name: str
    size: int
    crc: int
    uploaded_at: int
    verified: bool
    data_key: bytes  # wrapped
    transfer_id: bytes
    chunk_size: int
    chunk_count: int
    sha256: bytes | None  # as stored: sealed under the data key (workers.uploads.seal_sha256)


_CLIENTS = """SELECT c.id, c.name, c.created_at, c.last_seen, c.revoked, c.legacy,
    (SELECT count(*) FROM files f WHERE f.client_id = c.id),
    (SELECT coalesce(sum(u.size), 0) FROM uploads u WHERE u.client_id = c.id), c.quota,
    c.public_key FROM clients c"""
_FILES = """SELECT f.client_id, c.name, f.name, f.size, f.crc, f.uploaded_at, f.verified,
    f.data_key, f.transfer_id, u.chunk_size, u.chunk_count, f.sha256 FROM files f
    JOIN clients c ON c.id = f.client_id JOIN uploads u ON u.transfer_id = f.transfer_id"""


def _client(row: tuple[Any, ...]) -> ClientInfo:
    cid, name, created, seen, revoked, legacy, files, used, quota, public_key = row
    return ClientInfo(
        bytes(cid),
        name,
        created,
        seen,
        bool(revoked),
        bool(legacy),
        files,
        used,
        quota,
        None if public_key is None else keys.fingerprint(bytes(public_key)),
    )


class AdminStore(Store):
    """The operator's queries; see the module docstring."""

    @classmethod
    def open(cls, path: Path, busy_timeout: float = 30.0) -> AdminStore:
        return cls(db.connect(path, busy_timeout))

    @translated
    def meta_value(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    @translated
    def clients(self) -> list[ClientInfo]:
        return [_client(row) for row in self._db.execute(f"{_CLIENTS} ORDER BY c.name")]

    @translated
    def find_client(self, ref: str) -> ClientInfo | None:
        """A client by name, or by its id in hex."""
        row = self._db.execute(f"{_CLIENTS} WHERE c.name = ?", (ref,)).fetchone()
        if row is None and len(ref) == 32:
            try:
                cid = bytes.fromhex(ref)
            except ValueError:
                return None
            row = self._db.execute(f"{_CLIENTS} WHERE c.id = ?", (cid,)).fetchone()
        return None if row is None else _client(row)

    @translated
    def stored_files(self, client_id: bytes | None = None) -> list[StoredFile]:
        """Every visible file, or those of one client, by client name then file name."""
        where, params = ("WHERE f.client_id = ?", (client_id,)) if client_id else ("", ())
        rows = self._db.execute(f"{_FILES} {where} ORDER BY c.name, f.name", params)
        return [
            StoredFile(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], bool(r[6]), *r[7:]) for r in rows
        ]

    @translated
    def purge_client(self, client_id: bytes) -> list[bytes] | None:
        """Delete a revoked client and all it left: files, unfinished uploads and their
        chunks, sessions, nonces (by cascade) and recorded replies, in one transaction.
        The transfer ids whose contents the caller removes next; None (nothing changed)
        if the client is not revoked. A crash before the contents are removed leaves
        them unreferenced, for the sweep at the next server start."""
        with db.write(self._db):
            transfers = [
                bytes(row[0])
                for row in self._db.execute(
                    "SELECT transfer_id FROM uploads WHERE client_id = ?", (client_id,)
                )
            ]
            deleted = self._db.execute(
                "DELETE FROM clients WHERE id = ? AND revoked = 1", (client_id,)
            ).rowcount
            if deleted != 1:
                return None
            self._db.execute("DELETE FROM replies WHERE client_id = ?", (client_id,))
        return transfers

    @translated
    def create_invite(self, digest: bytes, now: int, expires_at: int) -> None:
        """Keep an invite (the SHA-256 digest of its code) until ``expires_at``; expired
        ones are forgotten on the way."""
        with db.write(self._db):
            self._db.execute("DELETE FROM invites WHERE expires_at <= ?", (now,))
            self._db.execute("INSERT INTO invites VALUES (?, ?, ?)", (digest, now, expires_at))

    @translated
    def set_quota(self, client_id: bytes, quota: int | None) -> None:
        """Give a client its own quota in bytes (0: none), or None: the server's again."""
        with db.write(self._db):
            self._db.execute("UPDATE clients SET quota = ? WHERE id = ?", (quota, client_id))

    @translated
    def revoke(self, client_id: bytes) -> int:
        """Revoke a client and end its sessions; the number of sessions ended."""
        with db.write(self._db):
            self._db.execute("UPDATE clients SET revoked = 1 WHERE id = ?", (client_id,))
            return self._end_sessions(client_id)

    @translated
    def rewrap_all(self, rewrap: Rewrap) -> dict[str, int]:
        """Re-wrap every wrapped value in one transaction; counts per table.

        ``clients.aes_key`` is the wrapped key of the client's latest session; when that
        session is gone its context is unknown, and the value (kept for the record
        only) is cleared rather than left under the old key.
        """
        counts: dict[str, int] = {}
        with db.write(self._db):
            sessions = self._db.execute("SELECT id, session_key FROM sessions").fetchall()
            by_blob = {bytes(blob): bytes(sid) for sid, blob in sessions}
            for sid, blob in sessions:
                new = rewrap(blob, session_context(sid))
                self._db.execute("UPDATE sessions SET session_key = ? WHERE id = ?", (new, sid))
            counts["sessions"] = len(sessions)
            counts["clients"] = self._rewrap_clients(rewrap, by_blob)
            for table in ("uploads", "files"):
                rows = self._db.execute(f"SELECT transfer_id, data_key FROM {table}").fetchall()  # noqa: S608 (fixed names)
                for tid, blob in rows:
                    self._db.execute(
                        f"UPDATE {table} SET data_key = ? WHERE transfer_id = ?",  # noqa: S608
                        (rewrap(blob, data_key_context(tid)), tid),
                    )
                counts[table] = len(rows)
            replies = self._db.execute(
                "SELECT client_id, request_id, reply FROM replies"
            ).fetchall()
            for cid, rid, blob in replies:
                self._db.execute(
                    "UPDATE replies SET reply = ? WHERE client_id = ? AND request_id = ?",
                    (rewrap(blob, reply_context(cid, rid)), cid, rid),
                )
            counts["replies"] = len(replies)
            check = self._db.execute("SELECT value FROM meta WHERE key = ?", (MASTER_CHECK_KEY,))
            for (blob,) in check.fetchall():
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = ?",
                    (rewrap(blob, MASTER_CHECK_CONTEXT), MASTER_CHECK_KEY),
                )
        return counts

    def _rewrap_clients(self, rewrap: Rewrap, by_blob: dict[bytes, bytes]) -> int:
        rows = self._db.execute("SELECT id, aes_key FROM clients WHERE aes_key IS NOT NULL")
        count = 0
        for cid, blob in rows.fetchall():
            sid = by_blob.get(bytes(blob))
            new = None if sid is None else rewrap(blob, session_context(sid))
            self._db.execute("UPDATE clients SET aes_key = ? WHERE id = ?", (new, cid))
            count += 1
        return count

    @translated
    def backup_to(self, target: Path) -> None:
        """Copy a consistent snapshot of the database to ``target`` (a new file)."""
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            self._db.backup(copy)  # all pages in one step: one consistent snapshot
        finally:
            copy.close()

    @translated
    def forget_transfers(self, transfer_ids: set[bytes]) -> None:
        """In a backup copy: drop unfinished uploads and the files of ``transfer_ids``."""
        with db.write(self._db):
            self._db.execute("DELETE FROM uploads WHERE state != 'done'")
            for tid in transfer_ids:
                self._db.execute("DELETE FROM files WHERE transfer_id = ?", (tid,))
                self._db.execute("DELETE FROM uploads WHERE transfer_id = ?", (tid,))

    @translated
    def make_standalone(self) -> None:
        """Leave WAL mode, so the database is one self-contained file (a backup copy)."""
        self._db.execute("PRAGMA journal_mode = DELETE")
