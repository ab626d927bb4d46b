"""Download pieces without sockets: chunk replies, the part/state files, names to paths,
the listing, and the expiry of unfinished uploads on the server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import session as core
from client.download import _holds, _Writer, open_chunk_data
from client.listing import (
    all_pages,
    discard_upload,
    format_size,
    format_table,
    format_unfinished,
    to_json,
    unfinished_pages,
    unfinished_to_json,
)
from client.partial import STATE_SIZE, PartialDownload, part_paths
from client.progress import make_progress
from client.sources import download_targets, stored_below, tree_names, upload_sources
from common import crypto
from common.cksum import Cksum, cksum
from common.codec import encode_body
from common.errors import (
    FileAccessError,
    IntegrityError,
    RefusedError,
    RemoteProtocolError,
    StorageError,
)
from common.messages import (
    Codec,
    DownloadChunk,
    DownloadReady,
    ErrorCode,
    ErrorReply,
    FileInfo,
    FileList,
    MessageType,
    StreamPosition,
    UploadConfirm,
    UploadInfo,
    UploadList,
    Verdict,
)
from common.names import InvalidNameError
from workers.blobs import Blobs
from workers.files import REPLY_RETENTION, Expiry
from workers.protection import SessionKey, data_reply, reply_frames
from workers.store import ReplyRecord, Store, UploadRow

CHUNK = 1000
TRANSFER = bytes(range(16))
KEY = bytes(range(32, 64))
SESSION = core.Session(
    client_id=b"c" * 16,
    session_id=b"s" * 16,
    keys=crypto.derive_session_keys(b"k" * 32, b"s" * 16),
    expires_at=0,
)
SERVER_SIDE = SessionKey(SESSION.session_id, SESSION.client_id, SESSION.keys)


def ready(size: int = 2500, crc: int = 7) -> DownloadReady:
    count = max(1, -(-size // CHUNK))
    return DownloadReady(TRANSFER, KEY, size, CHUNK, count, crc)


def chunk_reply(
    index: int,
    plain: bytes,
    *,
    codec: Codec = Codec.NONE,
    stream: StreamPosition | None = None,
    info: DownloadReady | None = None,
) -> tuple[core.Outgoing, list[bytes]]:
    """A DownloadChunk request and the CHUNK_DATA reply a server would give."""
    info = info or ready()
    final = index == info.chunk_count - 1
    req = core.session_request(SESSION, DownloadChunk(TRANSFER, index))
    data = zlib.compress(plain) if codec is Codec.ZLIB else plain
    sealed = crypto.seal_chunk(KEY, index, final, data, core.chunk_aad(TRANSFER, codec))
    position = stream or StreamPosition(TRANSFER, index, final)
    return req, data_reply(SERVER_SIDE, req.request_id, position, codec, sealed)


# --- chunk replies ---------------------------------------------------------------------


def test_a_chunk_opens_and_decompresses() -> None:
    plain = b"abc" * 333 + b"d"
    req, reply = chunk_reply(1, plain, codec=Codec.ZLIB)
    assert open_chunk_data(SESSION, req, reply, ready(), 1) == plain


def test_a_chunk_opens_into_the_buffer_given_when_it_fits() -> None:
    plain = os.urandom(CHUNK)
    req, reply = chunk_reply(0, plain)
    out = bytearray(CHUNK)
    opened = open_chunk_data(SESSION, req, reply, ready(), 0, out)
    assert opened == plain and out == plain
    assert isinstance(opened, memoryview) and opened.obj is out
    small = bytearray(CHUNK - 1)
    req, reply = chunk_reply(0, plain)
    assert open_chunk_data(SESSION, req, reply, ready(), 0, small) == plain
    assert small == bytearray(CHUNK - 1)  # too small: left alone, a new buffer used


@pytest.mark.parametrize("helper", [True, False])
def test_the_writer_reuses_a_buffer_only_once_it_is_written(tmp_path: Path, helper: bool) -> None:
    """On its own thread or (helper false, as for a file of one chunk) on the caller's."""
    info = ready(size=6 * CHUNK)
    partial = PartialDownload(tmp_path / "file", info)
    fd = partial.open_part(0)
    crc = Cksum()
    progress = make_progress(0, "", quiet=True)
    writer = _Writer(fd, partial, crc, progress, every=100, window=2, helper=helper)
    assert (writer.thread is not None) is helper
    seen: list[bytearray] = []
    for index in range(info.chunk_count):
        buffer = writer.spare(CHUNK)
        buffer[:] = bytes([index + 1]) * CHUNK  # what opening chunk ``index`` writes
        writer.put(index, memoryview(buffer), buffer)
        if all(buffer is not other for other in seen):
            seen.append(buffer)
    writer.finish()
    writer.check()
    expected = b"".join(bytes([index + 1]) * CHUNK for index in range(info.chunk_count))
    assert os.pread(fd, len(expected) + 1, 0) == expected
    assert (crc.length, crc.digest()) == (len(expected), cksum(expected))
    assert len(seen) <= 2 + 2  # window + the one being written + the one being opened
    os.close(fd)
    partial.close()


