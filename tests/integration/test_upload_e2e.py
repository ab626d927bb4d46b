"""End to end: the ``cipherdrop`` command against a real broker and real workers.

Every test runs the client as a subprocess (``python -m client``) with its own
``CIPHERDROP_HOME``; what the server stored is read back with the server's own code
(``workers.app.open_server``, ``workers.blobs``, the master key) and compared with the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from client import session as core
from client.cli import ExitStatus
from client.connection import FILE_SERVICE, Account, Connection, TransportOptions
from client.identity import IDENTITY_FILE, load_identity, load_private_key
from common import crypto
from common.codec import decode_envelope, encode_envelope
from common.compress import decompress_chunk
from common.errors import RefusedError
from common.messages import (
    PROTOCOL_VERSION,
    DownloadBegin,
    DownloadReady,
    Envelope,
    Flags,
    MessageType,
    UploadCommit,
    UploadCommitted,
    UploadReady,
)
from config import load_settings
from workers.app import Server, open_server
from workers.blobs import Blobs
from workers.uploads import chunk_aad, data_key_context, seal_sha256

from .procs import Proc, wait_for
from .relay import Relay
from .stack import Stack, running_stack

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024  # small chunks so that multi-chunk files stay small
SMALL = {"CIPHERDROP_CLIENT_CHUNK_SIZE": str(CHUNK)}
SUMMARY = re.compile(r"^(?P<name>.+)  (?P<size>\d+) bytes  cksum (?P<crc>\d+)  verified$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("alice")
    result = stack.client(home, "register", "alice")
    assert result.returncode == 0, result.stderr
    return home


def server_of(stack: Stack) -> Server:
    return open_server(load_settings(stack.config, env={}))


def stored_plaintext(stack: Stack, home: Path, name: str) -> bytes | None:
    """The file as the server holds it, decrypted by the server's own code; None if absent."""
    client_id = load_identity(home).client_id
    server = server_of(stack)
    try:
        row = server.store.get_file(client_id, name)
        if row is None:
            return None
        assert row.verified
        key = server.data.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        blobs = Blobs(server.data.blobs_path)
        parts = []
        for index in range(row.chunk_count):
            codec, sealed = blobs.read(row.transfer_id, index)
            final = index == row.chunk_count - 1
            aad = chunk_aad(row.transfer_id, codec)
            plain = crypto.open_chunk(key, index, final, sealed, aad)
            parts.append(decompress_chunk(codec, plain, row.chunk_size))
        return b"".join(parts)
    finally:
        server.store.close()


def record_other_sha256(server: Server, home: Path, name: str) -> None:
    """Make the store's SHA-256 record of ``name`` name other contents, sealed as the
    server seals one, so only a comparison with the real contents can tell; closes
    ``server``'s store."""
    try:
        row = server.store.get_file(load_identity(home).client_id, name)
        assert row is not None
        key = server.data.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        other = seal_sha256(key, row.transfer_id, hashlib.sha256(b"other contents").digest())
        server.store._db.execute(
            "UPDATE files SET sha256 = ? WHERE transfer_id = ?", (other, row.transfer_id)
        )
    finally:
        server.store.close()


