"""cipherdrop.file: upload, CRC, integrity, idempotency, isolation, expiry, data at rest."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.listing import all_pages, unfinished_pages
from common import background, crypto
from common.cksum import cksum
from common.codec import decode_body, decode_envelope
from common.compress import decompress_chunk
from common.messages import (
    ChunkStored,
    Codec,
    Deleted,
    DeleteFile,
    DownloadBegin,
    DownloadChunk,
    DownloadReady,
    ErrorCode,
    ErrorReply,
    FileList,
    Flags,
    ListFiles,
    ListUploads,
    Message,
    MessageType,
    RegisterRequest,
    Renamed,
    RenameFile,
    StreamPosition,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadList,
    UploadReady,
    Verdict,
    carries_data,
)
from workers import blobs as blobs_module
from workers import files as files_module
from workers.blobs import REMOVAL
from workers.files import file_service

from .server_harness import MAX_CHUNK, Client, Server, envelope, error_code, rsa_key

CHUNK = 4096


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "var", session_ttl=600.0)
    yield running
    running.close()


def connected(server: Server, name: str) -> Client:
    client = Client(server, name, rsa_key(name))
    client.register()
    client.connect()
    return client


@pytest.fixture
def alice(server: Server) -> Client:
    return connected(server, "alice")


@pytest.fixture
def bob(server: Server) -> Client:
    return connected(server, "bob")


def snapshot(server: Server) -> tuple[list[str], list[str]]:
    """Every row and every file under the data dir: 'nothing changed' means both equal."""
    files = sorted(str(p.relative_to(server.data.path)) for p in server.data.path.rglob("*"))
    return server.dump(), [f for f in files if not f.startswith(("cipherdrop.db",))]


def download(client: Client, name: str) -> bytes:
    ready = client.ask(DownloadBegin(name))
    assert isinstance(ready, DownloadReady), ready
    pieces = []
    for index in range(ready.chunk_count):
        frames = client.session_frames(DownloadChunk(ready.transfer_id, index))
        reply = client.server.call("file", frames)
        env = decode_envelope(reply[0])
        assert env.type == MessageType.CHUNK_DATA and env.stream is not None
        aad = ready.transfer_id + bytes([env.codec])
        sealed = crypto.open_chunk(ready.data_key, index, env.stream.final, reply[1], aad=aad)
        pieces.append(decompress_chunk(env.codec, sealed, ready.chunk_size))
    data = b"".join(pieces)
    assert len(data) == ready.size and cksum(data) == ready.crc
    return data


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK, 3 * CHUNK + 5])
def test_upload_verifies_with_the_posix_crc_and_downloads_back(alice: Client, size: int) -> None:
    data = os.urandom(size)
    committed, done = alice.upload("report.bin", data, CHUNK)
    assert committed.size == size and committed.crc == cksum(data)
    assert done == UploadDone("report.bin", True)
    assert download(alice, "report.bin") == data
    listing = alice.ask(ListFiles())
    assert isinstance(listing, FileList)
    assert [(f.name, f.size, f.crc, f.verified) for f in listing.files] == [
        ("report.bin", size, cksum(data), True)
    ]


def test_a_recorded_sha256_is_listed_handed_to_downloads_and_kept_by_a_rename(
    alice: Client,
) -> None:
    data = os.urandom(3 * CHUNK + 5)
    digest = hashlib.sha256(data).digest()
    alice.upload("hashed.bin", data, CHUNK, sha256=digest)
    alice.upload("plain.bin", data, CHUNK)
    listing = alice.ask(ListFiles())
    assert isinstance(listing, FileList)
    assert {f.name: f.sha256 for f in listing.files} == {"hashed.bin": digest, "plain.bin": None}
    for name, expected in (("hashed.bin", digest), ("plain.bin", None)):
        ready = alice.ask(DownloadBegin(name))
        assert isinstance(ready, DownloadReady) and ready.sha256 == expected
    assert isinstance(alice.ask(RenameFile("hashed.bin", "moved.bin", False)), Renamed)
    ready = alice.ask(DownloadBegin("moved.bin"))
    assert isinstance(ready, DownloadReady) and ready.sha256 == digest


def test_crc_equals_the_cksum_command_for_compressed_chunks(alice: Client) -> None:
    data = b"all work and no play makes a dull file\n" * 5000
    committed, _ = alice.upload("text/notes.txt", data, CHUNK, compress=True)
    command = shutil.which("cksum")
    assert command is not None
    printed = subprocess.run([command], input=data, capture_output=True, check=True).stdout
    assert committed.crc == int(printed.split()[0])
    assert download(alice, "text/notes.txt") == data


def test_a_chunk_with_one_flipped_byte_is_refused_and_nothing_is_stored(
    server: Server, alice: Client
) -> None:
    ready = alice.begin("f", b"x" * 10, CHUNK)
    frames = alice.chunk_frames(ready, 0, True, b"x" * 10)
    before = snapshot(server)
    for position in (0, len(frames[1]) // 2, len(frames[1]) - 1):
        tampered = bytearray(frames[1])
        tampered[position] ^= 0x01
        assert error_code(alice.send_chunk([frames[0], bytes(tampered)])) == "integrity"
    assert snapshot(server) == before
    assert alice.send_chunk(frames) == ChunkStored(ready.transfer_id, 0)


def test_chunks_out_of_place_are_refused(server: Server, alice: Client) -> None:
    data = b"y" * (2 * CHUNK)
    ready = alice.begin("g", data, CHUNK)
    before = snapshot(server)
    not_final = alice.chunk_frames(ready, 1, False, b"y" * CHUNK)
    assert error_code(alice.send_chunk(not_final)) == "conflict"
    beyond = alice.chunk_frames(ready, 2, True, b"y")
    assert error_code(alice.send_chunk(beyond)) == "conflict"
    short = alice.chunk_frames(ready, 0, False, b"y" * 10)
    assert error_code(alice.send_chunk(short)) == "conflict"
    assert snapshot(server) == before
    assert error_code(alice.ask(UploadCommit(ready.transfer_id))) == "conflict"


def test_replayed_requests_return_the_stored_reply_and_change_nothing(
    server: Server, alice: Client
) -> None:
    data = os.urandom(CHUNK + 1)
    begin = alice.session_frames(UploadBegin("r", len(data), CHUNK, 2))
    ready = alice.open_reply(server.call("file", begin), begin[0])
    assert isinstance(ready, UploadReady)
    chunk = alice.chunk_frames(ready, 0, False, data[:CHUNK])
    assert alice.send_chunk(chunk) == ChunkStored(ready.transfer_id, 0)
    before = snapshot(server)
    assert alice.open_reply(server.call("file", begin), begin[0]) == ready
    assert alice.send_chunk(chunk) == ChunkStored(ready.transfer_id, 0)
    assert snapshot(server) == before
    alice.send_chunk(alice.chunk_frames(ready, 1, True, data[CHUNK:]))
    commit = alice.session_frames(UploadCommit(ready.transfer_id))
    committed = alice.open_reply(server.call("file", commit), commit[0])
    confirm = alice.session_frames(UploadConfirm(ready.transfer_id, Verdict.OK))
    done = alice.open_reply(server.call("file", confirm), confirm[0])
    before = snapshot(server)
    assert alice.open_reply(server.call("file", commit), commit[0]) == committed
    assert alice.open_reply(server.call("file", confirm), confirm[0]) == done
    assert snapshot(server) == before


def test_old_replies_are_forgotten_once_no_replay_could_be_taken(
    server: Server, alice: Client
) -> None:
    """Past the retention every kind of recorded request is refused before its reply would
    matter: the session has ended, the key request is stale, the name is taken."""
    again = Client(server, "alice", rsa_key("alice"))
    register, register_key = again.sealed(RegisterRequest("alice", again.public_der))
    key_frames, key_key = alice.sealed(alice.key_request())
    granted = alice.open_reply(server.call("key", key_frames), key_frames[0], key_key)
    assert not isinstance(granted, ErrorReply)
    delete = alice.session_frames(DeleteFile("gone"))
    assert alice.open_reply(server.call("file", delete), delete[0]) == Deleted("gone", False)
    assert _replies(server) > 0
    server.now += files_module.REPLY_RETENTION + 1
    alice.connect()
    assert isinstance(alice.ask(ListFiles()), FileList)  # runs the expiry check
    assert _replies(server) == 1  # the new key exchange's own
    before = snapshot(server)
    for service, frames, key, code in (
        # the ended session is gone from the store, so it is not even known any more
        ("file", delete, None, {ErrorCode.SESSION_EXPIRED, ErrorCode.UNKNOWN_SESSION}),
        ("key", key_frames, key_key, {ErrorCode.BAD_PROOF}),  # its timestamp is stale
        ("register", register, register_key, {ErrorCode.NAME_TAKEN}),
    ):
        answer = server.call(service, frames)
        env = decode_envelope(answer[0])
        sealed = env.flags == Flags.SEALED_REPLY and key is not None
        body = crypto.open_sealed(key, answer[1], answer[0]) if sealed else answer[1]
        reply = decode_body(env.type, body)
        assert isinstance(reply, ErrorReply), (service, reply)
        assert code is None or reply.code in code, (service, reply)
    assert snapshot(server) == before


def _replies(server: Server) -> int:
    return int(server.store._db.execute("SELECT count(*) FROM replies").fetchone()[0])


def _stored(alice: Client, ready: UploadReady, data: bytes) -> None:
    pieces = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    for index, piece in enumerate(pieces):
        frames = alice.chunk_frames(ready, index, index == len(pieces) - 1, piece)
        assert alice.send_chunk(frames) == ChunkStored(ready.transfer_id, index)


def test_committing_twice_returns_the_same_answer_even_once_published(alice: Client) -> None:
    data = os.urandom(2 * CHUNK + 5)
    ready = alice.begin("twice", data, CHUNK)
    _stored(alice, ready, data)
    first = alice.ask(UploadCommit(ready.transfer_id))
    assert isinstance(first, UploadCommitted) and first.crc == cksum(data)
    assert alice.ask(UploadCommit(ready.transfer_id)) == first  # a new request id
    assert alice.ask(UploadConfirm(ready.transfer_id, Verdict.OK)) == UploadDone("twice", True)
    assert alice.ask(UploadCommit(ready.transfer_id)) == first
    assert download(alice, "twice") == data


def test_a_commit_requeued_while_another_worker_commits_gets_the_same_answer(
    server: Server, alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two file workers on one data dir. While the first syncs the chunks, the broker (which
    # took the first for dead) hands the same request to the second, which commits first.
    other = Server(server.data.path, session_ttl=600.0)
    try:
        other.now = server.now
        data = os.urandom(3 * CHUNK)
        ready = alice.begin("raced", data, CHUNK)
        _stored(alice, ready, data)
        commit = alice.session_frames(UploadCommit(ready.transfer_id))
        uploads = cast(Any, server.file.routes[MessageType.UPLOAD_COMMIT].handler).__self__
        sync = uploads.blobs.sync
        answers: list[Message] = []

        def sync_while_the_other_commits(transfer_id: bytes) -> None:
            sync(transfer_id)
            answers.append(alice.open_reply(other.call("file", commit), commit[0]))

        monkeypatch.setattr(uploads.blobs, "sync", sync_while_the_other_commits)
        mine = alice.open_reply(server.call("file", commit), commit[0])
        assert isinstance(mine, UploadCommitted) and mine.crc == cksum(data)
        assert answers == [mine]
        assert alice.ask(UploadConfirm(ready.transfer_id, Verdict.OK)) == UploadDone("raced", True)
        assert download(alice, "raced") == data
    finally:
        other.close()


def test_resume_returns_the_same_transfer_key_and_stored_chunks(alice: Client) -> None:
    data = os.urandom(3 * CHUNK)
    ready = alice.begin("big", data, CHUNK)
    alice.send_chunk(alice.chunk_frames(ready, 1, False, data[CHUNK : 2 * CHUNK]))
    again = alice.begin("big", data, CHUNK)
    assert (again.transfer_id, again.data_key, again.stored) == (
        ready.transfer_id,
        ready.data_key,
        (1,),
    )
    committed, _ = alice.upload("big", data, CHUNK)
    assert committed.transfer_id == ready.transfer_id and committed.crc == cksum(data)


def test_only_a_begin_for_the_same_source_version_resumes(alice: Client) -> None:
    def begin(source: bytes) -> UploadReady:
        ready = alice.ask(UploadBegin("big", 3 * CHUNK, CHUNK, 3, source))
        assert isinstance(ready, UploadReady), ready
        return ready

    first = begin(b"v1" * 8)
    alice.send_chunk(alice.chunk_frames(first, 1, False, os.urandom(CHUNK)))
    assert begin(b"v1" * 8).transfer_id == first.transfer_id
    other = begin(b"v2" * 8)  # the file changed since: a new upload, nothing held
    assert other.transfer_id != first.transfer_id and other.stored == ()
    assert begin(b"v1" * 8).stored == (1,)  # the old one is still there, until it expires


def test_a_listed_file_carries_the_source_token_it_was_put_with(
    server: Server, alice: Client
) -> None:
    alice.upload("tokened", b"one version", CHUNK, source=b"v1" * 8)
    alice.upload("plain", b"no token", CHUNK)
    listed = alice.ask(ListFiles())
    assert isinstance(listed, FileList)
    assert {info.name: info.source for info in listed.files} == {
        "plain": b"",
        "tokened": b"v1" * 8,
    }
    alice.upload("tokened", b"another one", CHUNK, source=b"v2" * 8)  # replaced: its token
    assert cast(FileList, alice.ask(ListFiles("plain"))).files[0].source == b"v2" * 8


def test_resend_discards_and_a_new_upload_replaces_the_old_file(
    server: Server, alice: Client
) -> None:
    alice.upload("doc", b"version one", CHUNK)
    old = server.store.get_file(alice.client_id, "doc")
    ready = alice.begin("doc", b"version two!", CHUNK)
    alice.send_chunk(alice.chunk_frames(ready, 0, True, b"version two!"))
    alice.ask(UploadCommit(ready.transfer_id))
    assert alice.ask(UploadConfirm(ready.transfer_id, Verdict.RESEND)) == UploadDone("doc", False)
    background.settle(REMOVAL, timeout=10)  # a discarded upload's file goes after the reply
    assert not (server.data.blobs_path / ready.transfer_id.hex()).exists()
    assert download(alice, "doc") == b"version one"
    alice.upload("doc", b"version two!", CHUNK)
    assert download(alice, "doc") == b"version two!"
    background.settle(REMOVAL, timeout=10)  # the replaced version goes after the reply
    assert old is not None and not (server.data.blobs_path / old.transfer_id.hex()).exists()


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a//b", "nul\x00", "x" * 256, "a\\b"])
def test_bad_file_names_are_refused(server: Server, alice: Client, name: str) -> None:
    before = snapshot(server)
    for msg in (
        UploadBegin("ok", 1, CHUNK, 1),
        DownloadBegin("ok"),
        DeleteFile("ok"),
        ListFiles("ok"),
        RenameFile("ok", "fine"),
        RenameFile("fine", "ok"),
    ):
        frames = alice.session_frames(msg)
        body = crypto.open_sealed(alice.session_keys.client_to_server, frames[1], frames[0])  # type: ignore[union-attr]
        bad = body.replace(b"\xa2ok", _pack(name))
        sealed = crypto.seal(alice.session_keys.client_to_server, bad, frames[0])  # type: ignore[union-attr]
        reply = alice.open_reply(server.call("file", [frames[0], sealed]), frames[0])
        assert error_code(reply) == "invalid-name"
    assert snapshot(server) == before


def _pack(text: str) -> bytes:
    packed: bytes = msgpack.packb(text)
    return packed


def test_clients_cannot_see_or_touch_each_others_files(
    server: Server, alice: Client, bob: Client
) -> None:
    alice.upload("secret", b"alice's data", CHUNK)
    ready = alice.begin("pending", b"z", CHUNK)
    before = snapshot(server)
    assert bob.ask(ListFiles()) == FileList(())
    assert error_code(bob.ask(DownloadBegin("secret"))) == "not-found"
    row = server.store.get_file(alice.client_id, "secret")
    assert row is not None
    assert error_code(bob.ask(DownloadChunk(row.transfer_id, 0))) == "not-found"
    assert error_code(bob.ask(UploadCommit(ready.transfer_id))) == "not-found"
    assert error_code(bob.ask(UploadConfirm(ready.transfer_id, Verdict.GIVE_UP))) == "not-found"
    assert bob.ask(DeleteFile("secret")) == Deleted("secret", False)
    forged = bob.chunk_frames(ready, 0, True, b"z")  # bob does not have alice's data key
    assert error_code(bob.send_chunk(forged)) == "not-found"
    after = snapshot(server)
    # Only bob's own delete left a trace: its recorded reply.
    new_rows = [row for row in after[0] if row not in before[0]]
    assert after[1] == before[1] and all('INSERT INTO "replies"' in r for r in new_rows)
    assert len(new_rows) == 1
    assert download(alice, "secret") == b"alice's data"
    assert alice.ask(DeleteFile("secret")) == Deleted("secret", True)
    assert error_code(alice.ask(DownloadBegin("secret"))) == "not-found"
    assert not (server.data.blobs_path / row.transfer_id.hex()).exists()


def test_the_listing_comes_in_pages_in_code_point_order(
    server: Server, alice: Client, bob: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "LIST_PAGE", 2)
    names = ["b", "a/x", "Zebra", "\u00e9t\u00e9", "a", "\U0001f600"]
    for name in names:
        alice.upload(name, name.encode(), CHUNK)
    bob.upload("bob's", b"b", CHUNK)
    before = snapshot(server)
    pages = []
    after = ""
    while True:
        page = alice.ask(ListFiles(after))
        assert isinstance(page, FileList)
        pages.append([info.name for info in page.files])
        if not page.more:
            break
        after = page.files[-1].name
    assert pages == [["Zebra", "a"], ["a/x", "b"], ["\u00e9t\u00e9", "\U0001f600"]]
    assert sorted(names) == [name for page in pages for name in page]
    # The client's loop gathers the same, and a start past every name gives an empty page.
    gathered = all_pages(lambda start: cast(FileList, alice.ask(ListFiles(start))))
    assert [info.name for info in gathered] == sorted(names)
    assert alice.ask(ListFiles("\U0001f600")) == FileList((), more=False)
    assert snapshot(server) == before


def test_a_session_of_another_client_is_unknown(server: Server, alice: Client, bob: Client) -> None:
    bob.session_id, bob.session_keys = alice.session_id, alice.session_keys
    reply = bob.server.call("file", bob.session_frames(ListFiles()))
    assert decode_body(MessageType.ERROR_REPLY, reply[1]) == ErrorReply(
        ErrorCode.UNKNOWN_SESSION, "no such session for this client"
    )


def test_an_expired_session_is_refused_in_plain(server: Server, alice: Client) -> None:
    assert isinstance(alice.ask(ListFiles()), FileList)
    server.now += 600_000
    frames = server.call("file", alice.session_frames(ListFiles()))
    env = decode_envelope(frames[0])
    assert env.flags == 0 and decode_body(env.type, frames[1]).code == "session-expired"  # type: ignore[union-attr]
    alice.connect()
    assert isinstance(alice.ask(ListFiles()), FileList)


def test_a_stolen_data_dir_reveals_no_key_and_no_content(server: Server, alice: Client) -> None:
    plaintext = b"THE-KNOWN-PLAINTEXT-" * 300
    digest = hashlib.sha256(plaintext).digest()
    alice.upload("stolen.txt", plaintext, CHUNK, sha256=digest)
    ready = alice.ask(DownloadBegin("stolen.txt"))
    assert isinstance(ready, DownloadReady) and ready.sha256 == digest
    secrets_to_find = {
        "plaintext": b"THE-KNOWN-PLAINTEXT-",
        "session key": alice.session_key,
        "session subkey": alice.session_keys.server_to_client,  # type: ignore[union-attr]
        "data key": ready.data_key,
        "the file's SHA-256 (it would confirm a guess of the contents)": digest,
    }

    def exposed() -> list[Path]:
        return [
            p
            for p in server.data.path.rglob("*")
            if p.is_file() and p.name not in ("master.key", "server_key.pem")
        ]

    # Search with the recent pages still in the WAL, then again once they reach the db file.
    for checkpoint in (False, True):
        if checkpoint:
            server.store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = exposed()
        assert {"cipherdrop.db", ready.transfer_id.hex()} <= {p.name for p in files}
        for path in files:
            content = path.read_bytes()
            for what, needle in secrets_to_find.items():
                assert needle not in content, f"{what} found in {path.name}"


ANY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@ANY
@given(frames=st.lists(st.binary(max_size=300), max_size=4))
def test_arbitrary_frames_get_an_error_reply_and_change_nothing(
    server: Server, frames: list[bytes]
) -> None:
    before = snapshot(server)
    for service in ("register", "key", "file"):
        reply = server.call(service, frames)
        env = decode_envelope(reply[0])
        assert env.type == MessageType.ERROR_REPLY and env.flags == 0
        assert isinstance(decode_body(env.type, reply[1]), ErrorReply)
    assert snapshot(server) == before


@ANY
@given(
    msg_type=st.sampled_from([t for t in MessageType if t < 0x80]),
    flags=st.sampled_from([Flags(0), Flags.SEALED_TO_SERVER, Flags.SESSION]),
    codec=st.sampled_from(list(Codec)),
    payload=st.binary(max_size=600),
)
def test_valid_envelopes_with_arbitrary_payloads_change_nothing(
    server: Server,
    alice: Client,
    msg_type: MessageType,
    flags: Flags,
    codec: Codec,
    payload: bytes,
) -> None:
    session = flags == Flags.SESSION
    env = envelope(
        msg_type,
        flags=flags,
        client_id=alice.client_id if session else b"",
        key_id=alice.session_id if session else b"",
        codec=codec,
        stream=StreamPosition(b"t" * 16, 0, True) if carries_data(msg_type) else None,
    )
    before = snapshot(server)
    for service in ("register", "key", "file"):
        reply = server.call(service, [env, payload])
        reply_env = decode_envelope(reply[0])
        assert reply_env.request_id == decode_envelope(env).request_id
        if reply_env.type == MessageType.SERVER_KEY:  # the one request with no secret at all
            continue
        assert reply_env.type == MessageType.ERROR_REPLY, reply_env
    assert snapshot(server) == before


def test_chunks_stored_as_asked_are_logged_at_debug_and_the_rest_at_info(
    server: Server, alice: Client
) -> None:
    data = os.urandom(CHUNK)
    ready = alice.begin("quiet", data, CHUNK)
    good = alice.chunk_frames(ready, 0, True, data)
    assert server.file.handle(good, server.now).level == "debug"
    wrong = alice.chunk_frames(ready, 0, False, data)  # not final: refused
    refused = server.file.handle(wrong, server.now)
    assert (refused.outcome, refused.level) == ("conflict", "info")
    commit = alice.session_frames(UploadCommit(ready.transfer_id))
    assert server.file.handle(commit, server.now).level == "info"


def test_requests_to_run_inline_are_told_apart_from_their_first_bytes(
    server: Server, alice: Client
) -> None:
    data = os.urandom(CHUNK)
    ready = alice.begin("inline", data, CHUNK)
    upload_chunk = alice.chunk_frames(ready, 0, True, data)
    download_chunk = alice.session_frames(DownloadChunk(ready.transfer_id, 0))
    short = [
        upload_chunk,
        download_chunk,
        alice.session_frames(UploadBegin("inline", CHUNK, CHUNK, 1)),
        alice.session_frames(UploadConfirm(ready.transfer_id, Verdict.OK)),
        alice.session_frames(DownloadBegin("inline")),
    ]
    assert all(server.file.runs_inline(frames) for frames in short)
    # zmq.Frame bodies, as the worker loop receives them
    assert server.file.runs_inline([zmq.Frame(f) for f in download_chunk])
    # a commit syncs the whole file; a listing may be long: the handler thread takes them
    for other in (UploadCommit(ready.transfer_id), ListFiles(), DeleteFile("inline")):
        assert not server.file.runs_inline(alice.session_frames(other))
    # a service that takes none of these hands nothing to the I/O thread
    assert not server.register.runs_inline(upload_chunk)
    assert not server.key.runs_inline(download_chunk)
    assert not server.file.runs_inline(upload_chunk[:1])
    assert not server.file.runs_inline([*upload_chunk, b""])


# The envelope's first bytes (docs/protocol.md section 2): msgpack array of 8, version, type.
INLINE_HEADS = [bytes((0x98, 1, kind)) for kind in (0x10, 0x11, 0x13, 0x30, 0x31)]
HEAD_LIKE = st.sampled_from([*INLINE_HEADS, b"\x98\x01\x12", b"\x98\x02\x11", b"\x97\x01\x11"])
FRAME = st.one_of(
    st.binary(max_size=40), st.tuples(HEAD_LIKE, st.binary(max_size=20)).map(b"".join)
)


@ANY
@given(frames=st.lists(FRAME, max_size=3))
def test_telling_inline_requests_apart_never_raises(server: Server, frames: list[bytes]) -> None:
    expected = len(frames) == 2 and frames[0][:3] in INLINE_HEADS
    assert server.file.runs_inline(frames) is expected
    assert server.file.runs_inline([zmq.Frame(f) for f in frames]) is expected


# --- a full disk ------------------------------------------------------------------------------


def test_an_upload_that_would_leave_too_little_free_space_is_refused(
    server: Server, alice: Client
) -> None:
    server.file = file_service(server.store, server.data, MAX_CHUNK, min_free_space=1 << 62)
    before = server.dump()
    assert error_code(alice.ask(UploadBegin("big", 10, CHUNK, 1))) == "no-space"
    assert server.dump() == before
    server.file = file_service(server.store, server.data, MAX_CHUNK)  # room again
    alice.upload("big", b"0123456789", CHUNK)


def test_a_chunk_that_finds_the_disk_full_is_refused_and_can_be_sent_again(
    server: Server, alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * CHUNK)
    ready = alice.begin("full", data, CHUNK)
    frames = alice.chunk_frames(ready, 0, False, data[:CHUNK])

    def disk_full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = server.dump()
    with monkeypatch.context() as patch:
        patch.setattr(blobs_module.os, "pwritev", disk_full)
        assert error_code(alice.send_chunk(frames)) == "no-space"
    assert server.dump() == before  # no chunk row: the chunk is not held
    assert alice.send_chunk(frames) == ChunkStored(ready.transfer_id, 0)


def test_a_full_database_is_refused_no_space_and_changes_nothing(
    server: Server, alice: Client
) -> None:
    # SQLite's own limit gives the error a full disk gives: SQLITE_FULL.
    pages = server.store._db.execute("PRAGMA page_count").fetchone()[0]
    server.store._db.execute(f"PRAGMA max_page_count = {pages}")
    for n in range(5000):  # new uploads until the pages it has are used up
        before = server.dump()
        reply = alice.ask(UploadBegin(f"n{n}", 1, CHUNK, 1))
        if isinstance(reply, ErrorReply):
            break
    else:
        pytest.fail("the database never filled up")
    assert reply.code == "no-space"
    assert server.dump() == before
    server.store._db.execute(f"PRAGMA max_page_count = {pages + 100}")  # room again
    assert isinstance(alice.ask(UploadBegin(f"n{n}", 1, CHUNK, 1)), UploadReady)


# --- a quota per client -----------------------------------------------------------------------


def with_quota(server: Server, quota: int) -> None:
    server.file = file_service(server.store, server.data, MAX_CHUNK, quota=quota)


def test_the_quota_counts_files_and_unfinished_uploads(
    server: Server, alice: Client, bob: Client
) -> None:
    with_quota(server, 100)
    alice.upload("kept", bytes(60), CHUNK)
    before = server.dump()
    refused = alice.ask(UploadBegin("more", 41, CHUNK, 1))
    assert error_code(refused) == "over-quota"
    assert isinstance(refused, ErrorReply) and "60 in use" in refused.message
    assert "quota of 100 bytes" in refused.message
    assert server.dump() == before
    alice.begin("half", bytes(40), CHUNK)  # fits exactly; unfinished, it still counts
    assert error_code(alice.ask(UploadBegin("one", 1, CHUNK, 1))) == "over-quota"
    bob.upload("bobs", bytes(100), CHUNK)  # another client's space is its own


def test_a_new_version_is_counted_without_the_file_it_replaces(
    server: Server, alice: Client
) -> None:
    with_quota(server, 100)
    alice.upload("doc", bytes(70), CHUNK)
    alice.upload("doc", bytes(range(90)), CHUNK)  # 70 + 90 > 100, but the 70 go on confirm
    assert error_code(alice.ask(UploadBegin("other", 11, CHUNK, 1))) == "over-quota"


def test_deleting_a_file_gives_its_bytes_back(server: Server, alice: Client) -> None:
    with_quota(server, 100)
    alice.upload("old", bytes(80), CHUNK)
    assert error_code(alice.ask(UploadBegin("new", 80, CHUNK, 1))) == "over-quota"
    assert alice.ask(DeleteFile("old")) == Deleted("old", True)
    alice.upload("new", bytes(80), CHUNK)


def test_a_resume_is_not_refused_by_a_lower_quota(server: Server, alice: Client) -> None:
    data = bytes(3 * CHUNK)
    ready = alice.begin("big", data, CHUNK)
    with_quota(server, CHUNK)  # lowered after the upload began
    again = alice.begin("big", data, CHUNK)
    assert again.transfer_id == ready.transfer_id


def own_quota(server: Server, client: Client, quota: int | None) -> None:
    """What ``cipherdrop-admin quota`` sets: the client's own quota, or None."""
    server.store._db.execute("UPDATE clients SET quota = ? WHERE id = ?", (quota, client.client_id))


