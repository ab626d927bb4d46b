"""The repository over the SQLite store: short, typed methods, one transaction each.

Every method that changes something runs in one ``BEGIN IMMEDIATE`` transaction
(:func:`workers.db.write`) and, for a mutating request, inserts the request's sealed reply
(:class:`ReplyRecord`) in that same transaction, so a retry finds either no effect and no
reply, or both. Keys arrive and leave wrapped by the master key: this module never sees
a plaintext key. Every ``sqlite3.Error`` becomes :class:`StorageError`; a reply that
another process recorded first becomes :class:`DuplicateRequest` (the caller then
answers with the recorded reply). Times are integer milliseconds since the Unix epoch.

Clients, sessions, nonces and recorded replies are here; uploads, chunks and files are in
:mod:`workers.tables`; the row types in :mod:`workers.rows`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from workers import db
from workers.db import translated
from workers.rows import (
    ChunkRow,
    ClientRow,
    DuplicateRequest,
    FileRow,
    Grant,
    NotInvited,
    OverQuota,
    Published,
    Rename,
    ReplyRecord,
    SessionRow,
    UnfinishedRow,
    UploadRow,
)
from workers.tables import UploadTables

__all__ = [  # the row types are re-exported: callers import everything from here
    "REVOCATIONS_KEY",
    "ChunkRow",
    "ClientRow",
    "DuplicateRequest",
    "FileRow",
    "Grant",
    "NotInvited",
    "OverQuota",
    "Published",
    "Rename",
    "ReplyRecord",
    "SessionRow",
    "Store",
    "UnfinishedRow",
    "UploadRow",
]

# The ``meta`` key of the revocation counter: bumped in every transaction that ends a
# client's sessions (a revocation, a new key), so a worker that caches sessions sees it.
REVOCATIONS_KEY = "revocations"


class _Abort(Exception):
    """Roll the transaction back and report ``outcome``."""

    def __init__(self, outcome: Grant) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class Store(UploadTables):
    """The store of one worker process (one connection, used from one thread)."""

    @classmethod
    def open(cls, path: Path, busy_timeout: float = 30.0) -> Store:
        return cls(db.connect(path, busy_timeout))

    def close(self) -> None:
        self._db.close()

    # -- meta and idempotency ----------------------------------------------------------

    @translated
    def meta_once(self, key: str, value: bytes) -> bytes:
        """The stored value of ``key``, storing ``value`` first if there is none."""
        with db.write(self._db):
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0])

    @translated
    def find_reply(self, client_id: bytes, request_id: bytes) -> tuple[bytes, bytes] | None:
        """``(digest, sealed reply)`` recorded for this request, if any."""
        row = self._db.execute(
            "SELECT digest, reply FROM replies WHERE client_id = ? AND request_id = ?",
            (client_id, request_id),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    @translated
    def prune_replies(self, cutoff: int) -> int:
        """Forget the replies recorded before ``cutoff``; how many were removed."""
        with db.write(self._db):
            removed = self._db.execute("DELETE FROM replies WHERE created_at < ?", (cutoff,))
            return int(removed.rowcount)

    # -- clients and sessions ----------------------------------------------------------

    @translated
    def create_client(
        self,
        client_id: bytes,
        name: str,
        public_key: bytes,
        now: int,
        record: ReplyRecord,
        invite: bytes | None = None,
    ) -> bool:
        """Add a client with its public key; False (and nothing changed) if the name is taken.

        With ``invite`` (the SHA-256 digest of an invite code), the invite is used up in
        the same transaction, and one unknown, used or expired raises :class:`NotInvited`
        with nothing changed; a taken name leaves the invite for another try.
        """
        with db.write(self._db):
            if self._db.execute("SELECT 1 FROM clients WHERE name = ?", (name,)).fetchone():
                return False
            if (
                invite is not None
                and not self._db.execute(
                    "DELETE FROM invites WHERE digest = ? AND expires_at > ? RETURNING 1",
                    (invite, now),
                ).fetchone()
            ):
                raise NotInvited
            self._db.execute(
                "INSERT INTO clients (id, name, public_key, created_at) VALUES (?, ?, ?, ?)",
                (client_id, name, public_key, now),
            )
            self._record(record, now)
        return True

    @translated
    def get_client(self, client_id: bytes) -> ClientRow | None:
        row = self._db.execute(
            "SELECT id, name, public_key, revoked FROM clients WHERE id = ?", (client_id,)
        ).fetchone()
        return None if row is None else ClientRow(row[0], row[1], row[2], bool(row[3]))

    @translated
    def grant_session(
        self,
        session: SessionRow,
        public_key: bytes,
        nonce: bytes,
        timestamp: int,
        oldest_timestamp: int,
        now: int,
        record: ReplyRecord,
    ) -> Grant:
        """Check the client's key (store it if it has none), spend the nonce, add a session."""
        try:
            with db.write(self._db):
                # Only the client's key, byte for byte, matches; a client without one (a
                # legacy client, or a row of an earlier server) takes the first.
                updated = self._db.execute(
                    """UPDATE clients SET public_key = ?, aes_key = ?, last_seen = ?
                       WHERE id = ? AND revoked = 0 AND (public_key IS NULL OR public_key = ?)""",
                    (public_key, session.session_key, now, session.client_id, public_key),
                ).rowcount
                if updated != 1:
                    raise _Abort(Grant.KEY_MISMATCH)
                self._spend_nonce(session.client_id, nonce, timestamp, oldest_timestamp)
                self._db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
                self._db.execute(
                    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                    (session.id, session.client_id, session.session_key, now, session.expires_at),
                )
                self._record(record, now)
        except _Abort as abort:
            return abort.outcome
        return Grant.GRANTED

    @translated
    def rekey_client(
        self,
        client_id: bytes,
        public_key: bytes,
        new_public_key: bytes,
        nonce: bytes,
        timestamp: int,
        oldest_timestamp: int,
        now: int,
        record: Callable[[int], ReplyRecord],
    ) -> tuple[Grant, int]:
        """Move the client from ``public_key`` to ``new_public_key``, end every session it
        has and spend the nonce, in one transaction; ``(outcome, sessions ended)``.

        A client already on ``new_public_key`` (a rekey whose reply never arrived) keeps
        its sessions and only spends the nonce. ``record(sessions_ended)`` is the reply.
        """
        try:
            with db.write(self._db):
                row = self._db.execute(
                    "SELECT public_key FROM clients WHERE id = ? AND revoked = 0 AND legacy = 0",
                    (client_id,),
                ).fetchone()
                current = None if row is None else row[0]
                if current not in (public_key, new_public_key):
                    raise _Abort(Grant.KEY_MISMATCH)
                moved = current == public_key
                if moved:
                    self._db.execute(
                        "UPDATE clients SET public_key = ?, last_seen = ? WHERE id = ?",
                        (new_public_key, now, client_id),
                    )
                self._spend_nonce(client_id, nonce, timestamp, oldest_timestamp)
                ended = self._end_sessions(client_id) if moved else 0
                self._record(record(ended), now)
        except _Abort as abort:
            return abort.outcome, 0
        return Grant.GRANTED, ended

    def _spend_nonce(self, client_id: bytes, nonce: bytes, timestamp: int, oldest: int) -> None:
        """Record a key-changing request's nonce (forgetting those older than ``oldest``,
        which the clock check refuses anyway); ``_Abort`` if it was used before."""
        self._db.execute("DELETE FROM key_nonces WHERE timestamp < ?", (oldest,))
        try:
            self._db.execute(
                "INSERT INTO key_nonces VALUES (?, ?, ?)", (client_id, nonce, timestamp)
            )
        except sqlite3.IntegrityError:
            raise _Abort(Grant.NONCE_REPLAYED) from None

    def _end_sessions(self, client_id: bytes) -> int:
        """Delete the client's sessions and bump the revocation counter, so that every
        worker's session cache forgets them before its next lookup; how many were ended."""
        ended = self._db.execute("DELETE FROM sessions WHERE client_id = ?", (client_id,))
        count = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (REVOCATIONS_KEY,)
        ).fetchone()
        value = int.from_bytes(count[0], "big") + 1 if count else 1
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", (REVOCATIONS_KEY, value.to_bytes(8, "big"))
        )
        return int(ended.rowcount)

    @translated
    def get_session(self, session_id: bytes) -> SessionRow | None:
        row = self._db.execute(
            """SELECT s.id, s.client_id, s.session_key, s.expires_at, c.revoked
               FROM sessions s JOIN clients c ON c.id = s.client_id WHERE s.id = ?""",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        return SessionRow(row[0], row[1], row[2], row[3], bool(row[4]))

    # -- flags: legacy clients and revocations -----------------------------------------

    @translated
    def get_native_client(self, client_id: bytes) -> ClientRow | None:
        """The client with this id unless it is flagged legacy (the native exchange's read).

        A legacy client cannot prove a key our way, and its id travels in clear on the
        legacy wire: the native key exchange must not see it at all.
        """
        row = self._db.execute(
            "SELECT id, name, public_key, revoked FROM clients WHERE id = ? AND legacy = 0",
            (client_id,),
        ).fetchone()
        return None if row is None else ClientRow(row[0], row[1], row[2], bool(row[3]))

    @translated
    def find_legacy_client(self, name: str) -> ClientRow | None:
        """The client flagged legacy with this name (revoked or not); None for a native one."""
        row = self._db.execute(
            "SELECT id, name, public_key, revoked FROM clients WHERE name = ? AND legacy = 1",
            (name,),
        ).fetchone()
        return None if row is None else ClientRow(row[0], row[1], row[2], bool(row[3]))

    @translated
    def create_legacy_client(
        self, client_id: bytes, name: str, now: int, record: ReplyRecord
    ) -> bool:
        """Add a client flagged legacy, as :meth:`create_client`; False if the name is taken."""
        with db.write(self._db):
            if self._db.execute("SELECT 1 FROM clients WHERE name = ?", (name,)).fetchone():
                return False
            self._db.execute(
                "INSERT INTO clients (id, name, created_at, legacy) VALUES (?, ?, ?, 1)",
                (client_id, name, now),
            )
            self._record(record, now)
        return True

    @translated
    def revocation_count(self) -> int:
        """How many times sessions were ended (``cipherdrop-admin revoke``, a rekey).

        One primary-key read: cheap enough for a session cache to ask on every lookup.
        """
        row = self._db.execute(
            "SELECT value FROM meta WHERE key = ?", (REVOCATIONS_KEY,)
        ).fetchone()
        return 0 if row is None else int.from_bytes(row[0], "big")
