"""Resume: an upload or download killed half way continues from what is already there.

Each client runs through a :class:`CountingRelay` that counts the requests it forwards by
message type, so "fewer than 60% sent again" is measured on the wire. The moment to kill is
read from the server's store (chunks held) or from the client's own state file (chunks
received), never guessed with a sleep.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client.cli import ExitStatus
from client.partial import part_paths
from common.codec import decode_envelope
from common.errors import ProtocolError
from common.messages import MessageType
from workers.datadir import DB_NAME

from .procs import Broker, wait_for, wait_for_service
from .relay import Relay
from .stack import SERVICES, Stack, running_stack
from .test_upload_e2e import SUMMARY, cksum_command, stored_plaintext

pytestmark = pytest.mark.integration

MIB = 1 << 20
SIZE = 192 * MIB  # 192 chunks of the default 1 MiB
CHUNKS = SIZE // MIB


class CountingRelay(Relay):
    """A relay for one client that counts requests by type and can alter ``CHUNK_DATA``
    replies (``flip_reply``: the chunk index whose payload gets a bit flipped)."""

    def __init__(self, broker: str, flip_reply: int | None = None) -> None:
        self.flip_reply = flip_reply
        self.flipped = 0
        self.counts: Counter[MessageType] = Counter()
        super().__init__(broker, on_request=self._count, on_reply=self._tamper)

    def _count(self, frames: list[bytes]) -> list[bytes]:
        # ["", "MDPC01", service, envelope, payload]
        with contextlib.suppress(IndexError, ProtocolError):
            self.counts[decode_envelope(frames[3]).type] += 1
        return frames

    def _tamper(self, frames: list[bytes]) -> list[bytes]:
        if self.flip_reply is None or len(frames) != 5 or frames[3][:1] != b"\x98":
            return frames
        env = decode_envelope(frames[3])
        if (
            env.type is MessageType.CHUNK_DATA
            and env.stream
            and env.stream.index == self.flip_reply
        ):
            payload = bytearray(frames[4])
            payload[len(payload) // 2] ^= 0x01
            self.flipped += 1
            return [*frames[:4], bytes(payload)]
        return frames


def wait_until(
    test: Callable[[], bool], what: str, proc: subprocess.Popen[str], limit: float = 60
) -> None:
    def reached() -> bool:
        if test():
            return True
        assert proc.poll() is None, f"the client ended before {what}: {proc.communicate()}"
        return False

    assert wait_for(reached, limit, pace=0.005), f"timed out waiting for {what}"


def chunks_held(stack: Stack, name: str) -> int:
    """Chunks the server holds for the open upload of ``name`` (read-only look)."""
    db = sqlite3.connect(f"file:{stack.data_dir / DB_NAME}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute(
            """SELECT count(*) FROM chunks c JOIN uploads u ON u.transfer_id = c.transfer_id
               WHERE u.name = ? AND u.state = 'open'""",
            (name,),
        ).fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def chunks_received(target: Path) -> int:
    try:
        return int(json.loads(part_paths(target)[1].read_text())["received"])
    except (OSError, ValueError, KeyError):
        return 0


def big_file(path: Path, size: int = SIZE) -> Path:
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(os.urandom(MIB))
    return path


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def home(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resumer")
    assert stack.client(path, "register", "resumer").returncode == 0
    return path


def put_killed_half_way(
    stack: Stack, home: Path, source: Path, chunks: int, stored_as: str | None = None
) -> CountingRelay:
    """``put`` of ``source`` (``-r`` for a directory, whose file of ``chunks`` is
    ``stored_as``) killed (-9) once the server holds half of its ``chunks``; the relay it
    went through, with its counts."""
    relay = CountingRelay(stack.endpoint)
    name = stored_as or source.name
    tree = ["-r"] if source.is_dir() else []
    try:
        client = stack.spawn_client(
            home, "put", "-q", *tree, str(source), "--server", relay.endpoint
        )
        wait_until(lambda: chunks_held(stack, name) >= chunks // 2, "half stored", client)
        kill_9(client)
    finally:
        relay.close()
    return relay


def put_counted(
    stack: Stack, home: Path, source: Path
) -> tuple[subprocess.CompletedProcess[str], CountingRelay]:
    """``put`` of ``source`` to the end, through a relay that counts what it sends."""
    relay = CountingRelay(stack.endpoint)
    try:
        return stack.client(home, "put", "-q", str(source), "--server", relay.endpoint), relay
    finally:
        relay.close()


def test_killed_upload_resumes_and_sends_less_than_60_percent_again(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = big_file(tmp_path / "half.bin")
    first = put_killed_half_way(stack, home, source, CHUNKS)
    assert first.counts[MessageType.UPLOAD_CONFIRM] == 0  # it really was cut short
    result, again = put_counted(stack, home, source)
    assert result.returncode == 0, result.stderr
    assert int(SUMMARY.match(result.stdout.strip())["crc"]) == cksum_command(source)  # type: ignore[index]
    sent = again.counts[MessageType.UPLOAD_CHUNK]
    assert 0 < sent < 0.6 * CHUNKS, f"sent {sent} of {CHUNKS} chunks again"
    assert stored_plaintext(stack, home, "half.bin") == source.read_bytes()


def test_a_file_changed_since_the_interrupted_upload_starts_over_in_one_attempt(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = big_file(tmp_path / "edited.bin", 48 * MIB)
    os.utime(source, ns=(10**18, 10**18))  # the edit below gives it another time
    put_killed_half_way(stack, home, source, 48)
    with source.open("r+b") as f:  # same size, other contents at the start
        f.write(os.urandom(MIB))
    result, again = put_counted(stack, home, source)
    assert result.returncode == 0, result.stderr
    # Not resumed: every chunk sent once, and no second attempt after a CRC mismatch.
    assert again.counts[MessageType.UPLOAD_CHUNK] == 48
    assert again.counts[MessageType.UPLOAD_CONFIRM] == 1
    assert stored_plaintext(stack, home, "edited.bin") == source.read_bytes()


def test_an_interrupted_upload_is_listed_and_can_be_discarded(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = big_file(tmp_path / "abandoned.bin", 64 * MIB)
    put_killed_half_way(stack, home, source, 64)
    listed = stack.client(home, "ls", "--partial", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [e for e in json.loads(listed.stdout) if e["name"] == "abandoned.bin"]
    assert entry["size"] == 64 * MIB and 32 * MIB <= entry["stored"] <= 64 * MIB
    table = stack.client(home, "ls", "--partial").stdout
    assert "abandoned.bin" in table and entry["upload_id"][:8] in table
    held_blobs = stack.data_dir / "blobs" / entry["upload_id"]
    assert held_blobs.exists()

    discarded = stack.client(home, "rm", "--partial", "abandoned.bin")
    assert discarded.returncode == 0, discarded.stderr
    assert discarded.stdout.startswith("abandoned.bin  unfinished upload discarded (")
    after = json.loads(stack.client(home, "ls", "--partial", "--json").stdout)
    assert "abandoned.bin" not in {e["name"] for e in after}
    assert chunks_held(stack, "abandoned.bin") == 0 and not held_blobs.exists()
    assert stack.client(home, "ls", "--json").stdout.count("abandoned.bin") == 0

    again = stack.client(home, "rm", "--partial", "abandoned.bin")
    assert again.returncode == ExitStatus.REFUSED
    assert "no unfinished upload of abandoned.bin" in again.stderr
    assert "Traceback" not in again.stderr
    assert stack.client(home, "rm", "--partial", "-f", "abandoned.bin").returncode == 0

    # With -r, every unfinished upload below a directory goes.
    (tmp_path / "dir").mkdir()
    source.rename(tmp_path / "dir" / "abandoned.bin")
    put_killed_half_way(stack, home, tmp_path / "dir", 64, stored_as="dir/abandoned.bin")
    discarded = stack.client(home, "rm", "-r", "--partial", "dir/")
    assert discarded.returncode == 0, discarded.stderr
    assert discarded.stdout.startswith("dir/abandoned.bin  unfinished upload discarded (")
    assert chunks_held(stack, "dir/abandoned.bin") == 0


@pytest.mark.parametrize("sha256", [False, True], ids=["crc", "crc-and-sha256"])
def test_killed_download_resumes_and_fetches_less_than_60_percent_again(
    stack: Stack, home: Path, tmp_path: Path, sha256: bool
) -> None:
    # With a recorded SHA-256 the resumed run hashes the part file's prefix it keeps.
    source = big_file(tmp_path / "down.bin")
    put_args = ("put", "-q", str(source), *(["--sha256"] if sha256 else []))
    assert stack.client(home, *put_args).returncode == 0
    target = tmp_path / "out" / "down.bin"
    target.parent.mkdir()
    first = CountingRelay(stack.endpoint)
    try:
        args = ("get", "-q", "down.bin", "-o", str(target), "--server", first.endpoint)
        client = stack.spawn_client(home, *args)
        wait_until(lambda: chunks_received(target) >= CHUNKS // 2, "half received", client)
        kill_9(client)
    finally:
        first.close()
    assert not target.exists()  # nothing under the final name
    assert part_paths(target)[0].exists()
    again = CountingRelay(stack.endpoint)
    try:
        args = ("get", "-v", "-q", "down.bin", "-o", str(target), "--server", again.endpoint)
        result = stack.client(home, *args)
    finally:
        again.close()
    assert result.returncode == 0, result.stderr
    fetched = again.counts[MessageType.DOWNLOAD_CHUNK]
    assert 0 < fetched < 0.6 * CHUNKS, f"fetched {fetched} of {CHUNKS} chunks again"
    assert f"received {fetched} of {CHUNKS} chunks" in result.stderr
    assert target.read_bytes() == source.read_bytes()
    assert not any(p.exists() for p in part_paths(target))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert (f"  sha256 {digest}  verified" in result.stdout) is sha256


def test_download_of_a_replaced_file_starts_over(stack: Stack, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "changes.bin"
    source.write_bytes(os.urandom(3 * MIB))
    assert stack.client(home, "put", "-q", str(source)).returncode == 0
    target = tmp_path / "changes.bin.out"
    part, state = part_paths(target)
    # A part file from an earlier version of the file, claiming two chunks.
    part.write_bytes(b"stale" * MIB)
    record = {"version": 1, "transfer_id": "00" * 16, "size": 3 * MIB, "chunk_size": MIB}
    state.write_text(json.dumps({**record, "chunk_count": 3, "crc": 1, "received": 2}))
    result = stack.client(home, "get", "-v", "changes.bin", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert "received 3 of 3 chunks (0 already here)" in result.stderr
    assert target.read_bytes() == source.read_bytes()


def test_upload_survives_kill_9_and_restart_of_the_broker(tmp_path: Path) -> None:
    with running_stack(tmp_path / "stack") as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "phoenix").returncode == 0
        source = big_file(tmp_path / "phoenix.bin", 256 * MIB)
        client = stack.spawn_client(home, "put", "-q", str(source))
        wait_until(lambda: chunks_held(stack, "phoenix.bin") >= 32, "chunks stored", client)
        stack.broker.kill()
        stack.broker = Broker(stack.endpoint, *stack.heartbeat)  # the same port
        stack.procs.append(stack.broker)
        for service in SERVICES.values():
            wait_for_service(stack.endpoint, service, timeout=30)
        out, err = client.communicate(timeout=180)
        if client.returncode != 0:  # the client gave up meanwhile: running it again resumes
            result = stack.client(home, "put", "-q", str(source))
            out, err = result.stdout, result.stderr
            assert result.returncode == 0, err
        assert int(SUMMARY.match(out.strip())["crc"]) == cksum_command(source)  # type: ignore[index]
        assert stored_plaintext(stack, home, "phoenix.bin") == source.read_bytes()
