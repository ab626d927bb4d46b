"""Property tests of the wire codec: round trips, canonical form, and hostile input.

For any bytes at all, decoding gives a message or RemoteProtocolError, nothing else; and
whatever decodes re-encodes to exactly the same bytes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.codec import (
    decode_body,
    decode_envelope,
    encode_body,
    encode_envelope,
    peek_request_id,
)
from common.errors import LocalProtocolError, RemoteProtocolError
from common.messages import (
    PROTOCOL_VERSION,
    ChunkStored,
    Codec,
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
    ListFiles,
    Message,
    MessageType,
    Registered,
    RegisterRequest,
    Rekeyed,
    RekeyRequest,
    ServerKey,
    ServerKeyRequest,
    SessionGranted,
    StreamPosition,
    UploadBegin,
    UploadCommit,
    UploadCommitted,
    UploadConfirm,
    UploadDone,
    UploadReady,
    Verdict,
    carries_data,
    type_of,
)

SETTINGS = settings(max_examples=300, deadline=None)

ids = st.binary(min_size=16, max_size=16)
u63 = st.integers(0, 2**63 - 1)
u32 = st.integers(0, 2**32 - 1)
blob = st.binary(min_size=1, max_size=600)
data_keys = st.binary(min_size=32, max_size=32)
public_keys = st.binary(min_size=1, max_size=2048)
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_chars = st.characters(
    blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="/\\" + _BIDI
)
component = st.text(_chars, min_size=1, max_size=30).filter(
    lambda s: s not in (".", "..") and s == s.strip()
)
file_names = (
    st.lists(component, min_size=1, max_size=4).map("/".join).filter(lambda s: len(s) <= 255)
)
client_names = component
texts = st.text(st.one_of(_chars, st.just("/")), min_size=1, max_size=200)


@st.composite
def sized(draw: st.DrawFn) -> tuple[int, int, int]:
    """size, chunk_size and the chunk count they imply (at least one chunk)."""
    size = draw(st.one_of(st.integers(0, 10**7), u63))
    chunk_size = draw(st.integers(1, 64 * 2**20))
    return size, chunk_size, max(1, (size + chunk_size - 1) // chunk_size)


file_infos = st.builds(
    FileInfo,
    file_names,
    u63,
    u63,
    st.booleans(),
    u32,
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(RegisterRequest, client_names, public_keys),
    st.builds(Registered, ids),
    st.just(ServerKeyRequest()),
    st.builds(ServerKey, public_keys),
    st.builds(KeyRequest, ids, client_names, public_keys, u63, ids, data_keys, blob),
    st.builds(SessionGranted, ids, blob, u63, data_keys, blob),
    st.builds(RekeyRequest, ids, client_names, public_keys, public_keys, u63, ids, blob, blob),
    st.builds(Rekeyed, u63),
    sized().flatmap(
        lambda s: st.builds(UploadBegin, file_names, *map(st.just, s), st.binary(max_size=32))
    ),
    st.builds(
        UploadReady, ids, data_keys, st.lists(u63, unique=True, max_size=50).map(sorted).map(tuple)
    ),
    st.builds(ChunkStored, ids, u63),
    st.builds(UploadCommit, ids),
    st.builds(UploadCommitted, ids, u63, u32),
    st.builds(UploadConfirm, ids, st.sampled_from(Verdict)),
    st.builds(UploadDone, file_names, st.booleans()),
    st.just(ListFiles()),
    st.builds(FileList, st.lists(file_infos, max_size=5).map(tuple)),
    st.builds(DownloadBegin, file_names),
    sized().flatmap(lambda s: st.builds(DownloadReady, ids, data_keys, *map(st.just, s), u32)),
    st.builds(DownloadChunk, ids, u63),
    st.builds(DeleteFile, file_names),
    st.builds(Deleted, file_names, st.booleans()),
    st.builds(ErrorReply, st.sampled_from(ErrorCode), texts),
)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    msg_type = draw(st.sampled_from(MessageType))
    flags = draw(st.sampled_from([Flags(0), *Flags]))
    stream = None
    if carries_data(msg_type):
        stream = draw(st.builds(StreamPosition, ids, u63, st.booleans()))
    return Envelope(
        version=PROTOCOL_VERSION,
        type=msg_type,
        client_id=draw(st.one_of(st.just(b""), ids)),
        key_id=draw(ids) if flags is Flags.SESSION else b"",
        request_id=draw(ids),
        flags=flags,
        codec=draw(st.sampled_from(Codec)),
        stream=stream,
    )


# Any msgpack value, including the kinds the protocol never uses.
msgpack_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def decode_any_envelope(data: bytes) -> None:
    try:
        env = decode_envelope(data)
    except RemoteProtocolError:
        return
    assert encode_envelope(env) == data


def decode_any_body(msg_type: MessageType, data: bytes) -> None:
    try:
        msg = decode_body(msg_type, data)
    except RemoteProtocolError:
        return
    assert encode_body(msg) == data


@SETTINGS
@given(envelopes())
def test_envelope_round_trip(env: Envelope) -> None:
    data = encode_envelope(env)
    assert decode_envelope(data) == env
    assert encode_envelope(decode_envelope(data)) == data


@SETTINGS
@given(envelopes())
def test_peek_finds_the_request_id_of_every_envelope(env: Envelope) -> None:
    assert peek_request_id(encode_envelope(env)) == env.request_id


@SETTINGS
@given(st.one_of(st.binary(max_size=200), msgpack_values.map(msgpack.packb)))
def test_peek_gives_an_id_or_a_protocol_error(data: bytes) -> None:
    try:
        request_id = peek_request_id(data)
    except RemoteProtocolError:
        return
    assert type(request_id) is bytes and len(request_id) == 16


@SETTINGS
@given(messages)
def test_body_round_trip(msg: Message) -> None:
    data = encode_body(msg)
    assert decode_body(type_of(msg), data) == msg
    assert encode_body(decode_body(type_of(msg), data)) == data


@SETTINGS
@given(st.binary(max_size=200))
def test_envelope_arbitrary_bytes(data: bytes) -> None:
    decode_any_envelope(data)


@SETTINGS
@given(st.sampled_from(MessageType), st.binary(max_size=200))
def test_body_arbitrary_bytes(msg_type: MessageType, data: bytes) -> None:
    decode_any_body(msg_type, data)


@SETTINGS
@given(msgpack_values, st.sampled_from(MessageType))
def test_arbitrary_msgpack_values(value: Any, msg_type: MessageType) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    decode_any_envelope(data)
    decode_any_body(msg_type, data)


@SETTINGS
@given(envelopes(), st.data())
def test_envelope_mutations(env: Envelope, data: st.DataObject) -> None:
    decode_any_envelope(mutate(encode_envelope(env), data))


@SETTINGS
@given(messages, st.data())
def test_body_mutations(msg: Message, data: st.DataObject) -> None:
    decode_any_body(type_of(msg), mutate(encode_body(msg), data))


@SETTINGS
@given(messages, msgpack_values, st.data())
def test_body_with_one_value_replaced(msg: Message, junk: Any, data: st.DataObject) -> None:
    raw = msgpack.unpackb(encode_body(msg), raw=False)
    if raw:
        raw[data.draw(st.sampled_from(sorted(raw)))] = junk
    decode_any_body(type_of(msg), msgpack.packb(raw, use_bin_type=True))


@SETTINGS
@given(envelopes(), msgpack_values, st.integers(0, 7))
def test_envelope_with_one_item_replaced(env: Envelope, junk: Any, position: int) -> None:
    items = msgpack.unpackb(encode_envelope(env), raw=False)
    items[position] = junk
    decode_any_envelope(msgpack.packb(items, use_bin_type=True))


wrong_size_keys = st.binary(max_size=80).filter(lambda b: len(b) != 32)


@SETTINGS
@given(wrong_size_keys, st.sampled_from(["upload", "download"]))
def test_data_key_of_any_other_size_is_refused(key: bytes, kind: str) -> None:
    msg: Message
    if kind == "upload":
        msg = UploadReady(b"\x07" * 16, key, (0,))
    else:
        msg = DownloadReady(b"\x07" * 16, key, 5, 2, 3, 0)
    good = msgpack.unpackb(encode_body(dataclasses.replace(msg, data_key=bytes(32))), raw=False)
    with pytest.raises(LocalProtocolError, match="data_key"):
        encode_body(msg)
    good["data_key"] = key
    with pytest.raises(RemoteProtocolError, match="data_key"):
        decode_body(type_of(msg), msgpack.packb(good, use_bin_type=True))


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    """One random edit: flip bits in a byte, insert a byte, delete a byte or truncate."""
    kind = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    at = draw.draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        mask = draw.draw(st.integers(1, 255))
        return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]
    if kind == "insert":
        return data[:at] + bytes([draw.draw(st.integers(0, 255))]) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + 1 :]
    return data[:at]
