"""How a reply is protected, chosen by how its request was protected, and reply framing.

A request sealed to the server (``SEALED_TO_SERVER``) is answered ``SEALED_REPLY`` under
its one-time key; a session request (``SESSION``) is answered under the session's
server-to-client key; anything else, and every refusal made before a key was shared, is
answered in plain (flags 0). In every sealed reply the encoded reply envelope is the
associated data, as in requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import crypto
from common.codec import encode_body, encode_envelope
from common.crypto import SessionKeys
from common.fields import ID_LEN
from common.messages import (
    NO_FLAGS,
    PROTOCOL_VERSION,
    Codec,
    Envelope,
    Flags,
    Message,
    MessageType,
    StreamPosition,
    type_of,
)

__all__ = [
    "NO_REQUEST_ID",
    "OneTimeKey",
    "Plain",
    "Protection",
    "SessionKey",
    "data_reply",
    "reply_frames",
]

# The request id of a reply to a request whose envelope could not be read.
NO_REQUEST_ID = bytes(ID_LEN)


@dataclass(frozen=True, slots=True)
class Plain:
    """No key is shared: the reply body travels as is."""

    def envelope(self, msg_type: MessageType, request_id: bytes) -> Envelope:
        return Envelope(PROTOCOL_VERSION, msg_type, b"", b"", request_id, NO_FLAGS)

    def seal(self, body: bytes, aad: bytes) -> bytes:
        return body


@dataclass(frozen=True, slots=True)
class OneTimeKey:
    """The one-time AES key of a request sealed to the server."""

    key: bytes = field(repr=False)

    def envelope(self, msg_type: MessageType, request_id: bytes) -> Envelope:
        return Envelope(PROTOCOL_VERSION, msg_type, b"", b"", request_id, Flags.SEALED_REPLY)

    def seal(self, body: bytes, aad: bytes) -> bytes:
        return crypto.seal(self.key, body, aad)


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A client's session: replies go under its server-to-client key."""

    session_id: bytes
    client_id: bytes
    keys: SessionKeys = field(repr=False)

    def envelope(self, msg_type: MessageType, request_id: bytes) -> Envelope:
        return Envelope(
            PROTOCOL_VERSION, msg_type, self.client_id, self.session_id, request_id, Flags.SESSION
        )

    def seal(self, body: bytes, aad: bytes) -> bytes:
        return crypto.seal(self.keys.server_to_client, body, aad)


Protection = Plain | OneTimeKey | SessionKey


def reply_frames(
    protection: Protection, request_id: bytes, msg_type: MessageType, body: bytes
) -> list[bytes]:
    """``[envelope, payload]`` of a reply whose encoded body is ``body``."""
    envelope = encode_envelope(protection.envelope(msg_type, request_id))
    return [envelope, protection.seal(body, envelope)]


def message_frames(protection: Protection, request_id: bytes, msg: Message) -> list[bytes]:
    return reply_frames(protection, request_id, type_of(msg), encode_body(msg))


def data_reply(
    session: SessionKey, request_id: bytes, stream: StreamPosition, codec: int, sealed: bytes
) -> list[bytes]:
    """A CHUNK_DATA reply: the stored sealed chunk, as is, behind a session envelope.

    The chunk is sealed under the file's data key with its position and codec in the
    associated data, so it needs no second layer.
    """
    envelope = Envelope(
        PROTOCOL_VERSION,
        MessageType.CHUNK_DATA,
        session.client_id,
        session.session_id,
        request_id,
        Flags.SESSION,
        Codec(codec),
        stream,
    )
    return [encode_envelope(envelope), sealed]