def test_a_clients_own_quota_overrides_the_servers(
    server: Server, alice: Client, bob: Client
) -> None:
    with_quota(server, 100)
    own_quota(server, alice, 10)
    before = snapshot(server)
    refused = alice.ask(UploadBegin("eleven", 11, CHUNK, 1))
    assert error_code(refused) == "over-quota"
    assert isinstance(refused, ErrorReply) and "quota of 10 bytes" in refused.message
    assert snapshot(server) == before
    bob.upload("bobs", bytes(100), CHUNK)  # bob still has the server's 100
    own_quota(server, alice, 0)  # 0: no limit for alice, whatever the server's
    alice.upload("big", bytes(1000), CHUNK)
    own_quota(server, alice, None)  # the server's again: 1000 in use of 100
    assert error_code(alice.ask(UploadBegin("more", 1, CHUNK, 1))) == "over-quota"


def test_a_quota_of_zero_is_no_limit(server: Server, alice: Client) -> None:
    with_quota(server, 0)
    alice.upload("any", os.urandom(3 * CHUNK), CHUNK)


# --- unfinished uploads -----------------------------------------------------------------------


def test_unfinished_uploads_are_listed_with_the_bytes_held(
    server: Server, alice: Client, bob: Client
) -> None:
    alice.upload("done", b"finished", CHUNK)
    data = os.urandom(3 * CHUNK + 5)
    ready = alice.begin("half", data, CHUNK)
    alice.send_chunk(alice.chunk_frames(ready, 1, False, data[CHUNK : 2 * CHUNK]))
    empty = alice.begin("nothing yet", b"x", CHUNK)
    bob.begin("bob's", b"y", CHUNK)
    before = snapshot(server)
    listed = alice.ask(ListUploads())
    assert isinstance(listed, UploadList) and not listed.more
    by_name = {info.name: info for info in listed.uploads}
    assert set(by_name) == {"half", "nothing yet"}  # neither a file nor another's upload
    half = by_name["half"]
    assert (half.transfer_id, half.size, half.held) == (ready.transfer_id, len(data), CHUNK)
    assert (by_name["nothing yet"].transfer_id, by_name["nothing yet"].held) == (
        empty.transfer_id,
        0,
    )
    assert abs(half.began_at - server.now) < 60_000
    assert [info.transfer_id for info in listed.uploads] == sorted(
        by_name[n].transfer_id for n in by_name
    )
    assert snapshot(server) == before


