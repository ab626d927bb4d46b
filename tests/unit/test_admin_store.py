"""AdminStore.rewrap_all: a master-key rotation reaches every wrapped value in the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.admin_store import AdminStore
from workers.app import MASTER_CHECK_KEY

from .server_harness import Client, Server, rsa_key

MARK = b"rewrapped:"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "var", session_ttl=600.0)
    yield running
    running.close()


def wrapped_columns(store: AdminStore) -> set[tuple[str, str]]:
    """By the schema's convention (workers/schema.py) every ``*_key`` column but the
    public key holds a value wrapped by the master key; so do recorded replies."""
    query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    tables = [row[0] for row in store._db.execute(query)]
    columns = {
        (table, row[1])
        for table in tables
        for row in store._db.execute(f"PRAGMA table_info({table})")
    }
    keys = {(t, c) for t, c in columns if c.endswith("_key") and c != "public_key"}
    return keys | {("replies", "reply")}


def test_rotation_rewraps_every_wrapped_column(server: Server) -> None:
    alice = Client(server, "alice", rsa_key("alice"))
    alice.register()
    alice.connect()
    alice.upload("kept", b"contents", 4096)
    alice.begin("open", b"xy", 4096)  # an upload row not yet a file
    server.store.meta_once(MASTER_CHECK_KEY, b"wrapped check")
    admin = AdminStore.open(server.data.db_path, busy_timeout=5.0)
    try:
        columns = wrapped_columns(admin)
        assert columns == {
            ("clients", "aes_key"),
            ("sessions", "session_key"),
            ("uploads", "data_key"),
            ("files", "data_key"),
            ("replies", "reply"),
        }
        bob = Client(server, "bob", rsa_key("bob"))
        bob.register()
        admin.revoke(bob.client_id)
        revocations = admin.revocation_count()
        assert revocations == 1
        admin.rewrap_all(lambda blob, context: MARK + blob)
        for table, column in sorted(columns):
            query = f"SELECT {column} FROM {table}"
            values = [row[0] for row in admin._db.execute(query) if row[0] is not None]
            assert values, f"{table}.{column} holds nothing to check"
            assert all(bytes(v).startswith(MARK) for v in values), f"{table}.{column}"
        assert admin.meta_value(MASTER_CHECK_KEY) == MARK + b"wrapped check"
        assert admin.revocation_count() == revocations  # a counter, not a wrapped value
    finally:
        admin.close()
