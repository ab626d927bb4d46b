"""Unit tests of control bodies: every message round trips, every bad field is refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from common.codec import (
    InvalidNameError,
    chunk_count_for,
    decode_body,
    encode_body,
    error_code_for,
    key_request_signed_bytes,
    rekey_signed_bytes,
    session_granted_signed_bytes,
)
from common.errors import LocalProtocolError, RemoteProtocolError
from common.messages import (
    DATA_TYPES,
    PROTOCOL_VERSION,
    ChunkStored,
    Deleted,
    DeleteFile,
    DownloadBegin,
    DownloadChunk,
    DownloadReady,
    Envelope,
    ErrorCode,
    ErrorReply,
    FileInfo,
    FileList,
    Flags,
    KeyRequest,
    LegacyKeyRequest,
    LegacyRegistered,
    LegacyRegisterRequest,
    LegacySessionGranted,
    ListFiles,
    ListUploads,
    Message,
    MessageType,
    Registered,
    RegisterRequest,
    Rekeyed,
    RekeyRequest,
    Renamed,
    RenameFile,
    ServerKey,
    ServerKeyRequest,
    SessionGranted,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadInfo,
    UploadList,
    UploadReady,
    Verdict,
    carries_data,
    message_class,
    reply_type,
    type_of,
)
from common.names import validate_client_name, validate_file_name

ID = bytes(range(16))
ID2 = bytes(range(16, 32))
DATA_KEY = bytes(range(0x50, 0x70))
EPHEMERAL = bytes(range(0x80, 0xA0))  # an X25519 public key's 32 bytes


def pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def wire(msg: Message) -> dict[str, Any]:
    """The decoded msgpack map of a valid body, to corrupt one key at a time."""
    raw: dict[str, Any] = msgpack.unpackb(encode_body(msg), raw=False)
    return raw


# --- message catalogue -------------------------------------------------------------------

FILE = FileInfo("dir/notes.txt", 12, 1_700_000_000_000, True, 3733384285, bytes(32), bytes(16))
UNFINISHED = UploadInfo(ID, "big.iso", 5 * 2**30, 2**30, 1_700_000_000_000)
VALID: list[Message] = [
    RegisterRequest("alice", b"\x30" * 294),
    RegisterRequest("alice", b"\x30" * 2048),
    RegisterRequest("invited", b"\x30" * 294, bytes(range(16))),
    Registered(ID),
    ServerKeyRequest(),
    ServerKey(b"\x30" * 294),
    ServerKey(b"\x30" * 2048),
    ServerKey(b"\x30" * 294, b"\x31" * 294, b"\x01" * 384),  # after a change of key
    KeyRequest(ID, "alice", b"\x30" * 420, 1_700_000_000_000, ID2, EPHEMERAL, b"\x01" * 384),
    SessionGranted(ID, b"\x02" * 384, 1_700_000_360_000, EPHEMERAL, b"\x03" * 384),
    RekeyRequest(
        ID,
        "alice",
        b"\x30" * 420,
        b"\x31" * 550,
        1_700_000_000_000,
        ID2,
        b"\x01" * 384,
        b"\x02" * 512,
    ),
    Rekeyed(0),
    Rekeyed(2**63 - 1),
    UploadBegin("big.iso", 5 * 2**30, 2**20, 5 * 2**10),
    UploadBegin("empty", 0, 2**20, 1),
    UploadBegin("resumable", 3, 2**20, 1, bytes(16)),
    UploadBegin("longest token", 3, 2**20, 1, bytes(32)),
    UploadReady(ID, DATA_KEY, ()),
    UploadReady(ID, DATA_KEY, (0, 1, 7, 2**63 - 1)),
    ChunkStored(ID, 2**40),
    UploadCommit(ID),
    UploadCommitted(ID, 2**63 - 1, 2**32 - 1),
    UploadConfirm(ID, Verdict.RESEND),
    UploadConfirm(ID, Verdict.OK),
    UploadConfirm(ID, Verdict.OK, bytes(range(32))),
    UploadDone("big.iso", False),
    ListFiles(),
    ListFiles("photos/2024/beach.jpg"),
    FileList(()),
    FileList((FILE, dataclasses.replace(FILE, name="b", sha256=None, verified=False))),
    FileList((FILE,), more=True),
    ListUploads(),
    ListUploads(ID),
    UploadList(()),
    UploadList((UNFINISHED, dataclasses.replace(UNFINISHED, transfer_id=ID2, held=0)), True),
    DownloadBegin("dir/notes.txt"),
    DownloadReady(ID, DATA_KEY, 3 * 2**20 + 1, 2**20, 4, 0),
    DownloadReady(ID, DATA_KEY, 3 * 2**20 + 1, 2**20, 4, 0, bytes(range(32))),
    DownloadChunk(ID, 3),
    DeleteFile("x"),
    Deleted("x", True),
    RenameFile("draft.txt", "final/report.txt"),
    RenameFile("a", "b", replace=True),
    Renamed("draft.txt", "final/report.txt", False),
    ErrorReply(ErrorCode.NAME_TAKEN, "the name 'alice' is taken"),
    LegacyRegisterRequest(b"\x30" * 294, "alice", 1_700_000_000_000, ID2, b"\x01" * 384),
    LegacyRegistered(ID),
    LegacyKeyRequest(
        b"\x30" * 294, ID, "alice", b"\x30" * 160, 1_700_000_000_000, ID2, b"\x01" * 384
    ),
    LegacySessionGranted(ID, b"\x30" * 160, ID2, b"\x02" * 384, 1_700_000_360_000, b"\x03" * 384),
]


@pytest.mark.parametrize("msg", VALID, ids=lambda m: type(m).__name__)
def test_body_round_trip(msg: Message) -> None:
    data = encode_body(msg)
    decoded = decode_body(type_of(msg), data)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert encode_body(decoded) == data
    assert decode_body(type_of(msg), memoryview(data)) == msg


def test_every_control_type_has_a_tested_message() -> None:
    tested = {type_of(m) for m in VALID}
    assert tested == {t for t in MessageType if not carries_data(t)}


def test_data_types_have_no_body() -> None:
    assert {MessageType.UPLOAD_CHUNK, MessageType.CHUNK_DATA} == DATA_TYPES
    for msg_type in DATA_TYPES:
        assert message_class(msg_type) is None
        with pytest.raises(RemoteProtocolError, match="no body"):
            decode_body(msg_type, pack({}))


def test_reply_types() -> None:
    assert reply_type(MessageType.DOWNLOAD_CHUNK) is MessageType.CHUNK_DATA
    assert reply_type(MessageType.SERVER_KEY_REQUEST) is MessageType.SERVER_KEY
    assert reply_type(MessageType.UPLOAD_CHUNK) is MessageType.CHUNK_STORED
    for request in (t for t in MessageType if t < 0x80):
        assert reply_type(request) in MessageType
    with pytest.raises(LocalProtocolError):
        reply_type(MessageType.REGISTERED)


U63_BAD: list[object] = [-1, 2**63, 2**64 - 1, True, 1.5, "1", None, b"\x01"]
ID_BAD: list[object] = [b"", bytes(15), bytes(17), "a" * 16, 16, None, [0] * 16]
FILE_NAME_BAD: list[object] = [
    *["", "a" * 256, "../x", "x/..", "/abs", "a//b", "a/./b", "dir/", ".", ".."],
    *["nul\x00", "tab\there", "new\nline", "back\\slash", " lead", "trail ", "a /b"],
    *["\u202eevil", "del\x7f", "c1\x85", "\u2028", b"name", 3, None],
]
CLIENT_NAME_BAD: list[object] = [
    "",
    "a" * 256,
    "a/b",
    "a\\b",
    "bell\x07",
    " x",
    "x ",
    "\u2066x",
    b"x",
    1,
]
BOOL_BAD: list[object] = [0, 1, None, "true"]
CRC_BAD: list[object] = [-1, 2**32, True, None]
SIG_BAD: list[object] = [b"", bytes(1025), "sig", None]
PUBLIC_KEY_BAD: list[object] = [b"", bytes(2049), "key", None, 0x30]
EPHEMERAL_BAD: list[object] = [b"", bytes(31), bytes(33), "e" * 32, None, 32]
# The per-upload AES-256 key: exactly 32 bytes, as bin.
DATA_KEY_BAD: list[object] = [b"", bytes(1), bytes(31), bytes(33), bytes(64), "k" * 32, None, 32]

# A whole file's SHA-256: nil, or exactly 32 bytes as bin.
SHA256_BAD: list[object] = [b"", bytes(31), bytes(33), "00" * 32, 5]

BAD_FIELDS: dict[type, dict[str, list[object]]] = {
    RegisterRequest: {
        "name": CLIENT_NAME_BAD,
        "public_key": PUBLIC_KEY_BAD,
        "invite": [bytes(33), "code", None, 0],
    },
    Registered: {"client_id": ID_BAD},
    ServerKey: {
        "public_key": PUBLIC_KEY_BAD,
        "previous_key": [bytes(2049), "key", None, 0x30],
        "endorsement": [bytes(1025), "sig", None],
    },
    KeyRequest: {
        "client_id": ID_BAD,
        "name": CLIENT_NAME_BAD,
        "public_key": PUBLIC_KEY_BAD,
        "timestamp": U63_BAD,
        "nonce": ID_BAD,
        "ephemeral": EPHEMERAL_BAD,
        "signature": SIG_BAD,
    },
    RekeyRequest: {
        "client_id": ID_BAD,
        "name": CLIENT_NAME_BAD,
        "public_key": PUBLIC_KEY_BAD,
        "new_public_key": PUBLIC_KEY_BAD,
        "timestamp": U63_BAD,
        "nonce": ID_BAD,
        "signature": SIG_BAD,
        "new_signature": SIG_BAD,
    },
    Rekeyed: {"sessions_ended": U63_BAD},
    SessionGranted: {
        "session_id": ID_BAD,
        "wrapped_key": [b"", bytes(1025), None],
        "expires_at": U63_BAD,
        "ephemeral": EPHEMERAL_BAD,
        "signature": SIG_BAD,
    },
    UploadBegin: {
        "name": FILE_NAME_BAD,
        "size": U63_BAD,
        "chunk_size": [0, 64 * 2**20 + 1, *U63_BAD],
        "chunk_count": [0, 5 * 2**10 + 1, 5 * 2**10 - 1, *U63_BAD],
        "source": [bytes(33), "token", None, 0],
    },
    UploadReady: {
        "transfer_id": ID_BAD,
        "data_key": DATA_KEY_BAD,
        "stored": [[1, 0], [1, 1], [-1], [True], [None], "x", {"0": 1}, [0, 2**63], None],
    },
    ChunkStored: {"transfer_id": ID_BAD, "index": U63_BAD},
    UploadCommit: {"transfer_id": ID_BAD},
    UploadCommitted: {"transfer_id": ID_BAD, "size": U63_BAD, "crc": CRC_BAD},
    UploadConfirm: {
        "transfer_id": ID_BAD,
        "verdict": [3, -1, True, "ok", None],
        "sha256": [*SHA256_BAD, bytes(32)],  # the first valid one is RESEND: no SHA-256 then
    },
    UploadDone: {"name": FILE_NAME_BAD, "verified": BOOL_BAD},
    ListFiles: {"after": [name for name in FILE_NAME_BAD if name != ""]},
    FileList: {
        "more": BOOL_BAD,
        "files": [
            None,
            "x",
            [None],
            [[]],
            [{"name": "x"}],
            [{**wire(FileList((FILE,)))["files"][0], "size": -1}],
            [{**wire(FileList((FILE,)))["files"][0], "sha256": bytes(31)}],
            [{**wire(FileList((FILE,)))["files"][0], "crc": 2**32}],
            [{**wire(FileList((FILE,)))["files"][0], "name": "../x"}],
            [{**wire(FileList((FILE,)))["files"][0], "verified": 1}],
            [{**wire(FileList((FILE,)))["files"][0], "uploaded_at": -5}],
            [{**wire(FileList((FILE,)))["files"][0], "source": bytes(33)}],
            [{**wire(FileList((FILE,)))["files"][0], "source": None}],
        ],
    },
    ListUploads: {"after": [bytes(15), bytes(17), "", None, 0]},
    UploadList: {
        "more": BOOL_BAD,
        "uploads": [
            None,
            [None],
            [{"name": "x"}],
            [{**wire(UploadList((UNFINISHED,)))["uploads"][0], "transfer_id": bytes(15)}],
            [{**wire(UploadList((UNFINISHED,)))["uploads"][0], "name": "../x"}],
            [{**wire(UploadList((UNFINISHED,)))["uploads"][0], "size": -1}],
            [{**wire(UploadList((UNFINISHED,)))["uploads"][0], "held": 2**63}],
            [{**wire(UploadList((UNFINISHED,)))["uploads"][0], "began_at": "now"}],
        ],
    },
    DownloadBegin: {"name": FILE_NAME_BAD},
    DownloadReady: {
        "transfer_id": ID_BAD,
        "data_key": DATA_KEY_BAD,
        "size": [2**30, *U63_BAD],  # 2**30 would need 1024 chunks, not 4
        "chunk_size": [0, 2**20 + 1, *U63_BAD],
        "chunk_count": [0, 3, 5, *U63_BAD],
        "crc": CRC_BAD,
        "sha256": SHA256_BAD,
    },
    DownloadChunk: {"transfer_id": ID_BAD, "index": U63_BAD},
    DeleteFile: {"name": FILE_NAME_BAD},
    Deleted: {"name": FILE_NAME_BAD, "existed": BOOL_BAD},
    RenameFile: {"name": FILE_NAME_BAD, "new_name": FILE_NAME_BAD, "replace": BOOL_BAD},
    Renamed: {"name": FILE_NAME_BAD, "new_name": FILE_NAME_BAD, "replaced": BOOL_BAD},
    LegacyRegisterRequest: {
        "gateway_key": PUBLIC_KEY_BAD,
        "name": CLIENT_NAME_BAD,
        "timestamp": U63_BAD,
        "nonce": ID_BAD,
        "signature": SIG_BAD,
    },
    LegacyRegistered: {"client_id": ID_BAD},
    LegacyKeyRequest: {
        "gateway_key": PUBLIC_KEY_BAD,
        "client_id": [bytes(15), bytes(17), "a" * 16, 16, None],  # empty: reconnect by name
        "name": CLIENT_NAME_BAD,
        "public_key": [bytes(2049), "key", None, 0x30],  # empty: reconnect by name
        "timestamp": U63_BAD,
        "nonce": ID_BAD,
        "signature": SIG_BAD,
    },
    LegacySessionGranted: {
        "client_id": ID_BAD,
        "public_key": PUBLIC_KEY_BAD,
        "session_id": ID_BAD,
        "wrapped_key": [b"", bytes(1025), None],
        "expires_at": U63_BAD,
        "signature": SIG_BAD,
    },
    ErrorReply: {
        "code": ["no-such-code", "", 1, None, "NOT_FOUND"],
        "message": ["", "x" * 1025, "two\nlines", "nul\x00", b"bytes", 5],
    },
}
FIRST_OF_EACH = {type(m): m for m in reversed(VALID)}
BAD_CASES = [
    pytest.param(msg, name, bad, id=f"{type(msg).__name__}.{name}={bad!r:.20}")
    for cls, msg in FIRST_OF_EACH.items()
    if cls in BAD_FIELDS
    for name, bads in BAD_FIELDS[cls].items()
    for bad in bads
]


@pytest.mark.parametrize(("msg", "field", "bad"), BAD_CASES)
def test_decode_rejects_bad_field(msg: Message, field: str, bad: object) -> None:
    raw = wire(msg)
    raw[field] = bad
    # Oversize values already fail msgpack's own limits, before any field is looked at.
    with pytest.raises(RemoteProtocolError, match=f"{field}|exceeds max_"):
        decode_body(type_of(msg), pack(raw))


@pytest.mark.parametrize(("msg", "field", "bad"), BAD_CASES)
def test_encode_refuses_bad_field(msg: Message, field: str, bad: object) -> None:
    with pytest.raises(LocalProtocolError, match=field):
        encode_body(dataclasses.replace(msg, **{field: bad}))  # type: ignore[arg-type]


def test_bad_case_table_covers_every_field() -> None:
    for msg in VALID:
        if not dataclasses.fields(msg):  # ServerKeyRequest: nothing to corrupt
            continue
        names = {f.name for f in dataclasses.fields(msg)}
        assert set(BAD_FIELDS[type(msg)]) == names, type(msg).__name__


def test_error_codes_for_body_decode_failures() -> None:
    body = {"name": "../../etc/passwd", "size": 1, "chunk_size": 1, "chunk_count": 1, "source": b""}
    with pytest.raises(InvalidNameError) as name:
        decode_body(MessageType.UPLOAD_BEGIN, pack(body))
    assert error_code_for(name.value) is ErrorCode.INVALID_NAME
    files = {"files": [{**wire(FileList((FILE,)))["files"][0], "name": "a\x00b"}], "more": False}
    with pytest.raises(InvalidNameError):
        decode_body(MessageType.FILE_LIST, pack(files))
    with pytest.raises(InvalidNameError) as after:
        decode_body(MessageType.LIST_FILES, pack({"after": "../x"}))
    assert error_code_for(after.value) is ErrorCode.INVALID_NAME
    with pytest.raises(RemoteProtocolError) as other:
        decode_body(MessageType.UPLOAD_BEGIN, pack({**body, "name": "x", "size": -1}))
    assert error_code_for(other.value) is ErrorCode.BAD_REQUEST


def test_data_key_sits_after_transfer_id() -> None:
    assert list(wire(UploadReady(ID, DATA_KEY, (3,)))) == ["transfer_id", "data_key", "stored"]
    ready = DownloadReady(ID, DATA_KEY, 10, 4, 3, 7)
    assert list(wire(ready)) == [
        *("transfer_id", "data_key", "size"),
        *("chunk_size", "chunk_count", "crc", "sha256"),
    ]
    assert wire(ready)["data_key"] == DATA_KEY


@pytest.mark.parametrize(
    "msg",
    [
        UploadReady(ID, bytearray(DATA_KEY), ()),  # type: ignore[arg-type]
        DownloadReady(ID, memoryview(DATA_KEY), 0, 1, 1, 0),  # type: ignore[arg-type]
        ServerKey(bytearray(b"\x30" * 294)),  # type: ignore[arg-type]
    ],
    ids=["upload-ready-bytearray", "download-ready-memoryview", "server-key-bytearray"],
)
def test_encode_refuses_key_bytes_of_another_type(msg: Message) -> None:
    with pytest.raises(LocalProtocolError, match="key: expected bytes"):
        encode_body(msg)


@pytest.mark.parametrize("half", ["previous_key", "endorsement"])
def test_a_server_key_endorsement_comes_whole_or_not_at_all(half: str) -> None:
    whole = ServerKey(b"\x30" * 294, b"\x31" * 294, b"\x01" * 384)
    raw = wire(whole) | {half: b""}
    with pytest.raises(RemoteProtocolError, match="both set, or both empty"):
        decode_body(MessageType.SERVER_KEY, pack(raw))
    with pytest.raises(LocalProtocolError, match="both set, or both empty"):
        encode_body(dataclasses.replace(whole, **{half: b""}))


def test_server_key_request_is_the_empty_map() -> None:
    assert encode_body(ServerKeyRequest()) == b"\x80"
    with pytest.raises(RemoteProtocolError, match="unexpected"):
        decode_body(MessageType.SERVER_KEY_REQUEST, pack({"public_key": b"\x30"}))
    with pytest.raises(RemoteProtocolError, match="missing"):
        decode_body(MessageType.SERVER_KEY, b"\x80")
    with pytest.raises(RemoteProtocolError):
        decode_body(MessageType.SERVER_KEY_REQUEST, b"\x90")  # an empty array is not a map


@pytest.mark.parametrize("msg", VALID, ids=lambda m: type(m).__name__)
def test_decode_rejects_wrong_keys_and_shapes(msg: Message) -> None:
    raw = wire(msg)
    cases: list[object] = [{**raw, "extra": 1}, [*raw.values()], None, 5, {1: 2}]
    if raw:
        cases.append(dict(list(raw.items())[1:]))  # a key missing
    if len(raw) > 1:
        cases.append(dict(reversed(list(raw.items()))))  # keys out of order
        cases.append({k.encode(): v for k, v in raw.items()})  # bin keys
    for case in cases:
        with pytest.raises(RemoteProtocolError):
            decode_body(type_of(msg), pack(case))
    data = encode_body(msg)
    for broken in (data + b"\xc0", data[:-1], b"", data + data):
        if broken != data:
            with pytest.raises(RemoteProtocolError):
                decode_body(type_of(msg), broken)


def test_decode_rejects_ext_types_and_floats_in_any_field() -> None:
    msg = UploadBegin("x", 1, 1, 1)
    for field in ("name", "size", "chunk_size", "chunk_count"):
        for junk in (
            msgpack.ExtType(5, b"xx"),
            msgpack.ExtType(0, b""),
            msgpack.Timestamp(1),
            1.0,
            [1],
        ):
            raw = wire(msg)
            raw[field] = junk
            with pytest.raises(RemoteProtocolError):
                decode_body(MessageType.UPLOAD_BEGIN, pack(raw))


def test_decode_rejects_non_canonical_body() -> None:
    data = encode_body(ChunkStored(ID, 5))
    assert data.endswith(b"\xa5index\x05")
    longer = data[:-1] + b"\xcc\x05"
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_body(MessageType.CHUNK_STORED, longer)
    duplicate = b"\x83" + data[1:] + b"\xa5index\x05"
    with pytest.raises(RemoteProtocolError):
        decode_body(MessageType.CHUNK_STORED, duplicate)


def test_decode_body_rejects_unknown_type_and_lists_over_the_limit() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown"):
        decode_body(0x7E, pack({}))  # type: ignore[arg-type]
    too_many = pack({"transfer_id": ID, "data_key": DATA_KEY, "stored": list(range(100_001))})
    with pytest.raises(RemoteProtocolError):
        decode_body(MessageType.UPLOAD_READY, too_many)
    with pytest.raises(LocalProtocolError):
        encode_body(UploadReady(ID, DATA_KEY, tuple(range(100_001))))


def test_encode_body_refuses_non_messages() -> None:
    envelope = Envelope(PROTOCOL_VERSION, MessageType.DOWNLOAD_CHUNK, ID, ID2, ID, Flags.SESSION)
    for thing in (envelope, {"name": "x"}, None):
        with pytest.raises(LocalProtocolError):
            encode_body(thing)  # type: ignore[arg-type]


def test_error_code_accepts_plain_string_value() -> None:
    data = encode_body(ErrorReply("not-found", "gone"))  # type: ignore[arg-type]
    assert decode_body(MessageType.ERROR_REPLY, data).code is ErrorCode.NOT_FOUND  # type: ignore[union-attr]


def test_chunk_count_for() -> None:
    assert chunk_count_for(0, 10) == 1
    assert chunk_count_for(1, 10) == 1
    assert chunk_count_for(10, 10) == 1
    assert chunk_count_for(11, 10) == 2
    assert chunk_count_for(5 * 2**30, 2**20) == 5 * 2**10


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "notes.txt", "dir/sub/file", "..hidden", "a..b", "ünï cødé 📄", "x" * 255]
)
def test_valid_file_names(name: str) -> None:
    assert validate_file_name(name) == name


@pytest.mark.parametrize("name", FILE_NAME_BAD)
def test_invalid_file_names(name: object) -> None:
    with pytest.raises(RemoteProtocolError):
        validate_file_name(name)


@pytest.mark.parametrize("name", ["alice", "Bob Smith", "ζ-laptop", "a" * 255])
def test_valid_client_names(name: str) -> None:
    assert validate_client_name(name) == name


@pytest.mark.parametrize("name", CLIENT_NAME_BAD)
def test_invalid_client_names(name: object) -> None:
    with pytest.raises(RemoteProtocolError):
        validate_client_name(name)


# --- signed bytes ------------------------------------------------------------------------


def test_signed_bytes_cover_every_field_but_the_signature() -> None:
    req = next(m for m in VALID if isinstance(m, KeyRequest))
    base = key_request_signed_bytes(req)
    assert key_request_signed_bytes(dataclasses.replace(req, signature=b"\x09")) == base
    changes: list[dict[str, Any]] = [
        {"client_id": ID2},
        {"name": "bob"},
        {"public_key": b"\x31"},
        {"timestamp": 1},
        {"nonce": ID},
        {"ephemeral": bytes(32)},
    ]
    for change in changes:
        assert key_request_signed_bytes(dataclasses.replace(req, **change)) != base
    grant = next(m for m in VALID if isinstance(m, SessionGranted))
    signed = session_granted_signed_bytes(grant, ID2)
    assert session_granted_signed_bytes(grant, ID) != signed
    assert (
        session_granted_signed_bytes(dataclasses.replace(grant, signature=b"\x01"), ID2) == signed
    )
    grant_changes: list[dict[str, Any]] = [
        {"session_id": ID2},
        {"wrapped_key": b"\x05"},
        {"expires_at": 9},
        {"ephemeral": bytes(32)},
    ]
    for change in grant_changes:
        assert session_granted_signed_bytes(dataclasses.replace(grant, **change), ID2) != signed
    with pytest.raises(LocalProtocolError):
        session_granted_signed_bytes(grant, b"short")
    with pytest.raises(LocalProtocolError):
        key_request_signed_bytes(dataclasses.replace(req, name="a/b"))


def test_rekey_signed_bytes_cover_every_field_but_the_signatures() -> None:
    req = next(m for m in VALID if isinstance(m, RekeyRequest))
    base = rekey_signed_bytes(req)
    unsigned = dataclasses.replace(req, signature=b"\x09", new_signature=b"\x09")
    assert rekey_signed_bytes(unsigned) == base
    changes: list[dict[str, Any]] = [
        {"client_id": ID2},
        {"name": "bob"},
        {"public_key": b"\x32"},
        {"new_public_key": b"\x32"},
        {"timestamp": 1},
        {"nonce": ID},
    ]
    for change in changes:
        assert rekey_signed_bytes(dataclasses.replace(req, **change)) != base
    # The old and the new key swapped sign other bytes: a rekey cannot be turned around.
    swapped = dataclasses.replace(req, public_key=req.new_public_key, new_public_key=req.public_key)
    assert rekey_signed_bytes(swapped) != base
    # A context of its own: no other signature of the protocol passes for a rekey's.
    assert msgpack.unpackb(base)[0] == "cipherdrop/1 rekey"
    with pytest.raises(LocalProtocolError):
        rekey_signed_bytes(dataclasses.replace(req, new_public_key=b""))