def test_unfinished_uploads_come_in_pages(
    server: Server, alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_module, "LIST_PAGE", 2)
    ids = sorted(alice.begin(f"u{n}", b"z", CHUNK).transfer_id for n in range(5))
    first = alice.ask(ListUploads())
    assert isinstance(first, UploadList) and first.more
    assert [info.transfer_id for info in first.uploads] == ids[:2]
    gathered = unfinished_pages(lambda after: cast(UploadList, alice.ask(ListUploads(after))))
    assert [info.transfer_id for info in gathered] == ids
    assert alice.ask(ListUploads(ids[-1])) == UploadList((), more=False)


def test_a_listed_upload_given_up_is_gone_with_its_chunks(server: Server, alice: Client) -> None:
    data = os.urandom(2 * CHUNK)
    ready = alice.begin("abandoned", data, CHUNK)
    alice.send_chunk(alice.chunk_frames(ready, 0, False, data[:CHUNK]))
    assert (server.data.blobs_path / ready.transfer_id.hex()).exists()
    (info,) = cast(UploadList, alice.ask(ListUploads())).uploads
    assert alice.ask(UploadConfirm(info.transfer_id, Verdict.GIVE_UP)) == UploadDone(
        "abandoned", False
    )
    assert alice.ask(ListUploads()) == UploadList((), more=False)
    background.settle(REMOVAL, timeout=10)  # its file goes after the reply
    assert not (server.data.blobs_path / ready.transfer_id.hex()).exists()


