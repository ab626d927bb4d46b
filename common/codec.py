"""The one place where protocol messages become msgpack bytes and back, validated.

Guarantees:

* :func:`decode_envelope` and :func:`decode_body` return a fully validated message or
  raise :class:`RemoteProtocolError` -- never another exception -- whatever the bytes.
  Every field's type, length and range is checked; ``bool`` is not an ``int`` here; msgpack
  extension types, floats, extra or missing keys and trailing bytes are rejected.
* :func:`encode_envelope` and :func:`encode_body` raise :class:`LocalProtocolError` on an
  invalid value, so we never put on the wire what a peer would refuse.
* Encodings are canonical: ``encode(decode(x)) == x`` for every accepted ``x``.
* Data-carrying types (UPLOAD_CHUNK, CHUNK_DATA) have no body: their payload is the
  chunk and their position is the envelope's ``stream``; :func:`decode_body` refuses them.

A control body is a msgpack map whose keys are exactly the dataclass's field names, in
declaration order (``docs/protocol.md`` section 3 has one table per message). The bytes
each key-exchange signature covers are built here too, so signer and verifier agree.
"""

from __future__ import annotations

import functools
from typing import cast

import msgpack

from common.body_schema import SCHEMAS, check_consistency, dump_fields, load_fields
from common.envelope import (
    DECODE_ERRORS,
    HEAD_SIZE,
    UnsupportedVersionError,
    decode_envelope,
    encode_envelope,
    head,
    new_request_id,
    peek_request_id,
)
from common.envelope import refuse_ext as _refuse_ext
from common.errors import LocalProtocolError, RemoteProtocolError
from common.fields import MAX_LIST_LEN, MAX_PUBLIC_KEY_LEN, check_id, chunk_count_for
from common.messages import (
    PROTOCOL_VERSION,
    ErrorCode,
    KeyRequest,
    Message,
    MessageType,
    RekeyRequest,
    SessionGranted,
    carries_data,
    message_class,
)
from common.names import InvalidNameError, validate_client_name, validate_file_name

__all__ = [
    "HEAD_SIZE",
    "InvalidNameError",
    "UnsupportedVersionError",
    "chunk_count_for",
    "decode_body",
    "decode_envelope",
    "encode_body",
    "encode_envelope",
    "error_code_for",
    "head",
    "key_request_signed_bytes",
    "new_request_id",
    "peek_request_id",
    "rekey_signed_bytes",
    "server_key_endorsement_bytes",
    "session_granted_signed_bytes",
    "validate_client_name",
    "validate_file_name",
]

KEY_REQUEST_CONTEXT = f"cipherdrop/{PROTOCOL_VERSION} key-request"
SESSION_GRANTED_CONTEXT = f"cipherdrop/{PROTOCOL_VERSION} session-granted"
REKEY_CONTEXT = f"cipherdrop/{PROTOCOL_VERSION} rekey"
SERVER_KEY_CHANGE_CONTEXT = f"cipherdrop/{PROTOCOL_VERSION} server-key-change"

_unpack_body = functools.partial(
    msgpack.unpackb,
    raw=False,
    strict_map_key=True,
    use_list=True,
    ext_hook=_refuse_ext,
    max_ext_len=0,
    max_str_len=4 * 1024,  # 1024 code points take at most 4096 UTF-8 bytes
    max_bin_len=MAX_PUBLIC_KEY_LEN,  # the largest bytes field
    max_array_len=MAX_LIST_LEN,
    max_map_len=16,
)


def _pack(obj: object) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def encode_body(msg: Message) -> bytes:
    """The canonical msgpack body of a control message; LocalProtocolError if invalid."""
    cls = type(msg)
    if cls not in SCHEMAS:
        raise LocalProtocolError(f"not a control message: {cls.__name__}")
    try:
        raw = dump_fields(msg)
        check_consistency(msg)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"{cls.__name__}.{exc}") from exc
    return _pack(raw)


def decode_body(msg_type: MessageType, data: bytes | memoryview) -> Message:
    """Parse and validate the body announced as ``msg_type``; RemoteProtocolError otherwise."""
    cls = message_class(msg_type)
    if cls is None:
        kind = "carries chunk data and has no body" if carries_data(msg_type) else "is unknown"
        raise RemoteProtocolError(f"message type {msg_type!r} {kind}")
    try:
        raw = _unpack_body(data)
    except DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"{cls.__name__}: malformed msgpack: {exc}") from exc
    try:
        msg = cast(Message, load_fields(cls, raw))
        check_consistency(msg)
    except RemoteProtocolError as exc:
        raise type(exc)(f"{cls.__name__}.{exc}") from exc
    if _pack(raw) != data:
        raise RemoteProtocolError(f"{cls.__name__}: non-canonical msgpack encoding")
    return msg


def error_code_for(exc: RemoteProtocolError) -> ErrorCode:
    """The ErrorReply code that answers a request which failed to decode with ``exc``."""
    if isinstance(exc, UnsupportedVersionError):
        return ErrorCode.UNSUPPORTED_VERSION
    if isinstance(exc, InvalidNameError):
        return ErrorCode.INVALID_NAME
    return ErrorCode.BAD_REQUEST


def key_request_signed_bytes(req: KeyRequest) -> bytes:
    """What the client signs (RSA-PSS-SHA256) to prove it holds ``req.public_key``.

    ``msgpack([context, client_id, name, public_key, timestamp, nonce, ephemeral])``:
    every field but the signature, behind a context string so the bytes mean nothing
    anywhere else.
    """
    encode_body(req)  # refuse to sign or verify what could not travel
    return _pack(
        [
            KEY_REQUEST_CONTEXT,
            req.client_id,
            req.name,
            req.public_key,
            req.timestamp,
            req.nonce,
            req.ephemeral,
        ]
    )


def rekey_signed_bytes(req: RekeyRequest) -> bytes:
    """What both keys sign (RSA-PSS-SHA256) to move a client from one to the other.

    ``msgpack([context, client_id, name, public_key, new_public_key, timestamp, nonce])``:
    every field but the two signatures, behind a context string of its own.
    """
    encode_body(req)
    return _pack(
        [
            REKEY_CONTEXT,
            req.client_id,
            req.name,
            req.public_key,
            req.new_public_key,
            req.timestamp,
            req.nonce,
        ]
    )


def server_key_endorsement_bytes(previous_key: bytes, public_key: bytes) -> bytes:
    """What a server's previous key signs to hand its clients over to the new one:
    ``msgpack([context, previous_key, public_key])`` (both DER SubjectPublicKeyInfo)."""
    return _pack([SERVER_KEY_CHANGE_CONTEXT, previous_key, public_key])


def session_granted_signed_bytes(reply: SessionGranted, request_nonce: bytes) -> bytes:
    """What the server signs: the grant bound to the nonce of the request it answers.

    ``msgpack([context, session_id, wrapped_key, expires_at, ephemeral, request_nonce])``.
    """
    encode_body(reply)
    try:
        nonce = check_id(request_nonce, "request_nonce")
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from exc
    return _pack(
        [
            SESSION_GRANTED_CONTEXT,
            reply.session_id,
            reply.wrapped_key,
            reply.expires_at,
            reply.ephemeral,
            nonce,
        ]
    )
