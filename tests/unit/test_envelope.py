"""Unit tests of the envelope frame: round trips, every rejected field, canonical form."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from common.codec import (
    UnsupportedVersionError,
    decode_envelope,
    encode_envelope,
    error_code_for,
    head,
    new_request_id,
)
from common.errors import LocalProtocolError, RemoteProtocolError
from common.messages import (
    PROTOCOL_VERSION,
    Codec,
    Envelope,
    ErrorCode,
    Flags,
    MessageType,
    RegisterRequest,
    StreamPosition,
)

ID = bytes(range(16))
ID2 = bytes(range(16, 32))


def pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


CHUNK_ENV = Envelope(
    PROTOCOL_VERSION,
    MessageType.UPLOAD_CHUNK,
    ID,
    ID2,
    ID,
    Flags.SESSION,
    Codec.ZLIB,
    StreamPosition(ID2, 2**63 - 1, True),
)
PLAIN_ENV = Envelope(PROTOCOL_VERSION, MessageType.REGISTER_REQUEST, b"", b"", ID)
SERVER_KEY_ENV = Envelope(PROTOCOL_VERSION, MessageType.SERVER_KEY_REQUEST, b"", b"", ID)
SEALED_REPLY_ENV = Envelope(
    PROTOCOL_VERSION, MessageType.SESSION_GRANTED, b"", b"", ID, Flags.SEALED_REPLY
)


@pytest.mark.parametrize(
    "env",
    [CHUNK_ENV, PLAIN_ENV, SERVER_KEY_ENV, SEALED_REPLY_ENV],
    ids=["chunk", "plain", "server-key", "sealed-reply"],
)
def test_envelope_round_trip(env: Envelope) -> None:
    data = encode_envelope(env)
    assert decode_envelope(data) == env
    assert decode_envelope(memoryview(data)) == env
    assert encode_envelope(decode_envelope(data)) == data


def items(env: Envelope = CHUNK_ENV) -> list[Any]:
    decoded: list[Any] = msgpack.unpackb(encode_envelope(env), raw=False)
    return decoded


BAD_ENVELOPE_ITEMS: list[tuple[str, int, object]] = [
    ("version 2", 0, 2),
    ("version 0", 0, 0),
    ("version huge", 0, 2**64 - 1),
    ("version negative", 0, -1),
    ("version bool", 0, True),
    ("version float", 0, 1.0),
    ("type unknown", 1, 0x7E),
    ("type bool", 1, True),
    ("type str", 1, "UPLOAD_CHUNK"),
    ("client_id short", 2, bytes(15)),
    ("client_id long", 2, bytes(17)),
    ("client_id str", 2, "a" * 16),
    ("client_id nil", 2, None),
    ("key_id short", 3, bytes(8)),
    ("key_id empty under SESSION", 3, b""),
    ("request_id empty", 4, b""),
    ("request_id short", 4, bytes(15)),
    ("flags unknown bit", 5, 0x2 | 0x8),
    ("flags two bits", 5, 0x3),
    ("flags none while key_id set", 5, 0),
    ("flags SEALED_REPLY while key_id set", 5, 0x4),
    ("flags above u32", 5, 2**32),
    ("flags bool", 5, True),
    ("codec unknown", 6, 2),
    ("codec bool", 6, False),
    ("codec negative", 6, -1),
    ("stream missing on a data type", 7, None),
    ("stream short", 7, [ID, 0]),
    ("stream map", 7, {"transfer_id": ID}),
    ("stream id short", 7, [bytes(15), 0, True]),
    ("stream index negative", 7, [ID, -1, True]),
    ("stream index 2**63", 7, [ID, 2**63, True]),
    ("stream index bool", 7, [ID, True, True]),
    ("stream final int", 7, [ID, 0, 1]),
    ("ext type", 6, msgpack.ExtType(1, b"\x01")),
    ("timestamp ext", 6, msgpack.Timestamp(0)),
]


@pytest.mark.parametrize(
    ("position", "value"),
    [(p, v) for _, p, v in BAD_ENVELOPE_ITEMS],
    ids=[n for n, _, _ in BAD_ENVELOPE_ITEMS],
)
def test_envelope_rejects_bad_field(position: int, value: object) -> None:
    raw = items()
    raw[position] = value
    with pytest.raises(RemoteProtocolError):
        decode_envelope(pack(raw))


def test_envelope_names_unsupported_version() -> None:
    raw = items()
    raw[0] = 2
    with pytest.raises(RemoteProtocolError, match="version 2"):
        decode_envelope(pack(raw))
    raw.append("a field a later version added")
    with pytest.raises(RemoteProtocolError, match="version 2"):
        decode_envelope(pack(raw))


def test_unsupported_version_maps_to_its_error_code() -> None:
    raw = items()
    raw[0] = 3
    with pytest.raises(UnsupportedVersionError) as version:
        decode_envelope(pack(raw))
    assert error_code_for(version.value) is ErrorCode.UNSUPPORTED_VERSION


def test_stream_only_on_data_types() -> None:
    raw = items(PLAIN_ENV)
    raw[7] = [ID, 0, True]
    with pytest.raises(RemoteProtocolError, match="stream"):
        decode_envelope(pack(raw))


@pytest.mark.parametrize("flags", [Flags(0), Flags.SEALED_TO_SERVER, Flags.SEALED_REPLY])
def test_key_id_only_with_the_session_flag(flags: Flags) -> None:
    raw = items(dataclasses.replace(PLAIN_ENV, flags=flags))
    raw[3] = ID2
    with pytest.raises(RemoteProtocolError, match="key_id"):
        decode_envelope(pack(raw))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x98",
        b"\xc1",
        pack({"version": 1}),
        pack(items()[:7]),
        pack([*items(), None]),
        pack(items()) + b"\x00",
        pack(items())[:-1],
        b"\x98\x01" + b"\xc0" * 7,
        b"\xdd\xff\xff\xff\xff",  # array32 declaring 4 billion elements
        b"\xc6\xff\xff\xff\xff",  # bin32 declaring 4 GiB
        b"\x91" * 5000,  # deep nesting
    ],
)
def test_envelope_rejects_malformed_msgpack(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_envelope(data)


def test_envelope_rejects_non_canonical_encodings() -> None:
    canonical = encode_envelope(PLAIN_ENV)
    assert canonical[:3] == b"\x98\x01\x01"  # fixarray 8, version 1, type 1
    longer_int = b"\x98\xcc\x01" + canonical[2:]  # version as uint8
    longer_array = b"\xdc\x00\x08" + canonical[1:]  # array16 header for 8 elements
    bin16 = canonical.replace(b"\xc4\x10" + ID, b"\xc5\x00\x10" + ID)
    for data in (longer_int, longer_array, bin16):
        assert msgpack.unpackb(data) == msgpack.unpackb(canonical)
        with pytest.raises(RemoteProtocolError, match="canonical"):
            decode_envelope(data)


@pytest.mark.parametrize(
    "env",
    [
        dataclasses.replace(PLAIN_ENV, version=2),
        dataclasses.replace(PLAIN_ENV, request_id=b""),
        dataclasses.replace(PLAIN_ENV, client_id=bytearray(16)),  # type: ignore[arg-type]
        dataclasses.replace(PLAIN_ENV, flags=Flags.SESSION),  # SESSION without key_id
        dataclasses.replace(SEALED_REPLY_ENV, key_id=ID2),  # key_id without SESSION
        dataclasses.replace(PLAIN_ENV, stream=StreamPosition(ID, 0, True)),
        dataclasses.replace(CHUNK_ENV, stream=None),
        dataclasses.replace(CHUNK_ENV, stream=[ID, 0, True]),  # type: ignore[arg-type]
        dataclasses.replace(CHUNK_ENV, stream=StreamPosition(ID, 0, 1)),  # type: ignore[arg-type]
        dataclasses.replace(CHUNK_ENV, codec=7),  # type: ignore[arg-type]
    ],
)
def test_encode_envelope_refuses_invalid_values(env: Envelope) -> None:
    with pytest.raises(LocalProtocolError):
        encode_envelope(env)


def test_encode_envelope_refuses_non_envelope() -> None:
    with pytest.raises(LocalProtocolError):
        encode_envelope(RegisterRequest("alice", b"k"))  # type: ignore[arg-type]


def test_new_request_id_is_random_16_bytes() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(type(i) is bytes and len(i) == 16 for i in ids)


@pytest.mark.parametrize("kind", [t for t in MessageType if t < 0x80], ids=lambda t: t.name)
def test_every_request_envelope_starts_with_its_head(kind: MessageType) -> None:
    for env in (
        dataclasses.replace(PLAIN_ENV, type=kind),
        dataclasses.replace(CHUNK_ENV, type=kind),
    ):
        try:
            encoded = encode_envelope(env)
        except LocalProtocolError:
            continue  # a stream position this type does not take
        assert encoded.startswith(head(kind))
        assert decode_envelope(encoded).type is kind


def test_only_request_types_have_a_head() -> None:
    with pytest.raises(LocalProtocolError):
        head(MessageType.CHUNK_DATA)