def test_after_a_write_error_the_writer_still_hands_buffers_back(tmp_path: Path) -> None:
    info = ready(size=6 * CHUNK)
    partial = PartialDownload(tmp_path / "file", info)
    os.close(partial.open_part(0))
    fd = os.open(partial.part, os.O_RDONLY)  # every write fails
    writer = _Writer(fd, partial, Cksum(), make_progress(0, "", quiet=True), every=100, window=1)
    for index in range(info.chunk_count):  # twice as many chunks as buffers
        buffer = writer.spare(CHUNK)
        writer.queue.put((index, memoryview(buffer), buffer))  # put() would raise at once
    writer.finish()
    with pytest.raises(OSError):
        writer.check()
    assert partial.received == 0
    os.close(fd)
    partial.close()


def test_the_final_chunk_holds_the_remainder() -> None:
    req, reply = chunk_reply(2, b"x" * 500)
    assert open_chunk_data(SESSION, req, reply, ready(), 2) == b"x" * 500


def test_a_flipped_bit_is_an_integrity_error() -> None:
    req, reply = chunk_reply(0, os.urandom(CHUNK))
    payload = bytearray(reply[1])
    payload[40] ^= 1
    with pytest.raises(IntegrityError):
        open_chunk_data(SESSION, req, [reply[0], bytes(payload)], ready(), 0)


def test_a_chunk_of_another_index_is_refused() -> None:
    # The server answers with chunk 0 for a request of chunk 1: the stream says so...
    req, reply = chunk_reply(0, os.urandom(CHUNK))
    with pytest.raises(RemoteProtocolError, match="another position"):
        open_chunk_data(SESSION, req, reply, ready(), 1)
    # ...and if it lies in the stream too, the chunk's own AAD does not open.
    req, reply = chunk_reply(0, os.urandom(CHUNK), stream=StreamPosition(TRANSFER, 1, False))
    with pytest.raises(IntegrityError):
        open_chunk_data(SESSION, req, reply, ready(), 1)


def test_a_truncated_file_fails_because_the_last_chunk_is_not_final() -> None:
    # A server cuts a 3-chunk file to 2 chunks: chunk 1 was sealed as not final.
    short = ready(size=2000)
    req, reply = chunk_reply(1, b"y" * CHUNK, stream=StreamPosition(TRANSFER, 1, True))
    with pytest.raises(IntegrityError):
        open_chunk_data(SESSION, req, reply, short, 1)


def test_a_chunk_of_the_wrong_length_is_an_integrity_error() -> None:
    req, reply = chunk_reply(0, b"z" * (CHUNK - 1))
    with pytest.raises(IntegrityError, match="expected 1000"):
        open_chunk_data(SESSION, req, reply, ready(), 0)


def test_a_decompression_bomb_stops_at_the_chunk_size() -> None:
    req, reply = chunk_reply(0, b"\0" * (50 * CHUNK), codec=Codec.ZLIB)
    with pytest.raises(IntegrityError, match="decompress"):
        open_chunk_data(SESSION, req, reply, ready(), 0)


def test_an_error_reply_is_a_refusal() -> None:
    req = core.session_request(SESSION, DownloadChunk(TRANSFER, 0))
    body = encode_body(ErrorReply(ErrorCode.NOT_FOUND, "no such file or chunk"))
    reply = reply_frames(SERVER_SIDE, req.request_id, MessageType.ERROR_REPLY, body)
    with pytest.raises(RefusedError) as info:
        open_chunk_data(SESSION, req, reply, ready(), 0)
    assert info.value.code == "not-found"


