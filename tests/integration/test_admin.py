"""``cipherdrop-admin`` against a data directory filled by a real server and client.

Each test starts ``cipherdrop-server`` (see ``test_server.py``), registers clients and
uploads files with the real ``cipherdrop`` command, then runs ``python -m workers.admin``.
Stored contents are read back with the server's own code (:func:`admin_check.plaintext`),
which opens every chunk under its data key as a download does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.cli import ExitStatus
from client.identity import load_identity
from common import crypto, keys
from common.cksum import cksum
from common.errors import ConfigError, RefusedError
from common.messages import ChunkStored
from config import load_settings
from tests.unit.server_harness import Client as HarnessClient
from tests.unit.server_harness import Server as HarnessServer
from tests.unit.server_harness import error_code, rsa_key
from workers import admin, admin_keys
from workers.admin_check import plaintext
from workers.admin_store import AdminStore
from workers.app import open_server
from workers.blobs import Blobs
from workers.datadir import DB_NAME, MasterKey
from workers.sessions import SessionCache, session_context
from workers.store import ReplyRecord, SessionRow, Store

from .procs import ROOT
from .stack import running_stack
from .test_server import ServerProcess, run_client
from .test_upload_e2e import record_other_sha256

pytestmark = pytest.mark.integration

SIZE = 3 * 1024 * 1024 + 123  # several chunks at the default 1 MiB chunk size


def run_admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERDROP_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "workers.admin", "--data", str(data), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass
class Populated:
    server: ServerProcess
    base: Path
    sources: dict[str, Path]  # "client/name" -> local file

    @property
    def data(self) -> Path:
        return self.server.data

    def home(self, client: str) -> Path:
        return self.base / client

    def put(self, client: str, path: Path) -> subprocess.CompletedProcess[str]:
        # --server: the identity remembers the endpoint it registered with, and a restarted
        # test server listens on another random port.
        endpoint = self.server.endpoint
        return run_client(self.home(client), endpoint, "put", str(path), "-q", "--server", endpoint)

    def get(self, client: str, name: str, target: Path) -> subprocess.CompletedProcess[str]:
        """Download ``name`` with the real client into ``target``."""
        endpoint = self.server.endpoint
        return run_client(
            self.home(client), endpoint, "get", name, "-o", str(target), "-q", "--server", endpoint
        )

    def stored_bytes(self, client: str, name: str) -> bytes:
        """The contents the server would send back, opened with the server's code."""
        server = open_server(load_settings(env={}, flags={"store.data_dir": self.data}), env={})
        server.store.close()
        with closing(AdminStore.open(server.data.db_path)) as store:
            (file,) = [f for f in store.stored_files() if (f.client_name, f.name) == (client, name)]
            return b"".join(
                plaintext(store, Blobs(server.data.blobs_path), server.data.master, file)
            )