@pytest.mark.parametrize("after", [bytes(15), bytes(17), "", None, 0, [b""]])
def test_a_bad_upload_listing_start_is_refused_and_changes_nothing(
    server: Server, alice: Client, after: object
) -> None:
    alice.begin("pending", b"p", CHUNK)
    before = snapshot(server)
    frames = alice.session_frames(ListUploads())
    keys = alice.session_keys
    assert keys is not None
    bad = msgpack.packb({"after": after}, use_bin_type=True)
    sealed = crypto.seal(keys.client_to_server, bad, frames[0])
    reply = alice.open_reply(server.call("file", [frames[0], sealed]), frames[0])
    assert error_code(reply) == "bad-request"
    assert isinstance(reply, ErrorReply) and "after" in reply.message
    assert snapshot(server) == before
    assert len(cast(UploadList, alice.ask(ListUploads())).uploads) == 1  # still serving


@pytest.mark.parametrize(
    ("verdict", "sha256"),
    [(0, bytes(31)), (0, bytes(33)), (0, "ab" * 32), (1, bytes(32)), (2, bytes(32))],
    ids=["short", "long", "text", "with-resend", "with-give-up"],
)
def test_a_bad_sha256_in_a_confirm_is_refused_and_changes_nothing(
    server: Server, alice: Client, verdict: int, sha256: object
) -> None:
    data = b"to be confirmed"
    ready = alice.begin("confirm-me", data, CHUNK)
    assert alice.send_chunk(alice.chunk_frames(ready, 0, True, data)) == ChunkStored(
        ready.transfer_id, 0
    )
    assert isinstance(alice.ask(UploadCommit(ready.transfer_id)), UploadCommitted)
    before = snapshot(server)
    frames = alice.session_frames(UploadConfirm(ready.transfer_id, Verdict.OK))
    keys = alice.session_keys
    assert keys is not None
    body = {"transfer_id": ready.transfer_id, "verdict": verdict, "sha256": sha256}
    sealed = crypto.seal(keys.client_to_server, msgpack.packb(body, use_bin_type=True), frames[0])
    reply = alice.open_reply(server.call("file", [frames[0], sealed]), frames[0])
    assert error_code(reply) == "bad-request"
    assert isinstance(reply, ErrorReply) and "sha256" in reply.message
    assert snapshot(server) == before
    digest = hashlib.sha256(data).digest()  # still serving: a good confirm records it
    assert alice.ask(UploadConfirm(ready.transfer_id, Verdict.OK, digest)) == UploadDone(
        "confirm-me", True
    )
    ready_again = alice.ask(DownloadBegin("confirm-me"))
    assert isinstance(ready_again, DownloadReady) and ready_again.sha256 == digest