def test_a_reply_to_another_request_is_refused() -> None:
    _, reply = chunk_reply(0, os.urandom(CHUNK))
    other = core.session_request(SESSION, DownloadChunk(TRANSFER, 0))
    with pytest.raises(RemoteProtocolError, match="another request"):
        open_chunk_data(SESSION, other, reply, ready(), 0)


def test_a_chunk_under_another_session_is_refused() -> None:
    req, reply = chunk_reply(0, os.urandom(CHUNK))
    stranger = SessionKey(b"t" * 16, SESSION.client_id, SESSION.keys)
    stream = StreamPosition(TRANSFER, 0, False)
    forged = data_reply(stranger, req.request_id, stream, Codec.NONE, reply[1])
    with pytest.raises(RemoteProtocolError, match="session"):
        open_chunk_data(SESSION, req, forged, ready(), 0)


# --- the part and state files ---------------------------------------------------------------


def test_part_files_sit_next_to_the_target_hidden(tmp_path: Path) -> None:
    part, state = part_paths(tmp_path / "report.pdf")
    assert part == tmp_path / ".report.pdf.cipherdrop-part"
    assert state == tmp_path / ".report.pdf.cipherdrop-state"


def saved(tmp_path: Path, received: int, part_size: int, info: DownloadReady) -> PartialDownload:
    partial = PartialDownload(tmp_path / "f", info)
    fd = partial.open_part(0)
    os.write(fd, b"p" * part_size)
    os.close(fd)
    partial.received = received
    partial.save()
    partial.close()
    return partial


def test_resume_from_the_recorded_chunk(tmp_path: Path) -> None:
    saved(tmp_path, 2, 2 * CHUNK, ready())
    assert PartialDownload(tmp_path / "f", ready()).resume_point() == 2
    assert (tmp_path / ".f.cipherdrop-part").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".f.cipherdrop-state").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "changed",
    [
        DownloadReady(bytes(16), KEY, 2500, CHUNK, 3, 7),  # another transfer
        DownloadReady(TRANSFER, KEY, 2500, CHUNK, 3, 8),  # another CRC
        DownloadReady(TRANSFER, KEY, 2600, CHUNK, 3, 7),  # another size
        DownloadReady(TRANSFER, KEY, 2500, 1250, 2, 7),  # another chunking
    ],
)
def test_no_resume_when_the_server_file_differs(tmp_path: Path, changed: DownloadReady) -> None:
    saved(tmp_path, 2, 2 * CHUNK, ready())
    assert PartialDownload(tmp_path / "f", changed).resume_point() == 0


def test_no_resume_when_the_part_file_is_short_or_the_state_is_junk(tmp_path: Path) -> None:
    partial = saved(tmp_path, 2, 2 * CHUNK - 1, ready())
    assert partial.resume_point() == 0
    partial.state.write_text("{not json")
    assert partial.resume_point() == 0
    partial.state.write_text(json.dumps({"version": 1, "received": True}))
    assert partial.resume_point() == 0
    partial.discard()
    assert not partial.part.exists() and not partial.state.exists()
    assert partial.resume_point() == 0


def test_saves_overwrite_one_fixed_size_record_in_place(tmp_path: Path) -> None:
    partial = saved(tmp_path, 1, 2 * CHUNK, ready())
    partial.state.write_bytes(b"x" * (2 * STATE_SIZE))  # a longer leftover: emptied first
    inode = partial.state.stat().st_ino
    for received in (1, 2):
        partial.received = received
        partial.save()
        assert partial.state.stat().st_size == STATE_SIZE
        assert PartialDownload(tmp_path / "f", ready()).resume_point() == received
    partial.close()
    assert partial.state.stat().st_ino == inode  # written in place, never renamed over
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".f.cipherdrop-part",
        ".f.cipherdrop-state",
    ]


def test_a_new_download_truncates_an_old_part_file(tmp_path: Path) -> None:
    partial = saved(tmp_path, 2, 2 * CHUNK, ready())
    os.close(partial.open_part(0))
    assert partial.part.stat().st_size == 0


# --- names and paths ------------------------------------------------------------------------


