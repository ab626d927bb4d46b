"""AdminStore.rewrap_all: a master-key rotation reaches every wrapped value in the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common import keys
from common.errors import ConfigError
from common.secretfile import write_secret_file
from workers import admin_keys
from workers.admin_store import AdminStore
from workers.app import MASTER_CHECK_KEY
from workers.datadir import PREVIOUS_SERVER_KEY_NAME, SERVER_KEY_NAME, open_data_dir

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


# --- rotate-server-key ---------------------------------------------------------------------


def test_server_key_rotation_keeps_the_previous_key_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o700)
    current = keys.private_key_to_pem(rsa_key("server"))
    write_secret_file(data / SERVER_KEY_NAME, current)
    previous, new = admin_keys.rotate_server_key(data, 2048)
    assert previous == keys.fingerprint(rsa_key("server"))
    assert (data / PREVIOUS_SERVER_KEY_NAME).read_bytes() == current
    assert new == keys.fingerprint(keys.load_private_key((data / SERVER_KEY_NAME).read_bytes()))
    assert new != previous
    for name in (SERVER_KEY_NAME, PREVIOUS_SERVER_KEY_NAME):
        assert (data / name).stat().st_mode & 0o777 == 0o600
    opened = open_data_dir(data, 2048, env={})
    assert opened.previous_server_key is not None
    assert keys.fingerprint(opened.previous_server_key) == previous


@pytest.mark.parametrize("content", [None, b"not a key", b"-----BEGIN PRIVATE KEY-----\n"])
def test_server_key_rotation_without_a_readable_key_changes_nothing(
    tmp_path: Path, content: bytes | None
) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o700)
    if content is not None:
        write_secret_file(data / SERVER_KEY_NAME, content)
    with pytest.raises(ConfigError):
        admin_keys.rotate_server_key(data, 2048)
    assert not (data / PREVIOUS_SERVER_KEY_NAME).exists()
    if content is not None:
        assert (data / SERVER_KEY_NAME).read_bytes() == content


def test_a_damaged_previous_server_key_stops_the_server_with_its_name(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o700)
    write_secret_file(data / SERVER_KEY_NAME, keys.private_key_to_pem(rsa_key("server")))
    write_secret_file(data / PREVIOUS_SERVER_KEY_NAME, b"damaged")
    with pytest.raises(ConfigError, match=PREVIOUS_SERVER_KEY_NAME):
        open_data_dir(data, 2048, env={})
