"""The legacy gateway end to end: real broker, workers and gateway processes on 127.0.0.1.

A legacy client written from the protocol's specification (``tests/legacy_client.py``)
registers, sends its key and files, and confirms CRCs in all four dialects. What the server
stored is read back with the server's own code and compared with the file; the CRC is
compared with what the ``cksum`` command prints. Hostile and slow connections must leave
the gateway serving everyone else.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.compress import decompress_chunk
from common.crypto import open_chunk
from tests.legacy_client import DIALECTS, LegacyClient, field
from workers.blobs import Blobs
from workers.datadir import open_data_dir
from workers.keyx import TRUSTED_GATEWAYS
from workers.store import Store
from workers.uploads import chunk_aad, data_key_context

from .procs import Proc, run_module, wait_for
from .stack import Stack
from .test_server import ServerProcess

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"
_counter = iter(range(10**6))


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


class Gateway(Proc):
    """``python -m gateway`` on a random port, with its own key directory."""

    def __init__(self, broker: str, directory: Path, dialect: str, *flags: str) -> None:
        argv = [sys.executable, "-m", "gateway", "--dialect", dialect, "--listen", f"{HOST}:0"]
        argv += ["--broker", broker, "--dir", str(directory), "--rsa-bits", "2048"]
        argv += ["--log-format", "json", "--request-timeout", "5", *flags]
        super().__init__(argv, f"gateway-{dialect}")
        line = self.expect(self.stderr, lambda text: '"gateway.listening"' in text, timeout=30)
        self.port = int(json.loads(line)["port"])
        self.dialect = dialect

    def client(self, timeout: float = 60.0) -> LegacyClient:
        return LegacyClient(HOST, self.port, self.dialect, timeout=timeout)


def trust(data_dir: Path, directory: Path) -> None:
    """The operator step: list the gateway's fingerprint in the server's trusted file."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "--print-fingerprint",
            "--dir",
            str(directory),
            "--rsa-bits",
            "2048",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    with (data_dir / TRUSTED_GATEWAYS).open("a", encoding="utf-8") as trusted:
        trusted.write(out.stdout.strip() + "  # test gateway\n")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("gateway-stack"), file_workers=2)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def gateways(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Gateway]]:
    base = tmp_path_factory.mktemp("gateways")
    started: dict[str, Gateway] = {}
    try:
        for dialect in DIALECTS:
            trust(stack.data_dir, base / dialect)
            started[dialect] = Gateway(stack.endpoint, base / dialect, dialect)
        trust(stack.data_dir, base / "strict")
        started["strict"] = Gateway(
            stack.endpoint,
            base / "strict",
            "a",
            "--idle-timeout",
            "1.5",
            "--max-connections",
            "6",
            "--max-per-address",
            "5",
            "--max-file-size",
            str(1024 * 1024),
        )
        yield started
    finally:
        for gateway in started.values():
            gateway.stop()


def stored_file(data_dir: Path, client_id: bytes, name: str) -> tuple[bytes, bool, int] | None:
    """(plaintext, verified, crc) of a stored file, read back with the server's own code."""
    data = open_data_dir(data_dir, 2048, env={})
    store = Store.open(data.db_path)
    try:
        row = store.get_file(client_id, name)
        if row is None:
            return None
        key = data.master.unwrap(row.data_key, data_key_context(row.transfer_id))
        blobs = Blobs(data.blobs_path)
        parts = []
        for index in range(row.chunk_count):
            codec, sealed = blobs.read(row.transfer_id, index)
            final = index == row.chunk_count - 1
            compressed = open_chunk(key, index, final, sealed, chunk_aad(row.transfer_id, codec))
            parts.append(decompress_chunk(codec, compressed, row.chunk_size))
        return b"".join(parts), row.verified, row.crc
    finally:
        store.close()


def is_legacy(data_dir: Path, client_id: bytes) -> bool:
    with sqlite3.connect(f"file:{data_dir / 'cipherdrop.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT legacy FROM clients WHERE id = ?", (client_id,)).fetchone()
    return bool(row and row[0])


