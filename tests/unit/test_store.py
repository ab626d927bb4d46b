"""The SQLite store: pragmas, migrations under concurrency, transactions, errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import StorageError
from workers import db
from workers.schema import LATEST_VERSION, MIGRATIONS
from workers.store import (
    ChunkRow,
    DuplicateRequest,
    Grant,
    ReplyRecord,
    SessionRow,
    Store,
    UploadRow,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000_000


def record(request_id: bytes, client_id: bytes = b"") -> ReplyRecord:
    return ReplyRecord(client_id, request_id, b"d" * 16, b"sealed reply")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "test.db", busy_timeout=1.0)
    yield opened
    opened.close()


def pragma(store: Store, name: str) -> object:
    return store._db.execute(f"PRAGMA {name}").fetchone()[0]


def test_open_sets_wal_foreign_keys_synchronous_and_schema_version(store: Store) -> None:
    assert pragma(store, "journal_mode") == "wal"
    assert pragma(store, "foreign_keys") == 1
    assert pragma(store, "synchronous") == 1  # NORMAL
    assert pragma(store, "busy_timeout") == 1000
    assert pragma(store, "user_version") == LATEST_VERSION


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    first = Store.open(tmp_path / "x.db")
    assert first.create_client(b"c" * 16, "alice", b"K", NOW, record(b"r" * 16))
    first.close()
    second = Store.open(tmp_path / "x.db")
    client = second.get_client(b"c" * 16)
    second.close()
    assert client is not None and client.name == "alice" and client.public_key == b"K"


def test_several_processes_creating_the_database_at_once_all_succeed(tmp_path: Path) -> None:
    code = (
        "import sys; from workers.store import Store;"
        "s = Store.open(sys.argv[1], 10.0); print(s._db.execute('PRAGMA user_version')"
        ".fetchone()[0]); s.close()"
    )
    db = tmp_path / "race.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 6, results
    assert {out.strip() for out, _ in results} == {str(LATEST_VERSION).encode()}
    conn = sqlite3.connect(db)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {
        "meta",
        "clients",
        "sessions",
        "key_nonces",
        "uploads",
        "chunks",
        "files",
        "replies",
        "invites",
    }


def test_opening_waits_while_another_process_turns_a_new_database_to_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other process is half-way: still in rollback mode, holding the write lock.
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE first (x)")
    pauses: list[float] = []

    def other_finishes(seconds: float) -> None:
        pauses.append(seconds)
        if other.in_transaction:
            other.execute("PRAGMA journal_mode = WAL")  # refused inside a transaction
            other.execute("COMMIT")
            other.execute("PRAGMA journal_mode = WAL")

    monkeypatch.setattr(db, "_pause", other_finishes)
    opened = Store.open(path, busy_timeout=30.0)
    other.close()
    assert pauses, "SQLite answered busy at once; opening must wait, not fail"
    assert pragma(opened, "journal_mode") == "wal"
    assert pragma(opened, "user_version") == LATEST_VERSION
    opened.close()


def test_opening_a_database_another_process_keeps_locked_fails_as_busy(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE first (x)")
    try:
        with pytest.raises(StorageError, match="busy"):
            Store.open(path, busy_timeout=0.05)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_database_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer than this program"):
        Store.open(tmp_path / "new.db")


def test_sqlite_errors_become_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        Store.open(tmp_path)  # a directory is no database


def test_a_locked_database_is_a_storage_error_saying_busy_not_locked(tmp_path: Path) -> None:
    holder = Store.open(tmp_path / "busy.db")
    waiter = Store.open(tmp_path / "busy.db", busy_timeout=0.05)
    holder._db.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError) as caught:
            waiter.create_client(b"c" * 16, "bob", b"K", NOW, record(b"r" * 16))
        assert "busy" in str(caught.value) and "locked" not in str(caught.value)
    finally:
        holder._db.execute("ROLLBACK")
        holder.close()
    assert waiter.get_client(b"c" * 16) is None
    waiter.close()


class BusyAtFirst:
    """A connection whose first ``refusals`` BEGIN IMMEDIATEs SQLite answers busy at once,
    as it does to break a lock-upgrade deadlock, without calling its busy handler."""

    def __init__(self, conn: sqlite3.Connection, refusals: int) -> None:
        self.conn, self.refusals = conn, refusals

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and self.refusals:
            self.refusals -= 1
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)


def test_a_begin_answered_busy_at_once_is_tried_again_after_a_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    pauses: list[float] = []
    monkeypatch.setattr(db, "_pause", pauses.append)
    with db.write(BusyAtFirst(conn, 2)) as tx:  # type: ignore[arg-type]
        tx.execute("INSERT INTO t VALUES (1)")
    assert pauses == [0.001, 0.002]
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_a_begin_still_busy_after_the_retry_window_is_a_busy_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    monkeypatch.setattr(db, "_pause", lambda seconds: None)
    monkeypatch.setattr(db, "_BEGIN_RETRY_WINDOW", 0.0)  # the window has passed at once

    @db.translated
    def insert() -> None:
        with db.write(BusyAtFirst(conn, 1)) as tx:  # type: ignore[arg-type]
            tx.execute("INSERT INTO t VALUES (1)")

    with pytest.raises(StorageError, match="busy"):
        insert()
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_taken_name_changes_nothing(store: Store) -> None:
    assert store.create_client(b"a" * 16, "alice", b"K", NOW, record(b"1" * 16))
    assert not store.create_client(b"b" * 16, "alice", b"K", NOW, record(b"2" * 16))
    assert store.get_client(b"b" * 16) is None
    assert store.find_reply(b"", b"2" * 16) is None


def test_a_reply_recorded_twice_rolls_back_the_second_effect(store: Store) -> None:
    assert store.create_client(b"a" * 16, "alice", b"K", NOW, record(b"1" * 16))
    with pytest.raises(DuplicateRequest):
        store.create_client(b"b" * 16, "bob", b"K", NOW, record(b"1" * 16))
    assert store.get_client(b"b" * 16) is None
    assert store.find_reply(b"", b"1" * 16) == (b"d" * 16, b"sealed reply")


def test_pruning_forgets_the_replies_recorded_before_the_cutoff(store: Store) -> None:
    client = b"a" * 16
    assert store.create_client(client, "alice", b"K", NOW - 20, record(b"r" * 16))
    for age, request_id in ((10, b"1" * 16), (5, b"2" * 16), (1, b"3" * 16)):
        store.record_reply(record(request_id, client), NOW - age)
    assert store.prune_replies(NOW - 5) == 2  # the registration and request 1
    assert store.find_reply(b"", b"r" * 16) is None
    assert store.find_reply(client, b"1" * 16) is None
    assert store.find_reply(client, b"2" * 16) is not None
    assert store.find_reply(client, b"3" * 16) is not None
    assert store.get_client(client) is not None  # only replies go
    assert store.prune_replies(NOW - 5) == 0


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO replies VALUES (?, ?, ?, ?, ?)", (b"a" * 16, b"1" * 16, b"d", b"r", NOW)
    )
    conn.execute("INSERT INTO clients (id, name, created_at) VALUES (?, 'c', ?)", (b"c" * 16, NOW))
    conn.execute(
        """INSERT INTO uploads (transfer_id, client_id, name, size, chunk_size, chunk_count,
           data_key, state, created_at) VALUES (?, ?, 'f', 1, 1, 1, x'00', 'open', ?)""",
        (b"u" * 16, b"c" * 16, NOW),
    )
    conn.commit()
    conn.close()
    migrated = Store.open(path)
    try:
        assert pragma(migrated, "user_version") == LATEST_VERSION == 5
        assert migrated.find_reply(b"a" * 16, b"1" * 16) == (b"d", b"r")
        # An upload begun before versions were kept resumes for a begin without one.
        resumed = migrated.find_open_upload(b"c" * 16, "f", 1, 1, b"")
        assert resumed is not None and resumed.transfer_id == b"u" * 16
        assert migrated.find_open_upload(b"c" * 16, "f", 1, 1, b"v" * 16) is None
        indexes = [row[1] for row in migrated._db.execute("PRAGMA index_list(replies)")]
        assert "replies_by_age" in indexes
        # A client of an earlier version has no quota of its own: the server's applies.
        own = migrated._db.execute("SELECT quota FROM clients WHERE id = ?", (b"c" * 16,))
        assert own.fetchone() == (None,)
    finally:
        migrated.close()


def test_replies_are_indexed_by_age(store: Store) -> None:
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN DELETE FROM replies WHERE created_at < ?",
        (NOW,),
    ).fetchall()
    assert any("replies_by_age" in str(row[-1]) for row in plan), plan


def session(client: bytes, sid: bytes = b"s" * 16) -> SessionRow:
    return SessionRow(sid, client, b"wrapped", NOW + 1000, revoked=False)


def test_only_the_registered_key_gets_a_session(store: Store) -> None:
    client = b"a" * 16
    store.create_client(client, "alice", b"KEY-A", NOW, record(b"1" * 16))
    assert store.get_client(client).public_key == b"KEY-A"  # type: ignore[union-attr]
    other = store.grant_session(
        session(client, b"t" * 16), b"KEY-B", b"n2", NOW, NOW - 10, NOW, record(b"3" * 16)
    )
    assert other is Grant.KEY_MISMATCH
    assert store.get_client(client).public_key == b"KEY-A"  # type: ignore[union-attr]
    assert store.get_session(b"t" * 16) is None
    assert store.find_reply(b"", b"3" * 16) is None
    grant = store.grant_session(
        session(client), b"KEY-A", b"n1", NOW, NOW - 10, NOW, record(b"2" * 16)
    )
    assert grant is Grant.GRANTED


def test_a_client_registered_without_a_key_takes_the_first_and_keeps_it(store: Store) -> None:
    # A row an earlier server wrote: its registration did not carry the key.
    client = b"a" * 16
    store.create_client(client, "alice", b"unused", NOW, record(b"1" * 16))
    store._db.execute("UPDATE clients SET public_key = NULL WHERE id = ?", (client,))
    grant = store.grant_session(
        session(client), b"KEY-A", b"n1", NOW, NOW - 10, NOW, record(b"2" * 16)
    )
    assert grant is Grant.GRANTED
    other = store.grant_session(
        session(client, b"t" * 16), b"KEY-B", b"n2", NOW, NOW - 10, NOW, record(b"3" * 16)
    )
    assert other is Grant.KEY_MISMATCH
    assert store.get_client(client).public_key == b"KEY-A"  # type: ignore[union-attr]
    assert store.get_session(b"t" * 16) is None


def test_a_spent_nonce_is_refused_and_changes_nothing(store: Store) -> None:
    client = b"a" * 16
    store.create_client(client, "alice", b"K", NOW, record(b"1" * 16))
    store.grant_session(session(client), b"K", b"n1", NOW, NOW - 10, NOW, record(b"2" * 16))
    again = store.grant_session(
        session(client, b"t" * 16), b"K", b"n1", NOW, NOW - 10, NOW, record(b"3" * 16)
    )
    assert again is Grant.NONCE_REPLAYED
    assert store.get_session(b"t" * 16) is None


def test_chunks_are_only_added_to_open_uploads(store: Store) -> None:
    client = b"a" * 16
    store.create_client(client, "alice", b"K", NOW, record(b"1" * 16))
    upload = UploadRow(b"u" * 16, client, "f", 10, 10, 1, b"wrapped")
    store.create_upload(upload, NOW, record(b"2" * 16, client))
    chunk = ChunkRow(0, 38, 10, 1234)
    assert store.add_chunk(b"u" * 16, chunk)
    assert store.add_chunk(b"u" * 16, chunk)  # again: still open, nothing new
    assert store.chunks(b"u" * 16) == [chunk]
    assert store.commit_upload(b"u" * 16, 99, NOW, record(b"3" * 16, client))
    assert not store.add_chunk(b"u" * 16, ChunkRow(1, 1, 1, 1))
    assert not store.add_chunk(b"v" * 16, chunk)  # no such upload


def test_publishing_replaces_the_old_file_in_one_step(store: Store) -> None:
    client = b"a" * 16
    store.create_client(client, "alice", b"K", NOW, record(b"1" * 16))
    for n, tid in enumerate((b"u" * 16, b"v" * 16)):
        upload = UploadRow(tid, client, "f", 1, 1, 1, b"wrapped")
        store.create_upload(upload, NOW, record(bytes([n]) * 16, client))
        store.add_chunk(tid, ChunkRow(0, 29, 1, 5))
        store.commit_upload(tid, 7, NOW, record(bytes([n + 10]) * 16, client))
        committed = store.get_upload(tid)
        assert committed is not None
        published = store.publish_upload(
            committed, "blobs/x", None, NOW, record(bytes([n + 20]) * 16, client)
        )
        assert published.done
    assert published.replaced == b"u" * 16
    assert store.get_upload(b"u" * 16) is None and store.chunks(b"u" * 16) == []
    files = store.list_files(client)
    assert [(f.name, f.transfer_id, f.verified) for f in files] == [("f", b"v" * 16, True)]