def test_put_r_keeps_relative_names(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "2024" / "may").mkdir(parents=True)
    (root / "empty").mkdir()
    for rel in ("a.jpg", "2024/b.jpg", "2024/may/c.jpg"):
        (root / rel).write_text(rel)
    single = tmp_path / "notes.txt"
    single.write_text("n")
    pairs = upload_sources([root, single], recursive=True)
    assert [name for _, name in pairs] == [
        "photos/a.jpg",
        "photos/2024/b.jpg",
        "photos/2024/may/c.jpg",
        "notes.txt",
    ]
    assert all(path.read_text() == name.removeprefix("photos/") for path, name in pairs[:3])


def test_put_refuses_directories_without_r_and_name_with_several(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "x").write_text("x")
    with pytest.raises(FileAccessError, match="-r"):
        upload_sources([tmp_path / "d"], recursive=False)
    with pytest.raises(FileAccessError, match="exactly one"):
        upload_sources([tmp_path / "x", tmp_path / "x"], recursive=False, name="y")
    with pytest.raises(FileAccessError, match="two files"):
        upload_sources([tmp_path / "x", tmp_path / "x"], recursive=False)
    with pytest.raises(InvalidNameError):
        upload_sources([tmp_path / "x"], recursive=False, name="../y")
    with pytest.raises(InvalidNameError, match="length 0"):  # given empty is not "not given"
        upload_sources([tmp_path / "x"], recursive=False, name="")


def test_an_unchanged_target_is_a_regular_file_of_the_same_size_and_crc(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 5)  # more than one read block
    same = tmp_path / "same"
    same.write_bytes(data)
    assert _holds(same, len(data), cksum(data))
    assert not _holds(same, len(data), cksum(data) ^ 1)
    assert _holds(same, len(data), cksum(data), hashlib.sha256(data).digest())
    assert not _holds(same, len(data), cksum(data), hashlib.sha256(b"other").digest())
    assert not _holds(same, len(data) + 1, cksum(data))
    (tmp_path / "link").symlink_to(same)
    assert not _holds(tmp_path / "link", len(data), cksum(data))  # never followed
    assert not _holds(tmp_path, 0, cksum(b""))
    assert not _holds(tmp_path / "missing", 0, cksum(b""))
    empty = tmp_path / "empty"
    empty.touch()
    assert _holds(empty, 0, cksum(b""))


def test_a_tree_is_the_name_and_what_is_stored_below_it() -> None:
    stored = ["photos", "photos/a.jpg", "photos/2024/b.jpg", "photos-old/c.jpg", "photosx", "z"]
    assert stored_below("photos", stored) == ["photos", "photos/2024/b.jpg", "photos/a.jpg"]
    assert stored_below("photos/2024", stored) == ["photos/2024/b.jpg"]
    assert stored_below("z", stored) == ["z"]
    assert stored_below("phot", stored) == []  # a prefix of a name is not a directory


def test_tree_names_drop_a_trailing_slash_and_are_checked() -> None:
    assert tree_names(["photos/", "a/b//", "c"]) == ["photos", "a/b", "c"]
    for bad in ("../x", "/", "a/../b", ""):
        with pytest.raises(InvalidNameError):
            tree_names([bad])


def test_get_targets(tmp_path: Path) -> None:
    assert download_targets(["a/b.txt"], None) == [("a/b.txt", Path("a") / "b.txt")]
    assert download_targets(["a/b.txt"], tmp_path) == [("a/b.txt", tmp_path / "a" / "b.txt")]
    assert download_targets(["a/b.txt"], tmp_path / "c.txt") == [("a/b.txt", tmp_path / "c.txt")]
    with pytest.raises(FileAccessError, match="not a directory"):
        download_targets(["x", "y"], tmp_path / "c.txt")
    with pytest.raises(InvalidNameError):
        download_targets(["../escape"], tmp_path)
    with pytest.raises(FileAccessError, match="'x' is given twice"):
        download_targets(["x", "y", "x"], tmp_path)


# --- the listing ----------------------------------------------------------------------------

FILES = (
    FileInfo("a.txt", 6, 1_700_000_000_000, True, 3015617425, None),
    FileInfo("big/five.bin", 5 * 2**30, 1_700_000_060_000, True, 1, b"\xab" * 32),
)


def test_sizes_read_like_ls_h() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 5 * 2**30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "5.0 GiB",
    ]