# --- rename -------------------------------------------------------------------------------------


def test_a_renamed_file_keeps_its_contents_under_the_new_name(
    server: Server, alice: Client
) -> None:
    data = os.urandom(2 * CHUNK + 3)
    alice.upload("draft.txt", data, CHUNK)
    before = server.store.get_file(alice.client_id, "draft.txt")
    assert alice.ask(RenameFile("draft.txt", "final/report.txt")) == Renamed(
        "draft.txt", "final/report.txt", False
    )
    after = server.store.get_file(alice.client_id, "final/report.txt")
    assert before is not None and after is not None
    assert (after.transfer_id, after.crc, after.size) == (before.transfer_id, before.crc, len(data))
    assert download(alice, "final/report.txt") == data
    assert error_code(alice.ask(DownloadBegin("draft.txt"))) == "not-found"
    assert [info.name for info in cast(FileList, alice.ask(ListFiles())).files] == [
        "final/report.txt"
    ]


def test_renaming_onto_a_file_needs_replace(server: Server, alice: Client) -> None:
    alice.upload("new", b"the new one", CHUNK)
    alice.upload("old", b"the old one", CHUNK)
    old = server.store.get_file(alice.client_id, "old")
    assert old is not None and (server.data.blobs_path / old.transfer_id.hex()).exists()
    before = snapshot(server)
    refused = alice.ask(RenameFile("new", "old"))
    assert error_code(refused) == "conflict"
    assert snapshot(server) == before
    assert alice.ask(RenameFile("new", "old", replace=True)) == Renamed("new", "old", True)
    background.settle(REMOVAL, timeout=10)  # the replaced file's contents go after the reply
    assert not (server.data.blobs_path / old.transfer_id.hex()).exists()
    assert download(alice, "old") == b"the new one"
    assert [info.name for info in cast(FileList, alice.ask(ListFiles())).files] == ["old"]


def test_renaming_what_is_not_there_or_not_ones_own_changes_nothing(
    server: Server, alice: Client, bob: Client
) -> None:
    alice.upload("mine", b"alice's", CHUNK)
    before = snapshot(server)
    assert error_code(alice.ask(RenameFile("missing", "x"))) == "not-found"
    assert error_code(bob.ask(RenameFile("mine", "bobs"))) == "not-found"
    assert snapshot(server) == before
    assert alice.ask(RenameFile("mine", "mine")) == Renamed("mine", "mine", False)
    assert download(alice, "mine") == b"alice's"


def test_a_rename_sent_again_gets_the_same_answer(server: Server, alice: Client) -> None:
    alice.upload("a", b"A", CHUNK)
    request_id = os.urandom(16)
    first = alice.ask(RenameFile("a", "b"), request_id)
    state = snapshot(server)
    assert alice.ask(RenameFile("a", "b"), request_id) == first == Renamed("a", "b", False)
    assert snapshot(server) == state
    assert download(alice, "b") == b"A"
