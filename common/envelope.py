"""Encode and decode the envelope frame: the first frame of every request and reply body.

Guarantees:

* :func:`decode_envelope` returns a fully validated :class:`Envelope` or raises
  :class:`RemoteProtocolError`, whatever the input bytes are.
* The encoding is canonical: exactly one byte string encodes a given envelope, and
  ``encode_envelope(decode_envelope(x)) == x`` for every accepted ``x``. That matters
  because the envelope bytes are the AEAD associated data of the payload.
* It is cheap: one ``unpackb`` with tight limits, a few checks and one ``packb`` to prove
  the input was canonical (a few microseconds; it runs once per chunk).
* :func:`peek_request_id` only finds the request id, for matching a reply to its request
  (the transport does it for every message): the same bounded ``unpackb`` and a shape
  check. It proves nothing else about the envelope; whoever acts on the message decodes
  it with :func:`decode_envelope`.

Wire form (``docs/protocol.md`` section 2): a msgpack array of 8 elements
``[version, type, client_id, key_id, request_id, flags, codec, stream]`` where ``stream``
is nil or ``[transfer_id, index, final]``.
"""

from __future__ import annotations

import functools
from typing import Any

import msgpack

from common import entropy
from common.errors import LocalProtocolError, RemoteProtocolError, UnsupportedVersionError
from common.fields import (
    ID_LEN,
    U32_MAX,
    U63_MAX,
    check_bool,
    check_enum,
    check_id,
    check_optional_id,
    check_uint,
)
from common.messages import (
    PROTOCOL_VERSION,
    Codec,
    Envelope,
    Flags,
    MessageType,
    StreamPosition,
    carries_data,
)

__all__ = [
    "UnsupportedVersionError",
    "decode_envelope",
    "encode_envelope",
    "head",
    "new_request_id",
    "peek_request_id",
]

_ENVELOPE_LEN = 8
_KNOWN_FLAGS = int(Flags.SEALED_TO_SERVER | Flags.SESSION | Flags.SEALED_REPLY)
_FLAG_VALUES = {bits: Flags(bits) for bits in (0, *Flags)}
# Exceptions msgpack and the checks below can raise on hostile input.
DECODE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException)


def refuse_ext(code: int, data: bytes) -> Any:
    """``ext_hook`` that rejects every msgpack extension type (msgpack calls it for
    zero-length ones that ``max_ext_len=0`` lets through)."""
    raise ValueError(f"msgpack extension type {code} is not allowed")


_unpack = functools.partial(
    msgpack.unpackb,
    raw=False,
    strict_map_key=True,
    use_list=True,
    ext_hook=refuse_ext,
    max_ext_len=0,
    max_str_len=0,
    max_map_len=0,
    max_bin_len=ID_LEN,
    max_array_len=_ENVELOPE_LEN,
)


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def new_request_id() -> bytes:
    """A fresh request id: 16 bytes from the operating system's CSPRNG."""
    return entropy.token_bytes(ID_LEN)


def encode_envelope(env: Envelope) -> bytes:
    """The canonical bytes of ``env``; LocalProtocolError if any field is invalid."""
    if not isinstance(env, Envelope):
        raise LocalProtocolError(f"expected Envelope, got {type(env).__name__}")
    stream = env.stream
    if stream is not None and not isinstance(stream, StreamPosition):
        raise LocalProtocolError(f"stream: expected StreamPosition, got {type(stream).__name__}")
    items = [
        env.version,
        env.type,
        env.client_id,
        env.key_id,
        env.request_id,
        env.flags,
        env.codec,
        None if stream is None else [stream.transfer_id, stream.index, stream.final],
    ]
    try:
        _envelope_from_items(items)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from exc
    # msgpack writes IntEnum/IntFlag members as plain ints, each in its shortest form.
    return _pack(items)


def decode_envelope(data: bytes | memoryview) -> Envelope:
    """Parse and validate an envelope frame; RemoteProtocolError on anything else."""
    _check_version_prefix(data)
    items = _unpack_items(data)
    env = _envelope_from_items(items)
    if _pack(items) != data:
        raise RemoteProtocolError("envelope: non-canonical msgpack encoding")
    return env