def cksum_command(path: Path) -> int:
    out = subprocess.run(["cksum", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def put(stack: Stack, home: Path, path: Path, *args: str, **env: str) -> re.Match[str]:
    result = stack.client(home, "put", str(path), *args, env=env)
    assert result.returncode == 0, result.stderr
    match = SUMMARY.match(result.stdout.strip())
    assert match, result.stdout
    return match


def account(stack: Stack, home: Path, endpoint: str | None = None) -> Account:
    """An in-process client for requests the command does not make."""
    identity = load_identity(home)
    conn = Connection(endpoint or stack.endpoint, TransportOptions(timeout=5.0, retries=1))
    server_key, _ = conn.pinned_server_key(home, identity.server_fingerprint)
    return Account(conn, identity, load_private_key(home, None), server_key)


def requests_logged(stack: Stack, service: str, msg_type: str, at_least: int = 0) -> int:
    """How many ``msg_type`` requests the ``service`` workers have logged; first waiting
    (up to WAIT s) until there are ``at_least``. A worker logs a request before it
    replies, but the line reaches ``transcript`` through a thread reading the pipe, so a
    test that expects more lines after a reply waits for them."""

    def count() -> int:
        return sum(
            f'"type": "{msg_type}"' in line and '"event": "request"' in line
            for proc in stack.workers[service]
            for line in list(proc.transcript)
        )

    wait_for(lambda: count() >= at_least)
    return count()


# --- the main path --------------------------------------------------------------------------


def test_register_put_and_the_server_holds_the_file(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    source = tmp_path / "mixed.bin"
    source.write_bytes(os.urandom(300_000) + b"compressible text " * 20_000)
    match = put(stack, alice, source, **SMALL)
    assert match["name"] == "mixed.bin"
    assert int(match["size"]) == source.stat().st_size
    assert int(match["crc"]) == cksum_command(source)
    assert stored_plaintext(stack, alice, "mixed.bin") == source.read_bytes()


def test_second_run_reconnects_instead_of_registering(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    identity_before = (alice / IDENTITY_FILE).read_text()
    registers = requests_logged(stack, "register", "REGISTER_REQUEST")
    keys_before = requests_logged(stack, "key", "KEY_REQUEST")
    source = tmp_path / "again.txt"
    source.write_text("hello again\n")
    put(stack, alice, source)
    put(stack, alice, source, "--name", "again-2.txt")
    assert requests_logged(stack, "register", "REGISTER_REQUEST") == registers
    keys = requests_logged(stack, "key", "KEY_REQUEST", keys_before + 2)
    assert keys == keys_before + 2  # one per run
    assert (alice / IDENTITY_FILE).read_text() == identity_before
    assert stored_plaintext(stack, alice, "again-2.txt") == b"hello again\n"


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 1], ids=lambda s: f"{s}B"
)
def test_sizes_at_the_chunk_boundaries(
    stack: Stack, alice: Path, tmp_path: Path, size: int
) -> None:
    source = tmp_path / f"size-{size}.bin"
    source.write_bytes(os.urandom(size))
    match = put(stack, alice, source, **SMALL)
    assert (int(match["size"]), int(match["crc"])) == (size, cksum_command(source))
    assert stored_plaintext(stack, alice, source.name) == source.read_bytes()


def test_upload_replaces_a_file_of_the_same_name(stack: Stack, alice: Path, tmp_path: Path) -> None:
    source = tmp_path / "replace.txt"
    source.write_text("version one\n")
    put(stack, alice, source)
    source.write_text("version two, longer\n")
    put(stack, alice, source)
    assert stored_plaintext(stack, alice, "replace.txt") == b"version two, longer\n"


def test_300_mib_file(stack: Stack, alice: Path, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        for _ in range(150):  # half random, half text: both paths of the compressor
            out.write(os.urandom(1 << 20))
            out.write(((b"%08d lorem ipsum dolor sit amet\n" % _) * (1 << 15))[: 1 << 20])
    match = put(stack, alice, source, "--quiet")
    assert int(match["size"]) == 300 * (1 << 20)
    assert int(match["crc"]) == cksum_command(source)
    assert stored_plaintext(stack, alice, "big.bin") == source.read_bytes()


# --- isolation between clients --------------------------------------------------------------


def test_two_clients_cannot_see_or_overwrite_each_other(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    bob = tmp_path / "bob"
    assert stack.client(bob, "register", "bob").returncode == 0
    mine, theirs = tmp_path / "a" / "same.txt", tmp_path / "b" / "same.txt"
    mine.parent.mkdir()
    theirs.parent.mkdir()
    mine.write_text("alice's words\n")
    theirs.write_text("bob's words\n")
    put(stack, alice, mine)
    put(stack, bob, theirs)
    assert stored_plaintext(stack, alice, "same.txt") == b"alice's words\n"
    assert stored_plaintext(stack, bob, "same.txt") == b"bob's words\n"
    private = tmp_path / "alice-only.txt"
    private.write_text("secret\n")
    put(stack, alice, private)
    as_alice, as_bob = account(stack, alice), account(stack, bob)
    try:
        ready = as_alice.call(DownloadBegin("alice-only.txt"), DownloadReady)
        with pytest.raises(RefusedError) as info:
            as_bob.call(DownloadBegin("alice-only.txt"), DownloadReady)
        assert info.value.code == "not-found"
        with pytest.raises(RefusedError) as info:  # alice's transfer id, from bob
            as_bob.call(UploadCommit(ready.transfer_id), UploadCommitted)
        assert info.value.code == "not-found"
    finally:
        as_alice.conn.close()
        as_bob.conn.close()
    assert stored_plaintext(stack, alice, "alice-only.txt") == b"secret\n"


def test_name_already_taken_is_refused(stack: Stack, alice: Path, tmp_path: Path) -> None:
    result = stack.client(tmp_path / "impostor", "register", "alice")
    assert result.returncode == ExitStatus.REFUSED
    assert "already registered" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "impostor" / IDENTITY_FILE).exists()


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/passwd", "a/../../b", "nul\x00.txt"])
def test_server_refuses_traversing_and_nul_names(stack: Stack, alice: Path, name: str) -> None:
    # Built by hand: the client's own codec refuses to send these names at all.
    acct = account(stack, alice)
    try:
        session = acct.session
        env = Envelope(
            PROTOCOL_VERSION,
            MessageType.UPLOAD_BEGIN,
            session.client_id,
            session.session_id,
            secrets.token_bytes(16),
            Flags.SESSION,
        )
        env_bytes = encode_envelope(env)
        body = msgpack.packb(
            {"name": name, "size": 1, "chunk_size": CHUNK, "chunk_count": 1, "source": b""},
            use_bin_type=True,
        )
        payload = crypto.seal(session.keys.client_to_server, body, env_bytes)
        req = core.Outgoing((env_bytes, payload), env.request_id, MessageType.UPLOAD_READY)
        reply = acct.conn.send(FILE_SERVICE, req)
        with pytest.raises(RefusedError) as info:
            core.open_reply(session, req, reply, UploadReady)
        assert info.value.code == "invalid-name"
    finally:
        acct.conn.close()


def test_client_refuses_traversing_names_itself(stack: Stack, alice: Path, tmp_path: Path) -> None:
    source = tmp_path / "x.txt"
    source.write_text("x")
    result = stack.client(alice, "put", str(source), "--name", "../x.txt")
    assert result.returncode == ExitStatus.USAGE
    assert "invalid name" in result.stderr


# --- server identity ------------------------------------------------------------------------


def test_wrong_server_fingerprint_is_refused(stack: Stack, tmp_path: Path) -> None:
    home = tmp_path / "carol"
    wrong = "SHA256:" + "ab" * 32
    result = stack.client(home, "register", "carol", "--server-fingerprint", wrong)
    assert result.returncode == ExitStatus.SERVER_KEY_MISMATCH
    assert stack.fingerprint() in result.stderr and "abab abab" in result.stderr
    assert not (home / IDENTITY_FILE).exists()


def test_right_server_fingerprint_is_accepted(stack: Stack, tmp_path: Path) -> None:
    home = tmp_path / "dave"
    result = stack.client(home, "register", "dave", "--server-fingerprint", stack.fingerprint())
    assert result.returncode == 0, result.stderr
    assert "first use" not in result.stderr


def test_changed_server_key_is_a_hard_error_later(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-home"
    other.mkdir()
    for name in ("identity.json", "private_key.pem"):
        (other / name).write_bytes((alice / name).read_bytes())
        (other / name).chmod(0o600)
    record = json.loads((other / IDENTITY_FILE).read_text())
    record["server_fingerprint"] = "SHA256:" + "cd" * 32
    (other / IDENTITY_FILE).write_text(json.dumps(record))
    source = tmp_path / "x.txt"
    source.write_text("x")
    result = stack.client(other, "put", str(source))
    assert result.returncode == ExitStatus.SERVER_KEY_MISMATCH
    assert "server key mismatch" in result.stderr and stack.fingerprint() in result.stderr


# --- an active attacker between client and broker ------------------------------------------


class TamperingRelay(Relay):
    """A relay for one client that records every request and can alter one: with
    ``flip_chunk`` set, a bit in the payload of upload chunk 1 is flipped."""

    def __init__(self, broker: str, flip_chunk: int | None = None) -> None:
        self.flip_chunk = flip_chunk
        self.flipped = 0
        self.requests: list[list[bytes]] = []
        super().__init__(broker, on_request=self._record_and_tamper)

    def _record_and_tamper(self, frames: list[bytes]) -> list[bytes]:
        self.requests.append(list(frames))
        # ["", "MDPC01", service, envelope, payload]
        if self.flip_chunk is None or len(frames) != 5 or frames[3][:2] != b"\x98\x01":
            return frames
        env = decode_envelope(frames[3])
        if env.type is MessageType.UPLOAD_CHUNK and env.stream and env.stream.index == 1:
            payload = bytearray(frames[4])
            payload[len(payload) // 2] ^= 0x01
            self.flipped += 1
            return [*frames[:4], bytes(payload)]
        return frames


def blob_dirs(stack: Stack) -> set[str]:
    root = stack.data_dir / "blobs"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def test_flipped_byte_in_a_chunk_fails_with_integrity_and_stores_nothing(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tampered.bin"
    source.write_bytes(os.urandom(4 * CHUNK))
    before = blob_dirs(stack)
    relay = TamperingRelay(stack.endpoint, flip_chunk=1)
    try:
        result = stack.client(alice, "put", str(source), "--server", relay.endpoint, env=SMALL)
    finally:
        relay.close()
    assert relay.flipped >= 1
    assert result.returncode == ExitStatus.INTEGRITY, result.stderr
    assert "Traceback" not in result.stderr
    assert stored_plaintext(stack, alice, "tampered.bin") is None
    # the worker removes a discarded upload's file right after its reply
    assert wait_for(lambda: blob_dirs(stack) == before), blob_dirs(stack) - before


def _rewrite_in_place(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(b"changed")


def _append(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"more")


def _cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize(
    ("change", "word"),
    [(_rewrite_in_place, "changed"), (_append, "grew"), (_cut_in_half, "shrank")],
    ids=["rewritten", "appended", "truncated"],
)
def test_a_file_changed_while_it_is_read_is_refused_and_nothing_is_kept(
    stack: Stack, alice: Path, tmp_path: Path, change: Callable[[Path], None], word: str
) -> None:
    source = tmp_path / f"{word}.bin"
    source.write_bytes(os.urandom(40 * CHUNK))
    os.utime(source, ns=(10**18, 10**18))  # any write now gives another time
    changed: list[int] = []

    def change_on_the_first_chunk(frames: list[bytes]) -> list[bytes]:
        # ["", "MDPC01", service, envelope, payload]; the client cannot read more than its
        # window and sealing lead beyond this chunk until the relay passes it on.
        envelope = frames[3] if len(frames) == 5 and frames[3][:2] == b"\x98\x01" else None
        if not changed and envelope and decode_envelope(envelope).type is MessageType.UPLOAD_CHUNK:
            change(source)
            changed.append(1)
        return frames

    before = blob_dirs(stack)
    relay = Relay(stack.endpoint, on_request=change_on_the_first_chunk)
    try:
        result = stack.client(alice, "put", str(source), "--server", relay.endpoint, env=SMALL)
    finally:
        relay.close()
    assert changed
    assert result.returncode == ExitStatus.FILE_ERROR, result.stderr
    assert f"{word}.bin: the file {word} while it was being read; not stored" in result.stderr
    assert "Traceback" not in result.stderr
    assert stored_plaintext(stack, alice, source.name) is None
    # the partial transfer was dropped (its file right after the reply), not left to expire
    assert wait_for(lambda: blob_dirs(stack) == before), blob_dirs(stack) - before
    put(stack, alice, source, **SMALL)  # the file as it is now uploads as usual
    assert stored_plaintext(stack, alice, source.name) == source.read_bytes()


def test_replayed_requests_change_nothing(stack: Stack, alice: Path, tmp_path: Path) -> None:
    source = tmp_path / "replay.txt"
    source.write_text("first version\n")
    relay = TamperingRelay(stack.endpoint)
    try:
        result = stack.client(alice, "put", str(source), "--server", relay.endpoint)
    finally:
        relay.close()
    assert result.returncode == 0, result.stderr
    captured = relay.requests
    assert any(b"cipherdrop.file" in frames[2:3] for frames in captured)
    source.write_text("second version\n")
    put(stack, alice, source)
    # The attacker sends every captured request again, in order: the upload of the first
    # version, its confirm, and the key exchange that made its session.
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(stack.endpoint)
    try:
        for frames in captured:
            sock.send_multipart(frames)
            assert sock.poll(10_000), "no answer to a replayed request"
            sock.recv_multipart()
    finally:
        sock.close(linger=0)
        context.term()
    assert stored_plaintext(stack, alice, "replay.txt") == b"second version\n"


def test_an_upload_the_server_has_no_room_for_is_refused_before_it_starts(tmp_path: Path) -> None:
    # More free space than any disk has must stay free: no upload fits.
    with running_stack(
        tmp_path / "stack", file_workers=1, store={"min_free_space": 1 << 62}
    ) as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "fay").returncode == 0
        source = tmp_path / "roomless.txt"
        source.write_text("no room for me\n")
        result = stack.client(home, "put", str(source))
        assert result.returncode == ExitStatus.REFUSED, result.stderr
        assert "out of disk space" in result.stderr and "no room for 15 bytes" in result.stderr
        assert "Traceback" not in result.stderr
        assert stored_plaintext(stack, home, "roomless.txt") is None
        assert blob_dirs(stack) == set()
        assert stack.client(home, "ls", "--json").stdout.strip() == "[]"


def test_an_upload_past_the_clients_quota_is_refused_before_it_starts(tmp_path: Path) -> None:
    with running_stack(tmp_path / "stack", file_workers=1, store={"quota": 25}) as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "gus").returncode == 0
        small, large = tmp_path / "small.txt", tmp_path / "large.txt"
        small.write_bytes(b"ten bytes\n")
        large.write_bytes(b"twenty bytes in all\n")
        assert stack.client(home, "put", str(small)).returncode == 0
        result = stack.client(home, "put", str(large))
        assert result.returncode == ExitStatus.REFUSED, result.stderr
        assert "storage quota on the server is full" in result.stderr
        assert "20 more bytes would pass this client's quota of 25 bytes (10 in use" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr
        assert stored_plaintext(stack, home, "large.txt") is None
        listed = json.loads(stack.client(home, "ls", "--json").stdout)
        assert [entry["name"] for entry in listed] == ["small.txt"]
        assert stack.client(home, "rm", "small.txt").returncode == 0
        assert stack.client(home, "put", str(large)).returncode == 0
        assert stored_plaintext(stack, home, "large.txt") == large.read_bytes()


SLOW_WINDOW = {"CIPHERDROP_CLIENT_WINDOW": "2"}


# --- a worker dies mid-upload ---------------------------------------------------------------


def test_upload_survives_kill_9_of_one_file_worker(tmp_path: Path) -> None:
    # debug: the workers log each chunk they store, which is how the test sees one arrive
    with running_stack(tmp_path / "stack", file_workers=2, log_level="debug") as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "erin").returncode == 0
        source = tmp_path / "long.bin"
        source.write_bytes(os.urandom(96 << 20))
        # A window of 2 keeps the upload going long after the first chunk is stored.
        client = stack.spawn_client(home, "put", str(source), "--quiet", env=SLOW_WINDOW)
        storing: list[Proc] = []

        def stored_a_chunk() -> bool:
            assert client.poll() is None, "the upload ended before a worker stored a chunk"
            storing[:] = [
                w
                for w in stack.workers["file"]
                if any('"UPLOAD_CHUNK"' in x for x in list(w.transcript))
            ]
            return bool(storing)

        assert wait_for(stored_a_chunk, 30, pace=0.01), "upload never began"
        storing[0].kill()
        out, err = client.communicate(timeout=120)
        assert client.returncode == 0, err
        assert int(SUMMARY.match(out.strip())["crc"]) == cksum_command(source)  # type: ignore[index]
        assert stored_plaintext(stack, home, "long.bin") == source.read_bytes()


# --- the original client's transfer.info ----------------------------------------------------


def test_transfer_info_registers_then_reconnects_and_uploads(stack: Stack, tmp_path: Path) -> None:
    """``put --transfer-info``: the first run registers the name it gives, later runs
    reconnect; the endpoint comes from the file (the environment names a dead one)."""
    home = tmp_path / "legacy-home"
    work = tmp_path / "work"
    work.mkdir()
    source = work / "report.bin"
    source.write_bytes(os.urandom(3 * CHUNK + 17))
    info = work / "transfer.info"
    host_port = stack.endpoint.removeprefix("tcp://")
    info.write_text(f'{host_port}\r\nmaria\r\n"report.bin"\r\n')  # as a Windows original
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
    env = {**SMALL, "CIPHERDROP_CLIENT_SERVER": dead}
    registers = requests_logged(stack, "register", "REGISTER_REQUEST")

    first = stack.client(home, "put", "--transfer-info", str(info), "-q", env=env)
    assert first.returncode == 0, first.stderr
    match = SUMMARY.match(first.stdout.strip())
    assert match and match["name"] == "report.bin", first.stdout
    assert int(match["crc"]) == cksum_command(source)
    saved = load_identity(home)
    assert (saved.name, saved.server) == ("maria", stack.endpoint)
    assert requests_logged(stack, "register", "REGISTER_REQUEST", registers + 1) == registers + 1
    assert stored_plaintext(stack, home, "report.bin") == source.read_bytes()

    source.write_bytes(b"the second version\n")
    keys_before = requests_logged(stack, "key", "KEY_REQUEST")
    second = stack.client(home, "put", "--transfer-info", str(info), "-q", env=env)
    assert second.returncode == 0, second.stderr
    assert requests_logged(stack, "register", "REGISTER_REQUEST") == registers + 1
    assert requests_logged(stack, "key", "KEY_REQUEST", keys_before + 1) == keys_before + 1
    assert load_identity(home) == saved
    assert stored_plaintext(stack, home, "report.bin") == b"the second version\n"


def test_transfer_info_with_a_taken_name_is_refused(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    source = tmp_path / "x.txt"
    source.write_text("x")
    info = tmp_path / "transfer.info"
    info.write_text(f"{stack.endpoint.removeprefix('tcp://')}\nalice\nx.txt\n")
    home = tmp_path / "impostor"
    result = stack.client(home, "put", "--transfer-info", str(info))
    assert result.returncode == ExitStatus.REFUSED, result.stderr
    assert "taken" in result.stderr and "Traceback" not in result.stderr
    assert not (home / IDENTITY_FILE).exists()


def test_put_prefers_the_configured_endpoint_to_the_saved_one(
    stack: Stack, alice: Path, tmp_path: Path
) -> None:
    """An identity saved with one endpoint, the server reached at another (a relay): the
    explicitly configured endpoint is used, and the pinned key still has to match."""
    source = tmp_path / "via-relay.txt"
    source.write_text("through the relay\n")
    relay = TamperingRelay(stack.endpoint)
    try:
        result = stack.client(
            alice, "put", str(source), env={"CIPHERDROP_CLIENT_SERVER": relay.endpoint}
        )
    finally:
        relay.close()
    assert result.returncode == 0, result.stderr
    assert any(b"cipherdrop.file" in frames[2:3] for frames in relay.requests)
    assert load_identity(alice).server == stack.endpoint  # the identity is not rewritten
    assert stored_plaintext(stack, alice, "via-relay.txt") == b"through the relay\n"
