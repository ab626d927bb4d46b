"""The SQLite schema as numbered migrations; ``PRAGMA user_version`` is the number applied.

Migration N (1-based) is ``MIGRATIONS[N - 1]``: a tuple of single statements, run in
order inside one ``BEGIN IMMEDIATE`` transaction together with the version bump, so a
database is always exactly at some version. Migrations are only ever appended; a
released one is never edited. ``docs/storage.md`` explains every table.

Conventions: ids are 16-byte BLOBs, times are INTEGER milliseconds since the Unix epoch,
every key stored here is wrapped by the master key (``*_key`` columns hold
``nonce || ciphertext || tag``), and booleans are 0/1 INTEGERs.
"""

from __future__ import annotations

__all__ = ["LATEST_VERSION", "MIGRATIONS"]

_V1 = (
    # Settings of the store itself; "master_check" proves the master key is the right one.
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT""",
    # The seed's table: id, name, public key, last seen, latest session key (wrapped).
    """CREATE TABLE clients (
        id         BLOB PRIMARY KEY CHECK (length(id) = 16),
        name       TEXT NOT NULL UNIQUE,
        public_key BLOB,
        last_seen  INTEGER,
        aes_key    BLOB,
        legacy     INTEGER NOT NULL DEFAULT 0 CHECK (legacy IN (0, 1)),
        revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
        created_at INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE sessions (
        id          BLOB PRIMARY KEY CHECK (length(id) = 16),
        client_id   BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        session_key BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX sessions_by_expiry ON sessions (expires_at)",
    # Nonces of accepted key requests, kept while their timestamp is inside the window.
    """CREATE TABLE key_nonces (
        client_id BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        nonce     BLOB NOT NULL,
        timestamp INTEGER NOT NULL,
        PRIMARY KEY (client_id, nonce)
    ) STRICT, WITHOUT ROWID""",
    # Every transfer: open while chunks arrive, committed once the CRC is known, done
    # once it backs a file (the row then lives as long as the file).
    """CREATE TABLE uploads (
        transfer_id BLOB PRIMARY KEY CHECK (length(transfer_id) = 16),
        client_id   BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        size        INTEGER NOT NULL CHECK (size >= 0),
        chunk_size  INTEGER NOT NULL CHECK (chunk_size > 0),
        chunk_count INTEGER NOT NULL CHECK (chunk_count > 0),
        data_key    BLOB NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('open', 'committed', 'done')),
        crc         INTEGER,
        created_at  INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX uploads_by_owner ON uploads (client_id, name, state)",
    """CREATE TABLE chunks (
        transfer_id BLOB NOT NULL REFERENCES uploads (transfer_id) ON DELETE CASCADE,
        idx         INTEGER NOT NULL CHECK (idx >= 0),
        stored_size INTEGER NOT NULL,
        plain_size  INTEGER NOT NULL,
        crc_part    INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, idx)
    ) STRICT, WITHOUT ROWID""",
    # The seed's table: one row per visible file; location is the blob directory.
    """CREATE TABLE files (
        client_id   BLOB NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        location    TEXT NOT NULL,
        verified    INTEGER NOT NULL CHECK (verified IN (0, 1)),
        size        INTEGER NOT NULL,
        crc         INTEGER NOT NULL,
        sha256      BLOB,
        uploaded_at INTEGER NOT NULL,
        data_key    BLOB NOT NULL,
        transfer_id BLOB NOT NULL UNIQUE REFERENCES uploads (transfer_id),
        PRIMARY KEY (client_id, name)
    ) STRICT""",
    # Replies of mutating requests, sealed by the master key; written with the effect.
    """CREATE TABLE replies (
        client_id  BLOB NOT NULL,
        request_id BLOB NOT NULL,
        digest     BLOB NOT NULL,
        reply      BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, request_id)
    ) STRICT, WITHOUT ROWID""",
)

_V2 = (
    # Recorded replies are pruned by age (workers/files.py, docs/storage.md).
    "CREATE INDEX replies_by_age ON replies (created_at)",
)

_V3 = (
    # The version of the file an upload was begun for: a resume needs the same one.
    "ALTER TABLE uploads ADD COLUMN source BLOB NOT NULL DEFAULT x''",
)

_V4 = (
    # A quota of this client's own (bytes), set by the operator; NULL: store.quota applies.
    "ALTER TABLE clients ADD COLUMN quota INTEGER CHECK (quota IS NULL OR quota >= 0)",
)

_V5 = (
    # One-time registration invites (store.registration = "invite"), kept as SHA-256
    # digests of the codes: the database alone does not hold a usable invite.
    """CREATE TABLE invites (
        digest     BLOB PRIMARY KEY CHECK (length(digest) = 32),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5)
LATEST_VERSION = len(MIGRATIONS)