# The bytes :func:`head` gives: the array header, the version, the type.
HEAD_SIZE = 3


def head(kind: MessageType) -> bytes:
    """The first :data:`HEAD_SIZE` bytes of every envelope of request type ``kind``: the
    array header, the version and the type, each one byte (request types are below 0x80).
    A message's type can be told from them without decoding the envelope; whoever acts on
    the message still decodes it with :func:`decode_envelope`."""
    if not 0 <= kind < 0x80:
        raise LocalProtocolError(f"{kind!r} is not a request type")
    return bytes((0x90 | _ENVELOPE_LEN, PROTOCOL_VERSION, kind))


def peek_request_id(data: bytes | memoryview) -> bytes:
    """The request id of an envelope frame; RemoteProtocolError if there is none."""
    request_id = _checked_items(_unpack_items(data))[4]
    if type(request_id) is not bytes or len(request_id) != ID_LEN:
        raise RemoteProtocolError(f"envelope: request_id must be {ID_LEN} bytes")
    return request_id


def _unpack_items(data: bytes | memoryview) -> Any:
    try:
        return _unpack(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"envelope: malformed msgpack: {exc}") from exc


def _checked_items(items: object) -> list[Any]:
    """``items`` if it is a list of the envelope's length, else RemoteProtocolError."""
    if type(items) is not list or len(items) != _ENVELOPE_LEN:
        raise RemoteProtocolError(f"envelope: expected an array of {_ENVELOPE_LEN} elements")
    return items


def _check_version_prefix(data: bytes | memoryview) -> None:
    # In every version an envelope starts with a fixarray header and the version as a
    # positive fixint, so a peer speaking another version is named, not just "malformed".
    if len(data) >= 2 and 0x90 <= data[0] <= 0x9F and PROTOCOL_VERSION != data[1] <= 0x7F:
        raise UnsupportedVersionError(
            f"unsupported protocol version {data[1]} (this side speaks {PROTOCOL_VERSION})"
        )


def _envelope_from_items(items: object) -> Envelope:
    version, msg_type, client_id, key_id, request_id, flags, codec, stream = _checked_items(items)
    if check_uint(version, "version", U63_MAX) != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})"
        )
    env_type = check_enum(msg_type, "type", MessageType)
    env_flags = _check_flags(flags)
    env_key_id = check_optional_id(key_id, "key_id")
    if bool(env_key_id) != (env_flags is Flags.SESSION):
        raise RemoteProtocolError("key_id: must be set exactly when the SESSION flag is")
    position = _check_stream(stream)
    if (position is not None) != carries_data(env_type):
        raise RemoteProtocolError(
            f"stream: must be set exactly for data messages ({env_type.name})"
        )
    return Envelope(
        version=PROTOCOL_VERSION,
        type=env_type,
        client_id=check_optional_id(client_id, "client_id"),
        key_id=env_key_id,
        request_id=check_id(request_id, "request_id"),
        flags=env_flags,
        codec=check_enum(codec, "codec", Codec),
        stream=position,
    )


def _check_flags(value: object) -> Flags:
    bits = check_uint(value, "flags", U32_MAX)
    if bits & ~_KNOWN_FLAGS:
        raise RemoteProtocolError(f"flags: unknown bits 0x{bits & ~_KNOWN_FLAGS:x}")
    if bits & (bits - 1):
        raise RemoteProtocolError("flags: more than one protection bit set")
    return _FLAG_VALUES[bits]


def _check_stream(value: object) -> StreamPosition | None:
    if value is None:
        return None
    if type(value) is not list or len(value) != 3:
        raise RemoteProtocolError("stream: expected nil or [transfer_id, index, final]")
    transfer_id, index, final = value
    return StreamPosition(
        transfer_id=check_id(transfer_id, "stream.transfer_id"),
        index=check_uint(index, "stream.index"),
        final=check_bool(final, "stream.final"),
    )