def test_table_has_one_line_per_file_and_the_total() -> None:
    lines = format_table(FILES).splitlines()
    assert lines[0].split()[0] == "NAME" and len(lines) == 4
    assert "2023-11-14 22:13:20" in lines[1] and "3015617425" in lines[1]
    assert "5.0 GiB" in lines[2] and "abababab" in lines[2]
    assert lines[3] == f"2 files, {format_size(FILES[0].size + FILES[1].size)} in all"
    assert format_table(FILES[:1]).splitlines()[-1] == "1 file, 6 B in all"
    assert format_table(()) == "no files"


def _paged(*pages: tuple[tuple[str, ...], bool]) -> tuple[list[str], object]:
    """Serve ``pages`` in turn to ``all_pages``; what it asked, and what it returned."""
    asked: list[str] = []
    queue = list(pages)

    def ask(after: str) -> FileList:
        asked.append(after)
        names, more = queue.pop(0)
        return FileList(tuple(dataclasses.replace(FILES[0], name=n) for n in names), more)

    try:
        result: object = [info.name for info in all_pages(ask)]
    except RemoteProtocolError as exc:
        result = exc
    return asked, result


def test_a_listing_asks_again_after_the_last_name_while_there_is_more() -> None:
    asked, names = _paged((("a", "b"), True), (("c",), True), ((), False))
    assert asked == ["", "b", "c"]
    assert names == ["a", "b", "c"]


@pytest.mark.parametrize(
    "pages",
    [
        ((("b", "a"), False),),  # out of order
        ((("a", "b"), True), (("b", "c"), False)),  # repeats the last name
        ((("a", "b"), True), (("a",), False)),  # goes back
        ((("a",), True), ((), True)),  # more promised, nothing given: would loop forever
    ],
)
def test_a_listing_that_does_not_move_forward_is_a_protocol_error(
    pages: tuple[tuple[tuple[str, ...], bool], ...],
) -> None:
    asked, result = _paged(*pages)
    assert isinstance(result, RemoteProtocolError)
    assert len(asked) == len(pages)


UNFINISHED = (
    UploadInfo(bytes([9]) * 16, "zeta.iso", 5 * 2**30, 2**30, 1_700_000_000_000),
    UploadInfo(bytes([1]) * 16, "alpha.bin", 3 * 2**20, 0, 1_700_000_060_000),
)


def test_unfinished_uploads_read_as_a_table_sorted_by_name() -> None:
    lines = format_unfinished(UNFINISHED).splitlines()
    assert lines[0].split() == ["NAME", "STORED", "SIZE", "BEGAN", "(UTC)", "UPLOAD"]
    alpha = ["alpha.bin", "0", "B", "3.0", "MiB", "2023-11-14", "22:14:20", "01010101"]
    assert lines[1].split() == alpha
    assert "1.0 GiB" in lines[2] and "5.0 GiB" in lines[2] and "09090909" in lines[2]
    assert lines[3] == "2 unfinished uploads, 1.0 GiB of 5.0 GiB stored"
    assert format_unfinished(()) == "no unfinished uploads"


def test_unfinished_uploads_in_json_keep_exact_values() -> None:
    records = json.loads(unfinished_to_json(UNFINISHED))
    assert records[0] == {
        "name": "zeta.iso",
        "size": 5 * 2**30,
        "stored": 2**30,
        "began_at": "2023-11-14T22:13:20Z",
        "began_at_ms": 1_700_000_000_000,
        "upload_id": "09" * 16,
    }