def cksum_command(path: Path) -> int:
    out = subprocess.run(["cksum", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def register_and_key(gateway: Gateway, name: str) -> LegacyClient:
    client = gateway.client()
    assert client.register(name).kind == "registered"
    assert client.send_public_key(name).kind == "aes_key"
    return client


def right_crc(path: Path) -> object:
    return lambda data, attempt: cksum_command(path)


# --- the happy paths -----------------------------------------------------------------------


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
@pytest.mark.parametrize("size", [0, 1, 4096, 1024 * 1024 + 37])
def test_register_key_file_crc_ok(
    gateways: dict[str, Gateway], stack: Stack, tmp_path: Path, dialect: str, size: int
) -> None:
    name = unique(f"legacy-{dialect}")
    data = os.urandom(size // 2) + bytes(size - size // 2)  # half random, half compressible
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    with register_and_key(gateways[dialect], name) as client:
        assert len(client.client_id) == 16
        verified, tries = client.upload("dir/file.bin", data, right_crc(path))
        assert (verified, tries) == (True, 1)
    assert is_legacy(stack.data_dir, client.client_id)
    stored = stored_file(stack.data_dir, client.client_id, "dir/file.bin")
    assert stored is not None
    plain, was_verified, crc = stored
    assert plain == data and was_verified
    assert crc == cksum_command(path)


def test_beside_cipherdrop_server(tmp_path: Path) -> None:
    """The deployment the docs describe: ``cipherdrop-server`` with one worker of each
    service, the gateway trusted by the operator and pinned to the server's key, and an
    unmodified legacy client going through register, key, file and CRC ok."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", workers="file=1,key=1,register=1")
    gateway: Gateway | None = None
    try:
        trust(server.data, tmp_path / "gateway")
        gateway = Gateway(
            server.endpoint,
            tmp_path / "gateway",
            "c",
            "--server-fingerprint",
            server.fingerprint,
        )
        data = os.urandom(300_000) + b"beside the server\n" * 1000
        path = tmp_path / "beside.bin"
        path.write_bytes(data)
        with register_and_key(gateway, unique("beside")) as client:
            assert client.upload("beside.bin", data, right_crc(path)) == (True, 1)
        assert gateway.stop(timeout=20) == 0
        assert server.stop(timeout=30) == 0
        assert is_legacy(server.data, client.client_id)
        stored = stored_file(server.data, client.client_id, "beside.bin")
        assert stored is not None
        plain, verified, crc = stored
        assert plain == data and verified and crc == cksum_command(path)
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop(timeout=20)


def test_the_gateway_follows_a_change_of_server_key_its_pin_endorsed(tmp_path: Path) -> None:
    """After ``cipherdrop-admin rotate-server-key`` the restarted gateway checks the
    previous key's endorsement, records the new key and serves legacy clients again."""
    (tmp_path / "server").mkdir()
    server = ServerProcess(tmp_path / "server", workers="file=1,key=1,register=1")
    directory = tmp_path / "gateway"
    gateway: Gateway | None = None
    try:
        trust(server.data, directory)
        gateway = Gateway(server.endpoint, directory, "a")  # pins on first use
        old = server.fingerprint
        assert (directory / "server.fingerprint").read_text().strip() == old
        assert gateway.stop(timeout=20) == 0
        assert server.stop(timeout=30) == 0
        rotated = run_module("workers.admin", "--data", str(server.data), "rotate-server-key")
        assert rotated.returncode == 0, rotated.stderr

        server = ServerProcess(tmp_path / "server", workers="file=1,key=1,register=1")
        assert server.fingerprint != old
        gateway = Gateway(server.endpoint, directory, "a")
        followed = [json.loads(line) for line in gateway.transcript if "key_followed" in line]
        assert [(r["previous"], r["fingerprint"]) for r in followed] == [(old, server.fingerprint)]
        assert (directory / "server.fingerprint").read_text().strip() == server.fingerprint
        data = b"after the change of server key\n" * 100
        path = tmp_path / "after.txt"
        path.write_bytes(data)
        with register_and_key(gateway, unique("after")) as client:
            assert client.upload("after.txt", data, right_crc(path)) == (True, 1)
        # Started with the old fingerprint given, it follows too, and says the flag is stale.
        assert gateway.stop(timeout=20) == 0
        gateway = Gateway(server.endpoint, directory, "a", "--server-fingerprint", old)
        stale = [json.loads(line) for line in gateway.transcript if "key_followed" in line]
        assert len(stale) == 1 and "update --server-fingerprint" in stale[0]["detail"]
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop(timeout=20)


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["a", "d"])
def test_fifty_mebibytes(
    gateways: dict[str, Gateway], stack: Stack, tmp_path: Path, dialect: str
) -> None:
    data = os.urandom(50 * 1024 * 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with register_and_key(gateways[dialect], unique("big")) as client:
        assert client.upload("big.bin", data, right_crc(path)) == (True, 1)
    stored = stored_file(stack.data_dir, client.client_id, "big.bin")
    assert stored is not None and stored[0] == data and stored[2] == cksum_command(path)


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_reconnect_gets_a_new_key_that_works(
    gateways: dict[str, Gateway], stack: Stack, tmp_path: Path, dialect: str
) -> None:
    name = unique("again")
    first = register_and_key(gateways[dialect], name)
    first_key, client_id, private = first.aes_key, first.client_id, first.key
    first.close()
    with gateways[dialect].client() as client:
        client.key = private  # the client's own key pair, as read from its key file
        client.client_id = client_id
        reply = client.reconnect(name)
        assert reply.kind == "reconnect_approved"
        assert client.client_id == client_id and client.aes_key != first_key
        path = tmp_path / "r.txt"
        path.write_bytes(b"after reconnect\n")
        assert client.upload("r.txt", path.read_bytes(), right_crc(path)) == (True, 1)
    stored = stored_file(stack.data_dir, client_id, "r.txt")
    assert stored is not None and stored[0] == b"after reconnect\n"


def test_reconnect_of_an_unknown_name_is_refused_with_the_client_id(
    gateways: dict[str, Gateway],
) -> None:
    with gateways["b"].client() as client:
        client.client_id = bytes(range(16))
        reply = client.reconnect(unique("nobody"))
        assert (reply.kind, reply.payload) == ("reconnect_refused", bytes(range(16)))
        assert client.register(unique("then-register")).kind == "registered"  # as the originals


def test_reconnect_answer_is_useless_without_the_private_key(gateways: dict[str, Gateway]) -> None:
    name = unique("victim")
    register_and_key(gateways["c"], name).close()
    with gateways["c"].client() as thief:  # knows the name, not the key
        thief.send("reconnect", field(name))
        reply = thief.reply()
        assert reply.kind == "reconnect_approved"
        with pytest.raises(ValueError):
            thief._take_key(reply.payload)  # encrypted to the owner's key, not the thief's


def test_crc_bad_then_resend(gateways: dict[str, Gateway], stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "retry.bin"
    path.write_bytes(os.urandom(70_000))
    good = cksum_command(path)

    def believed(data: bytes, attempt: int) -> int:
        return good if attempt == 2 else good ^ 1  # the first comparison fails

    with register_and_key(gateways["d"], unique("resend")) as client:
        assert client.upload("retry.bin", path.read_bytes(), believed) == (True, 2)
    stored = stored_file(stack.data_dir, client.client_id, "retry.bin")
    assert stored is not None and stored[0] == path.read_bytes() and stored[1]


def test_crc_bad_giving_up_stores_nothing(
    gateways: dict[str, Gateway], stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "never.bin"
    path.write_bytes(b"x" * 1000)
    with register_and_key(gateways["a"], unique("giveup")) as client:
        verified, tries = client.upload("never.bin", path.read_bytes(), lambda d, a: 0)
        assert (verified, tries) == (False, 3)
        assert client.register(unique("still-open")).kind == "general_error"  # out of order
    assert stored_file(stack.data_dir, client.client_id, "never.bin") is None


def test_a_fourth_resend_is_refused(gateways: dict[str, Gateway]) -> None:
    with register_and_key(gateways["a"], unique("stubborn")) as client:
        for _ in range(3):
            assert client.send_file("s.bin", b"data").kind == "file_received"
            client.verdict("crc_retry", "s.bin")
        assert client.send_file("s.bin", b"data").kind == "file_received"
        client.send("crc_retry", field("s.bin"))
        assert client.reply().kind == "general_error"


# --- who may set a key ---------------------------------------------------------------------


def test_taken_name_fails_registration(gateways: dict[str, Gateway]) -> None:
    name = unique("taken")
    register_and_key(gateways["a"], name).close()
    with gateways["b"].client() as other:
        assert other.register(name).kind == "registration_failed"


def test_public_key_only_for_the_name_registered_on_this_connection(
    gateways: dict[str, Gateway],
) -> None:
    owner = unique("owner")
    register_and_key(gateways["a"], owner).close()
    with gateways["a"].client() as attacker:
        assert attacker.send_public_key(owner).kind == "general_error"  # nothing registered here
        assert attacker.register(unique("attacker")).kind == "registered"
        assert attacker.send_public_key(owner).kind == "general_error"  # another name


def test_untrusted_gateway_gets_nothing(stack: Stack, tmp_path: Path) -> None:
    gateway = Gateway(stack.endpoint, tmp_path / "rogue", "a")
    try:
        with gateway.client() as client:
            assert client.register(unique("rogue")).kind == "general_error"
    finally:
        gateway.stop()


# --- hostile and slow peers ------------------------------------------------------------------


def raw(gateway: Gateway, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data``, then read until the gateway closes; everything it answered."""
    with socket.create_connection((HOST, gateway.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def header(dialect: str, request: str, size: int, version: int = 3) -> bytes:
    return struct.pack("<16sBHI", bytes(16), version, DIALECTS[dialect].requests[request], size)


def general_error(dialect: str) -> bytes:
    code = next(c for c, kind in DIALECTS[dialect].responses.items() if kind == "general_error")
    return struct.pack("<BHI", 3, code, 0)


def assert_still_serving(gateway: Gateway) -> None:
    with gateway.client() as client:
        assert client.register(unique("alive")).kind == "registered"


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(lambda d: header(d, "register", 255, version=9) + bytes(255), id="version"),
        pytest.param(lambda d: struct.pack("<16sBHI", bytes(16), 3, 4242, 0), id="unknown-code"),
        pytest.param(lambda d: header(d, "register", 10**9), id="oversize-register"),
        pytest.param(lambda d: header(d, "register", 254) + bytes(254), id="short-register"),
        pytest.param(lambda d: header(d, "crc_ok", 2**32 - 1), id="oversize-crc"),
        pytest.param(lambda d: os.urandom(23 * 40), id="random-bytes"),
    ],
)
def test_malformed_requests_get_the_general_error_and_a_close(
    gateways: dict[str, Gateway], junk: object
) -> None:
    for dialect in ("a", "c"):
        answer = raw(gateways[dialect], junk(dialect))  # type: ignore[operator]
        assert answer == general_error(dialect)
        assert_still_serving(gateways[dialect])


def test_truncated_payload_is_dropped(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["strict"]
    with socket.create_connection((HOST, gateway.port), timeout=10) as sock:
        sock.sendall(header("a", "register", 255) + b"half")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the peer left mid-request: nothing to answer
    assert_still_serving(gateway)


def test_oversize_file_is_refused_before_it_is_read(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["strict"]  # files of at most 1 MiB
    with register_and_key(gateway, unique("big")) as client:
        size = 2 * 1024 * 1024
        client.send("send_file", struct.pack("<I", size) + field("x")[:0] + field("x"))
        assert client.reply().kind == "general_error"
        assert client.closed_by_server()
    assert_still_serving(gateway)


@pytest.mark.parametrize("dialect", ["a", "c"])
def test_bad_padding_and_wrong_length_get_the_same_answer(
    gateways: dict[str, Gateway], dialect: str
) -> None:
    answers = []
    for case in ("padding", "length"):
        with register_and_key(gateways[dialect], unique(case)) as client:
            ciphertext = client.encrypt(b"sixteen byte msg")  # 32 bytes: one block of padding
            if case == "padding":
                key = client.aes_key
                assert key is not None
                from Crypto.Cipher import AES

                ciphertext = AES.new(key, AES.MODE_CBC, iv=bytes(16)).encrypt(b"A" * 32)
                original = 16
            else:
                ciphertext = ciphertext[:-3]  # not whole blocks
                original = 16
            client.send_file_bytes("p.bin", ciphertext, original)
            reply = client.reply()
            answers.append((reply.code, reply.payload, client.closed_by_server()))
    assert answers[0] == answers[1] == (answers[0][0], b"", True)
    assert DIALECTS[dialect].responses[answers[0][0]] == "general_error"


def test_one_address_cannot_take_every_slot(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["strict"]  # at most 5 from one address, 6 in all
    idle = [idle_from(gateway, "127.0.0.30") for _ in range(5)]
    try:
        assert refused_from(gateway, "127.0.0.30")  # the 6th from that address
        with gateway.client() as client:  # the sixth slot is still there for another
            assert client.register(unique("other")).kind == "registered"
    finally:
        for sock in idle:
            sock.close()


def test_slow_loris_is_cut_off_and_others_are_served(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["strict"]  # idle timeout 1.5 s
    stop = threading.Event()
    closed: list[float] = []

    def drip() -> None:
        with socket.create_connection((HOST, gateway.port), timeout=20) as sock:
            started = time.monotonic()
            try:
                for byte in header("a", "register", 255):
                    sock.sendall(bytes([byte]))
                    if stop.wait(0.5):
                        return
                while sock.recv(100):
                    pass
            except OSError:
                pass
            closed.append(time.monotonic() - started)

    threads = [threading.Thread(target=drip) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert_still_serving(gateway)
        for thread in threads:
            thread.join(timeout=30)
        assert len(closed) == 3 and all(seconds < 10 for seconds in closed)
    finally:
        stop.set()


def idle_from(gateway: Gateway, address: str) -> socket.socket:
    """A connection from ``address`` (any 127.x.y.z reaches the gateway on loopback)."""
    return socket.create_connection((HOST, gateway.port), timeout=10, source_address=(address, 0))


def refused_from(gateway: Gateway, address: str) -> bool:
    """Whether a new connection from ``address`` gets the general error and a close
    (asked until the gateway has seen the idle connections opened before it)."""

    def refused() -> bool:
        with idle_from(gateway, address) as sock:
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return received == general_error("a")

    return wait_for(refused, 5, pace=0.01)


def test_connection_cap(gateways: dict[str, Gateway]) -> None:
    gateway = gateways["strict"]  # at most 6 at once
    # From six addresses, so that the per-address cap (5) is not what refuses the 7th.
    idle = [idle_from(gateway, f"127.0.0.{10 + n}") for n in range(6)]
    try:
        assert refused_from(gateway, "127.0.0.20")
    finally:
        for sock in idle:
            sock.close()

    def serving() -> bool:
        try:
            assert_still_serving(gateway)
        except (AssertionError, ConnectionError):
            return False
        return True

    # The idle ones time out or are closed; then others are served again.
    if not wait_for(serving, 10, pace=0.01):
        assert_still_serving(gateway)  # raises what kept it from serving


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--max-per-address", "0", "--max-per-address: must be at least 1"),
        ("--max-per-address", "-3", "--max-per-address: must be at least 1"),
        ("--max-per-address", "many", "argument --max-per-address: invalid int value"),
        ("--max-connections", "0", "--max-connections: must be at least 1"),
        ("--idle-timeout", "0", "--idle-timeout: must be positive"),
        ("--max-file-size", "-1", "--max-file-size: must be at least 1"),
    ],
)
def test_bad_limits_are_one_line_and_exit_2(
    flag: str, value: str, expected: str, tmp_path: Path
) -> None:
    done = run_module("gateway", flag, value, "--dir", str(tmp_path / "gw"))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "gw").exists()  # refused before anything was made