@pytest.fixture
def populated(tmp_path: Path) -> Iterator[Populated]:
    server = ServerProcess(tmp_path, workers="file=1,key=1,register=1")
    populated = Populated(server, tmp_path, {})
    try:
        sources = populated.sources
        for client, name, data in (
            ("alice", "report.txt", b"quarterly numbers, all fine\n" * (SIZE // 28)),
            ("alice", "random.bin", os.urandom(SIZE)),
            ("bob", "notes.md", b"# bob\n" * 1000),
        ):
            path = tmp_path / "src" / client / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            sources[f"{client}/{name}"] = path
        for client in ("alice", "bob"):
            result = run_client(populated.home(client), server.endpoint, "register", client)
            assert result.returncode == 0, result.stderr
        for label, path in sources.items():
            result = populated.put(label.partition("/")[0], path)
            assert result.returncode == 0, result.stderr
        yield populated
    finally:
        populated.server.stop(timeout=20)


def test_clients_files_check_revoke_and_online_backup(populated: Populated) -> None:
    data = populated.data
    clients = {c["name"]: c for c in json_lines(run_admin(data, "clients", "--json").stdout)}
    assert set(clients) == {"alice", "bob"}
    whoami = run_client(populated.home("alice"), populated.server.endpoint, "whoami").stdout
    assert clients["alice"]["id"] in whoami
    assert f"key          {clients['alice']['key']}" in whoami  # the key the server holds
    assert clients["alice"]["files"] == 2 and clients["alice"]["revoked"] is False
    sizes = {label: path.stat().st_size for label, path in populated.sources.items()}
    assert clients["alice"]["used"] == sizes["alice/report.txt"] + sizes["alice/random.bin"]
    assert clients["bob"]["used"] == sizes["bob/notes.md"]
    assert clients["alice"]["quota"] is None  # the server's store.quota applies
    table = run_admin(data, "clients").stdout.splitlines()
    assert table[0].split()[-5:] == ["FILES", "USED", "QUOTA", "REVOKED", "LEGACY"]
    (bob_row,) = [line for line in table if line.startswith("bob ")]
    assert bob_row.split()[-5:] == ["1", str(sizes["bob/notes.md"]), "-", "no", "no"]

    listed = json_lines(run_admin(data, "files", "alice", "--json").stdout)
    assert {f["name"] for f in listed} == {"report.txt", "random.bin"}
    for f in listed:
        source = populated.sources[f"alice/{f['name']}"].read_bytes()
        assert (f["size"], f["cksum"], f["verified"]) == (len(source), cksum(source), True)
    assert len(json_lines(run_admin(data, "files", "--json").stdout)) == 3

    checked = run_admin(data, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 3 file(s): 3 ok, 0 corrupt" in checked.stdout

    # Backup while the server runs, keys included so the copy is a working data dir.
    target = populated.base / "backup"
    backed = run_admin(data, "backup", str(target), "--with-keys")
    assert backed.returncode == 0, backed.stderr
    with sqlite3.connect(target / "cipherdrop.db") as copy:
        rows = copy.execute("SELECT name, size, crc FROM files ORDER BY name").fetchall()
    copy.close()
    live = sorted(
        (f["name"], f["size"], f["cksum"])
        for f in json_lines(run_admin(data, "files", "--json").stdout)
    )
    assert sorted(rows) == live
    assert run_admin(target, "check").returncode == 0
    assert (target / "master.key").stat().st_mode & 0o777 == 0o600

    revoked = run_admin(data, "revoke", "alice")
    assert revoked.returncode == 0 and "revoked alice" in revoked.stdout
    refused = populated.put("alice", populated.sources["alice/report.txt"])
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    assert populated.put("bob", populated.sources["bob/notes.md"]).returncode == 0
    after = {c["name"]: c for c in json_lines(run_admin(data, "clients", "--json").stdout)}
    assert after["alice"]["revoked"] is True and after["bob"]["revoked"] is False

    missing = run_admin(data, "revoke", "mallory")
    assert missing.returncode == admin.ExitStatus.NOT_FOUND
    assert missing.stderr.count("\n") == 1 and "mallory" in missing.stderr


def test_quota_gives_a_client_its_own_limit(populated: Populated) -> None:
    data = populated.data
    used = sum(p.stat().st_size for label, p in populated.sources.items() if "alice/" in label)
    shown = run_admin(data, "quota", "alice")
    assert shown.stdout.strip() == f"alice: quota none: store.quota is 0; {used} bytes in use"
    limited = run_admin(data, "quota", "alice", str(used + 10))
    assert limited.returncode == 0, limited.stderr
    assert f"its own: {used + 10} bytes" in limited.stdout
    extra = populated.base / "src" / "alice" / "eleven.txt"
    extra.write_text("eleven byte")
    refused = populated.put("alice", extra)
    assert refused.returncode == ExitStatus.REFUSED and "storage quota" in refused.stderr
    clients = {c["name"]: c for c in json_lines(run_admin(data, "clients", "--json").stdout)}
    assert (clients["alice"]["quota"], clients["bob"]["quota"]) == (used + 10, None)
    assert run_admin(data, "quota", "alice", "default").returncode == 0
    assert populated.put("alice", extra).returncode == 0
    for bad in ("-1", "ten", "1e3", "\u00b2", str((1 << 62) + 1)):
        wrong = run_admin(data, "quota", "alice", bad)
        assert wrong.returncode == 2 and "must be a number of bytes" in wrong.stderr, bad
    unknown = run_admin(data, "quota", "nobody", "5")
    assert unknown.returncode != 0 and "nobody" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_rotate_master_key_keeps_every_file_readable(populated: Populated) -> None:
    data = populated.data
    busy = run_admin(data, "rotate-master-key")
    assert busy.returncode == admin.ExitStatus.CONFIG
    assert "stop the server" in busy.stderr
    old_key = (data / "master.key").read_bytes()
    db_before = (data / "cipherdrop.db").read_bytes()
    assert populated.server.stop(timeout=30) == 0

    rotated = run_admin(data, "rotate-master-key")
    assert rotated.returncode == 0, rotated.stderr
    assert (data / "master.key").read_bytes() != old_key
    assert (data / "master.key").stat().st_mode & 0o777 == 0o600
    assert "3 files" in rotated.stdout
    assert (data / "cipherdrop.db").read_bytes() != db_before
    assert run_admin(data, "check").returncode == 0
    for label, path in populated.sources.items():
        client, _, name = label.partition("/")
        assert populated.stored_bytes(client, name) == path.read_bytes()

    # The server starts on the rotated key, and clients keep working.
    populated.server = ServerProcess(populated.base, workers="file=1,key=1,register=1")
    again = populated.put("bob", populated.sources["bob/notes.md"])
    assert again.returncode == 0, again.stderr
    # Every file downloads through the restarted server, byte for byte.
    for label, path in populated.sources.items():
        client, _, name = label.partition("/")
        target = populated.base / "downloads" / client / name
        target.parent.mkdir(parents=True, exist_ok=True)
        got = populated.get(client, name, target)
        assert got.returncode == 0, got.stderr
        assert target.read_bytes() == path.read_bytes()


def test_an_interrupted_rotation_is_finished_by_running_it_again(
    populated: Populated, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = populated.data
    assert populated.server.stop(timeout=30) == 0

    def crash(data_dir: Path, key: object) -> None:
        raise KeyboardInterrupt  # the process dies between the commit and the rename

    monkeypatch.setattr(admin_keys, "_install", crash)
    out, err = io.StringIO(), io.StringIO()
    argv = ["--data", str(data), "rotate-master-key"]
    assert admin.main(argv, env={}, stdout=out, stderr=err) == admin.ExitStatus.INTERRUPTED
    assert admin_keys.pending_key_path(data).exists()
    with pytest.raises(ConfigError):  # a worker refuses the stale master.key
        open_server(load_settings(env={}, flags={"store.data_dir": data}), env={})
    stale = run_admin(data, "check")
    assert stale.returncode == admin.ExitStatus.CONFIG and "interrupted" in stale.stderr

    monkeypatch.undo()
    finished = run_admin(data, "rotate-master-key")
    assert finished.returncode == 0 and "interrupted" in finished.stdout
    assert not admin_keys.pending_key_path(data).exists()
    assert run_admin(data, "check").returncode == 0


def test_check_reports_a_corrupted_chunk(populated: Populated) -> None:
    data = populated.data
    listed = json_lines(run_admin(data, "files", "alice", "--json").stdout)
    assert {f["name"] for f in listed} == {"report.txt", "random.bin"}
    with sqlite3.connect(data / "cipherdrop.db") as db:
        rows = dict(db.execute("SELECT name, transfer_id FROM files").fetchall())
    db.close()
    # Flip one byte inside chunk 1 of random.bin, wherever the layout keeps it: the sealed
    # chunk is stored as received, so its bytes are found verbatim in the blob file.
    blobs = Blobs(data / "blobs")
    _, sealed = blobs.read(rows["random.bin"], 1)
    path = blobs.path(rows["random.bin"])
    contents = bytearray(path.read_bytes())
    at = contents.find(sealed)
    assert at >= 0 and contents.find(sealed, at + 1) == -1
    contents[at + len(sealed) // 2] ^= 0x01
    path.write_bytes(bytes(contents))

    result = run_admin(data, "check")
    assert result.returncode == admin.ExitStatus.CORRUPT
    lines = result.stdout.splitlines()
    bad = [line for line in lines if line.startswith("CORRUPT")]
    assert len(bad) == 1 and "alice/random.bin" in bad[0] and "chunk 1:" in bad[0]
    assert "chunk 0:" not in bad[0] and "chunk 2:" not in bad[0]
    assert any(line.startswith("ok") and "alice/report.txt" in line for line in lines)
    assert "1 corrupt" in result.stdout

    blobs.path(rows["notes.md"]).unlink()
    result = run_admin(data, "check")
    assert any("bob/notes.md: chunk 0: missing" in line for line in result.stdout.splitlines())
    assert "2 corrupt" in result.stdout


def test_check_compares_a_recorded_sha256_with_the_contents(populated: Populated) -> None:
    data, source = populated.data, populated.base / "src" / "alice" / "hashed.bin"
    source.write_bytes(os.urandom(SIZE))
    endpoint = populated.server.endpoint
    put = run_client(populated.home("alice"), endpoint, "put", str(source), "--sha256", "-q")
    assert put.returncode == 0, put.stderr
    result = run_admin(data, "check")
    assert result.returncode == 0, result.stdout
    assert any(
        "alice/hashed.bin" in line and "sha256 ok" in line for line in result.stdout.splitlines()
    )

    server = open_server(load_settings(env={}, flags={"store.data_dir": data}), env={})
    record_other_sha256(server, populated.home("alice"), "hashed.bin")  # check must say so
    result = run_admin(data, "check")
    assert result.returncode == admin.ExitStatus.CORRUPT
    (bad,) = [line for line in result.stdout.splitlines() if line.startswith("CORRUPT")]
    assert "alice/hashed.bin" in bad and "SHA-256 differs" in bad


def test_revoke_reaches_a_cached_session_at_once(tmp_path: Path) -> None:
    """New sessions are refused at once (the integration test above); a session already
    cached by a file worker is refused from its very next lookup, with no clock moving:
    the cache reads the revocations counter on every lookup."""
    master = MasterKey(crypto.random_key())
    store = Store.open(tmp_path / "cipherdrop.db")
    now = 1_000_000
    try:
        sessions = {}
        for n, name in enumerate(("alice", "bob")):
            client_id, session_id = bytes([n]) * 16, bytes([16 + n]) * 16
            record = ReplyRecord(client_id, b"r" * 16, b"d" * 16, b"sealed")
            assert store.create_client(client_id, name, b"pk", now, record)
            wrapped = master.wrap(crypto.random_key(), session_context(session_id))
            session = SessionRow(session_id, client_id, wrapped, now + 3_600_000, revoked=False)
            second = ReplyRecord(client_id, b"s" * 16, b"d" * 16, b"sealed")
            store.grant_session(session, b"pk", b"n" * 16, now, now - 1, now, second)
            sessions[name] = (session_id, client_id)
        cache = SessionCache(store, master, recheck_ms=5_000)
        for session_id, client_id in sessions.values():
            assert cache.lookup(session_id, client_id, now).client_id == client_id
        assert store.revocation_count() == 0

        with closing(AdminStore.open(tmp_path / "cipherdrop.db")) as admin_store:
            assert admin_store.revoke(sessions["alice"][1]) == 1
            assert admin_store.meta_value("revocations") == (1).to_bytes(8, "big")
        assert store.revocation_count() == 1
        with pytest.raises(RefusedError) as refused:
            cache.lookup(*sessions["alice"], now)  # the same instant: no re-read window
        assert refused.value.code == "unknown-session"
        # The others' sessions are re-read once and go on working.
        assert cache.lookup(*sessions["bob"], now).client_id == sessions["bob"][1]
    finally:
        store.close()


def test_revoke_stops_an_upload_in_flight_at_the_next_chunk(tmp_path: Path) -> None:
    """The file service itself: chunk 0 stored, ``revoke``, chunk 1 refused, nothing more
    stored, and the same instant on the service's clock."""
    server = HarnessServer(tmp_path / "data")
    try:
        alice = HarnessClient(server, "alice", rsa_key("alice"))
        alice.register()
        alice.connect()
        data = os.urandom(3 * 4096)
        ready = alice.begin("big.bin", data, 4096)
        stored = alice.send_chunk(alice.chunk_frames(ready, 0, False, data[:4096]))
        assert stored == ChunkStored(ready.transfer_id, 0)

        with closing(AdminStore.open(server.data.db_path)) as admin_store:
            assert admin_store.revoke(alice.client_id) == 1
        reply = alice.send_chunk(alice.chunk_frames(ready, 1, False, data[4096:8192]))
        assert error_code(reply) == "unknown-session"
        assert server.store.stored_indexes(ready.transfer_id) == (0,)
    finally:
        server.close()


def test_a_server_for_invited_clients_registers_only_with_an_operators_code(
    tmp_path: Path,
) -> None:
    with running_stack(
        tmp_path / "stack", file_workers=1, store={"registration": "invite"}
    ) as stack:
        home = tmp_path / "home"
        uninvited = stack.client(home, "register", "gail")
        assert uninvited.returncode == ExitStatus.REFUSED
        assert "invite from its operator" in uninvited.stderr
        assert "Traceback" not in uninvited.stderr and not (home / "identity.json").exists()

        made = run_admin(stack.data_dir, "invite", "--valid", "600")
        assert made.returncode == 0, made.stderr
        code = made.stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{32}", code) and "valid until" in made.stderr
        # Only its digest is kept: neither the code nor its hex is in the database or its WAL.
        stored = b"".join(p.read_bytes() for p in stack.data_dir.glob(f"{DB_NAME}*"))
        assert bytes.fromhex(code) not in stored and code.encode() not in stored
        assert hashlib.sha256(bytes.fromhex(code)).digest() in stored

        invited = stack.client(home, "register", "gail", "--invite", code)
        assert invited.returncode == 0, invited.stderr
        source = tmp_path / "hello.txt"
        source.write_text("hello\n")
        assert stack.client(home, "put", str(source)).returncode == 0

        again = stack.client(tmp_path / "other", "register", "gus", "--invite", code)
        assert again.returncode == ExitStatus.REFUSED and "used or expired" in again.stderr
        for bad in ("xyz", code[:-1], code + "00"):
            wrong = stack.client(tmp_path / "other", "register", "gus", "--invite", bad)
            assert wrong.returncode == 2 and "32 hex digits" in wrong.stderr, bad
        for valid in ("0", "-5", "nan", "a week"):
            refused = run_admin(stack.data_dir, "invite", "--valid", valid)
            assert refused.returncode == 2 and "seconds" in refused.stderr, valid


def test_rotate_server_key_hands_the_clients_over_to_the_new_key(populated: Populated) -> None:
    data = populated.data
    busy = run_admin(data, "rotate-server-key")
    assert busy.returncode == admin.ExitStatus.CONFIG
    assert "stop the server" in busy.stderr
    old_fingerprint = load_identity(populated.home("bob")).server_fingerprint
    assert populated.server.stop(timeout=30) == 0

    rotated = run_admin(data, "rotate-server-key")
    assert rotated.returncode == 0, rotated.stderr
    new_key = keys.load_private_key((data / "server_key.pem").read_bytes())
    new_fingerprint = keys.fingerprint(new_key)
    assert new_fingerprint != old_fingerprint
    assert f"new server key {new_fingerprint}" in rotated.stdout
    for name in ("server_key.pem", "server_key.previous.pem"):
        assert (data / name).stat().st_mode & 0o777 == 0o600
    previous = keys.load_private_key((data / "server_key.previous.pem").read_bytes())
    assert keys.fingerprint(previous) == old_fingerprint
    copy = populated.base / "backup-with-keys"
    assert run_admin(data, "backup", str(copy), "--with-keys").returncode == 0
    for name in ("server_key.pem", "server_key.previous.pem"):
        assert (copy / name).read_bytes() == (data / name).read_bytes()

    # The restarted server presents the new key; bob follows the endorsement, once.
    populated.server = ServerProcess(populated.base, workers="file=1,key=1,register=1")
    first = populated.put("bob", populated.sources["bob/notes.md"])
    assert first.returncode == 0, first.stderr
    assert f"changed its key from {old_fingerprint} to {new_fingerprint}" in first.stderr
    assert load_identity(populated.home("bob")).server_fingerprint == new_fingerprint
    second = populated.put("bob", populated.sources["bob/notes.md"])
    assert second.returncode == 0, second.stderr
    assert "changed its key" not in second.stderr

    # Without the previous key there is no endorsement: a client still on the old pin
    # is refused, as for any other key.
    assert populated.server.stop(timeout=30) == 0
    (data / "server_key.previous.pem").unlink()
    populated.server = ServerProcess(populated.base, workers="file=1,key=1,register=1")
    refused = populated.put("alice", populated.sources["alice/report.txt"])
    assert refused.returncode == ExitStatus.SERVER_KEY_MISMATCH
    assert old_fingerprint in refused.stderr and new_fingerprint in refused.stderr

    # Given the new fingerprint from the operator, alice pins it and keeps her identity.
    endpoint = populated.server.endpoint
    home = populated.home("alice")
    wrong = run_client(home, endpoint, "trust", old_fingerprint, "--server", endpoint)
    assert wrong.returncode == ExitStatus.SERVER_KEY_MISMATCH
    assert "nothing changed" in wrong.stderr
    assert load_identity(home).server_fingerprint == old_fingerprint
    typo = run_client(home, endpoint, "trust", "SHA256:12", "--server", endpoint)
    assert typo.returncode == ExitStatus.USAGE and "Traceback" not in typo.stderr
    trusted = run_client(home, endpoint, "trust", new_fingerprint, "--server", endpoint)
    assert trusted.returncode == 0, trusted.stderr
    assert load_identity(home).server_fingerprint == new_fingerprint
    after = populated.put("alice", populated.sources["alice/report.txt"])
    assert after.returncode == 0, after.stderr


def test_purge_deletes_a_revoked_client_with_everything_it_stored(populated: Populated) -> None:
    data = populated.data
    ids = {c["name"]: c["id"] for c in json_lines(run_admin(data, "clients", "--json").stdout)}
    alice = bytes.fromhex(str(ids["alice"]))
    tables = ("sessions", "key_nonces", "uploads", "files", "replies")

    def rows_of_alice() -> dict[str, int]:
        with closing(sqlite3.connect(data / DB_NAME)) as db:
            return {
                table: db.execute(
                    f"SELECT count(*) FROM {table} WHERE client_id = ?",
                    (alice,),
                ).fetchone()[0]
                for table in tables
            }

    assert all(rows_of_alice()[table] > 0 for table in ("uploads", "files", "replies"))
    blobs_before = {p.name for p in (data / "blobs").iterdir()}
    not_revoked = run_admin(data, "purge", "alice")
    assert not_revoked.returncode == admin.ExitStatus.CONFIG
    assert "revoke alice" in not_revoked.stderr and "Traceback" not in not_revoked.stderr
    missing = run_admin(data, "purge", "mallory")
    assert missing.returncode == admin.ExitStatus.NOT_FOUND
    assert {p.name for p in (data / "blobs").iterdir()} == blobs_before

    assert run_admin(data, "revoke", "alice").returncode == 0
    purged = run_admin(data, "purge", "alice")
    assert purged.returncode == 0, purged.stderr
    assert "purged alice" in purged.stdout and "2 file(s)" in purged.stdout
    assert rows_of_alice() == dict.fromkeys(tables, 0)
    clients = {c["name"] for c in json_lines(run_admin(data, "clients", "--json").stdout)}
    assert clients == {"bob"}
    left = json_lines(run_admin(data, "files", "--json").stdout)
    assert [(f["client"], f["name"]) for f in left] == [("bob", "notes.md")]
    assert len({p.name for p in (data / "blobs").iterdir()}) == 1  # bob's file only
    assert run_admin(data, "check").returncode == 0
    bob_notes = populated.sources["bob/notes.md"].read_bytes()
    assert populated.stored_bytes("bob", "notes.md") == bob_notes
    # The name is free again: a new client (with a new id) may take it.
    again = run_client(
        populated.base / "alice-again", populated.server.endpoint, "register", "alice"
    )
    assert again.returncode == 0, again.stderr