class _Refusing:
    """Stands in for an Account whose every call is refused with ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.calls: list[object] = []

    def call(self, msg: object, expect: object) -> object:
        self.calls.append(msg)
        raise RefusedError(self.code, "refused")


@pytest.mark.parametrize("code", ["not-found", "conflict"])
def test_discarding_an_upload_gone_since_it_was_listed_is_no_error(code: str) -> None:
    account = _Refusing(code)
    assert discard_upload(account, UNFINISHED[0]) is False  # type: ignore[arg-type]
    assert account.calls == [UploadConfirm(UNFINISHED[0].transfer_id, Verdict.GIVE_UP)]


def test_discarding_refused_for_another_reason_is_an_error() -> None:
    with pytest.raises(RefusedError):
        discard_upload(_Refusing("internal"), UNFINISHED[0])  # type: ignore[arg-type]


def _upload_pages(
    *pages: tuple[tuple[int, ...], bool],
) -> tuple[list[bytes], Callable[[bytes], UploadList]]:
    """What ``unfinished_pages`` asked, and an ``ask`` serving ``pages`` (ids as bytes)."""
    asked: list[bytes] = []
    queue = list(pages)

    def ask(after: bytes) -> UploadList:
        asked.append(after)
        ids, more = queue.pop(0)
        infos = (dataclasses.replace(UNFINISHED[0], transfer_id=bytes([i]) * 16) for i in ids)
        return UploadList(tuple(infos), more)

    return asked, ask


def test_an_upload_listing_asks_again_after_the_last_id() -> None:
    asked, ask = _upload_pages(((1, 2), True), ((3,), False))
    assert [info.transfer_id[0] for info in unfinished_pages(ask)] == [1, 2, 3]
    assert asked == [b"", bytes([2]) * 16]


@pytest.mark.parametrize(
    "pages",
    [
        (((2, 1), False),),  # out of order
        (((1, 2), True), ((2, 3), False)),  # repeats the last id
        (((1,), True), ((), True)),  # more promised, nothing given
    ],
)
def test_an_upload_listing_that_does_not_move_forward_is_a_protocol_error(
    pages: tuple[tuple[tuple[int, ...], bool], ...],
) -> None:
    asked, ask = _upload_pages(*pages)
    with pytest.raises(RemoteProtocolError, match="upload list"):
        unfinished_pages(ask)
    assert len(asked) == len(pages)


def test_json_keeps_exact_values() -> None:
    records = json.loads(to_json(FILES))
    assert records[1]["size"] == 5 * 2**30
    assert records[0]["uploaded_at"] == "2023-11-14T22:13:20Z"
    assert records[0]["sha256"] is None and records[1]["sha256"] == "ab" * 32


# --- expiry of unfinished uploads -----------------------------------------------------------

HOUR = 3_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "t.db", busy_timeout=1.0)
    yield opened
    opened.close()


def upload(store: Store, blobs: Blobs, tid: bytes, at: int) -> None:
    row = UploadRow(tid, b"c" * 16, f"n{tid[0]}", 1, 1, 1, b"wrapped key")
    store.create_upload(row, at, ReplyRecord(b"c" * 16, tid, b"d" * 16, b"r"))
    blobs.write(tid, 0, 0, b"sealed")


def test_expiry_discards_old_unfinished_uploads_and_their_blobs(
    store: Store, tmp_path: Path
) -> None:
    assert store.create_client(b"c" * 16, "alice", b"K", 0, ReplyRecord(b"", b"r" * 16, b"d", b"r"))
    blobs = Blobs(tmp_path / "blobs")
    blobs.root.mkdir()
    old, young = b"\x01" * 16, b"\x02" * 16
    upload(store, blobs, old, at=0)
    upload(store, blobs, young, at=23 * HOUR)
    expiry = Expiry(store, blobs, age=24 * HOUR, interval=HOUR)
    assert expiry.run(47 * HOUR - 1) == [old]
    assert store.get_upload(old) is None and not blobs.directory(old).exists()
    assert store.get_upload(young) is not None and blobs.directory(young).exists()
    # Within the interval nothing is checked, even though "young" is now old enough.
    assert expiry.run(47 * HOUR + 1000) == []
    assert expiry.run(48 * HOUR) == [young]
    assert not blobs.directory(young).exists()


def test_expiry_forgets_old_replies_and_a_busy_store_stops_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert store.create_client(b"c" * 16, "alice", b"K", 0, ReplyRecord(b"", b"r" * 16, b"d", b"r"))
    blobs = Blobs(tmp_path / "blobs")
    blobs.root.mkdir()
    old = b"\x01" * 16
    upload(store, blobs, old, at=0)
    expiry = Expiry(store, blobs, age=24 * HOUR, interval=HOUR)

    def busy(cutoff: int) -> int:
        raise StorageError("store is busy")

    monkeypatch.setattr(store, "prune_replies", busy)
    # The replies cannot be pruned this time; the expired upload still goes, blob and all.
    assert expiry.run(REPLY_RETENTION + 1) == [old]
    assert not blobs.directory(old).exists()
    assert store.find_reply(b"", b"r" * 16) is not None
    monkeypatch.undo()
    assert expiry.run(REPLY_RETENTION + HOUR + 1) == []
    assert store.find_reply(b"", b"r" * 16) is None
    assert store.find_reply(b"c" * 16, old) is None  # the upload's UploadBegin reply too
