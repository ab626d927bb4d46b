"""The numbered and named constants of the wire protocol: version, types, flags, codes.

Values are fixed by ``docs/protocol.md`` (sections 2.3, 2.4, 2.6, 3.4 and 4.1); adding a
member is a protocol change. :mod:`common.messages` re-exports everything here.
"""

from __future__ import annotations

import enum

__all__ = ["NO_FLAGS", "PROTOCOL_VERSION", "Codec", "ErrorCode", "Flags", "MessageType", "Verdict"]

PROTOCOL_VERSION = 1


class MessageType(enum.IntEnum):
    """Envelope ``type`` (u8). A reply to request type ``t`` is ``t | 0x80``; 0xFF is an error."""

    REGISTER_REQUEST = 0x01
    KEY_REQUEST = 0x02
    SERVER_KEY_REQUEST = 0x03
    REKEY_REQUEST = 0x06
    UPLOAD_BEGIN = 0x10
    UPLOAD_CHUNK = 0x11
    UPLOAD_COMMIT = 0x12
    UPLOAD_CONFIRM = 0x13
    LIST_FILES = 0x20
    LIST_UPLOADS = 0x21
    DOWNLOAD_BEGIN = 0x30
    DOWNLOAD_CHUNK = 0x31
    DELETE_FILE = 0x40
    RENAME_FILE = 0x41
    REGISTERED = 0x81
    SESSION_GRANTED = 0x82
    SERVER_KEY = 0x83
    REKEYED = 0x86
    UPLOAD_READY = 0x90
    CHUNK_STORED = 0x91
    UPLOAD_COMMITTED = 0x92
    UPLOAD_DONE = 0x93
    FILE_LIST = 0xA0
    UPLOAD_LIST = 0xA1
    DOWNLOAD_READY = 0xB0
    CHUNK_DATA = 0xB1
    DELETED = 0xC0
    RENAMED = 0xC1
    ERROR_REPLY = 0xFF
    # The legacy gateway's requests (docs/protocol.md section 3.8, docs/legacy.md).
    LEGACY_REGISTER_REQUEST = 0x04
    LEGACY_KEY_REQUEST = 0x05
    LEGACY_REGISTERED = 0x84
    LEGACY_SESSION_GRANTED = 0x85


class Flags(enum.IntFlag):
    """Envelope ``flags`` (u32): how the payload is protected. At most one bit is set.

    No bit set means the payload is the plaintext body (key exchange, whose parts are
    signed instead, and error replies sent before any key is shared).
    """

    SEALED_TO_SERVER = 0x1  # hybrid: RSA-OAEP-SHA256 wrapped one-time AES key + AES-256-GCM
    SESSION = 0x2  # AES-256-GCM under the session key named by the envelope's key_id
    SEALED_REPLY = 0x4  # AES-256-GCM under the one-time key of the SEALED_TO_SERVER request


NO_FLAGS = Flags(0)


class Codec(enum.IntEnum):
    """Envelope ``codec`` (u8): compression applied to the payload plaintext before sealing."""

    NONE = 0
    ZLIB = 1


class Verdict(enum.IntEnum):
    """The client's verdict on a committed upload after comparing size and CRC."""

    OK = 0
    RESEND = 1
    GIVE_UP = 2


class ErrorCode(enum.StrEnum):
    """Stable, documented words in :class:`ErrorReply`; clients branch on these, not on text."""

    BAD_REQUEST = "bad-request"
    UNSUPPORTED_VERSION = "unsupported-version"
    NAME_TAKEN = "name-taken"
    NOT_INVITED = "not-invited"
    INVALID_NAME = "invalid-name"
    UNKNOWN_CLIENT = "unknown-client"
    BAD_PROOF = "bad-proof"
    SESSION_EXPIRED = "session-expired"
    UNKNOWN_SESSION = "unknown-session"
    NOT_FOUND = "not-found"
    INTEGRITY = "integrity"
    TOO_LARGE = "too-large"
    NO_SPACE = "no-space"
    OVER_QUOTA = "over-quota"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"
