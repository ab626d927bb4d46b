"""The legacy binary protocol, without I/O: headers, dialects, and payload fields.

Everything is little-endian. A request is a 23-byte header (client id 16, version u8,
code u16, payload size u32) and its payload; a response is a 7-byte header (version u8,
code u16, payload size u32) and its payload. Four dialects number the same seven requests
and eight responses differently (:data:`DIALECTS`); ``docs/legacy.md`` is the reference.

Guarantees: every parser takes exactly the bytes its field has and raises
:class:`LegacyFormatError` on anything else (a wrong length, a string field without its
NUL, bytes that are not UTF-8, a code this dialect does not have). Nothing here allocates
more than the fixed field sizes: file contents are never parsed here, only their headers.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from common.errors import RemoteProtocolError

__all__ = [
    "DIALECTS",
    "FILE_HEADER_SIZE",
    "PACKET_HEADER_SIZE",
    "PUBLIC_KEY_SIZE",
    "REQUEST_HEADER",
    "RESPONSE_HEADER",
    "STRING_SIZE",
    "Dialect",
    "FileHeader",
    "LegacyFormatError",
    "Request",
    "RequestHeader",
    "Response",
    "encode_response",
    "file_header_size",
    "file_received_payload",
    "fixed_payload_size",
    "parse_file_header",
    "parse_header",
    "parse_name",
    "parse_public_key_payload",
    "string_field",
]

REQUEST_HEADER = struct.Struct("<16sBHI")
RESPONSE_HEADER = struct.Struct("<BHI")
CLIENT_VERSION = 3  # what clients send
SERVER_VERSION = 3  # what we answer with
STRING_SIZE = 255
PUBLIC_KEY_SIZE = 160
ID_SIZE = 16
_U32 = struct.Struct("<I")
# Dialects A, B: content size, file name. C, D add original size, packet number, total.
_FILE_AB = struct.Struct("<I255s")
_FILE_CD = struct.Struct("<IIHH255s")
FILE_HEADER_SIZE = _FILE_AB.size  # 259
PACKET_HEADER_SIZE = _FILE_CD.size  # 267


class LegacyFormatError(RemoteProtocolError):
    """The legacy peer sent bytes that do not follow the protocol."""


class Request(enum.Enum):
    REGISTER = 0
    PUBLIC_KEY = 1
    RECONNECT = 2
    SEND_FILE = 3
    CRC_OK = 4
    CRC_RETRY = 5
    CRC_GIVE_UP = 6


class Response(enum.Enum):
    REGISTERED = 0
    REGISTRATION_FAILED = 1
    AES_KEY = 2
    FILE_RECEIVED = 3
    THANKS = 4
    RECONNECT_APPROVED = 5
    RECONNECT_REFUSED = 6
    GENERAL_ERROR = 7


@dataclass(frozen=True, slots=True)
class Dialect:
    """One numbering of the protocol and what goes with it."""

    name: str
    request_codes: tuple[int, ...]  # in the order of :class:`Request`
    response_codes: tuple[int, ...]  # in the order of :class:`Response`
    default_port: int
    aes_key_size: int
    packets: bool  # files travel as numbered packets (C, D) instead of one request (A, B)

    def request_of(self, code: int) -> Request | None:
        try:
            return Request(self.request_codes.index(code))
        except ValueError:
            return None

    def code_of(self, response: Response) -> int:
        return self.response_codes[response.value]

    def request_code(self, request: Request) -> int:
        return self.request_codes[request.value]


_RESPONSES_2100 = tuple(range(2100, 2108))
_RESPONSES_1600 = tuple(range(1600, 1608))
DIALECTS: dict[str, Dialect] = {
    "a": Dialect("a", tuple(range(1100, 1107)), _RESPONSES_2100, 1234, 16, False),
    "b": Dialect("b", tuple(range(1025, 1032)), _RESPONSES_2100, 1357, 16, False),
    "c": Dialect("c", tuple(range(1025, 1032)), _RESPONSES_1600, 1256, 32, True),
    "d": Dialect("d", (825, 826, 827, 828, 900, 901, 902), _RESPONSES_1600, 1256, 32, True),
}


@dataclass(frozen=True, slots=True)
class RequestHeader:
    client_id: bytes
    version: int
    request: Request
    payload_size: int


def parse_header(dialect: Dialect, data: bytes) -> RequestHeader:
    """The 23-byte request header; LegacyFormatError for another version or an unknown code."""
    if len(data) != REQUEST_HEADER.size:
        raise LegacyFormatError(f"header of {len(data)} bytes, expected {REQUEST_HEADER.size}")
    client_id, version, code, size = REQUEST_HEADER.unpack(data)
    if version != CLIENT_VERSION:
        raise LegacyFormatError(f"client version {version}, expected {CLIENT_VERSION}")
    request = dialect.request_of(code)
    if request is None:
        raise LegacyFormatError(f"unknown request code {code} in dialect {dialect.name}")
    return RequestHeader(client_id, version, request, size)


def fixed_payload_size(request: Request) -> int | None:
    """The exact payload size of a request, or None for a file (its header says)."""
    if request is Request.SEND_FILE:
        return None
    if request is Request.PUBLIC_KEY:
        return STRING_SIZE + PUBLIC_KEY_SIZE
    return STRING_SIZE


def encode_response(dialect: Dialect, response: Response, payload: bytes = b"") -> bytes:
    return RESPONSE_HEADER.pack(SERVER_VERSION, dialect.code_of(response), len(payload)) + payload


def string_field(text: str) -> bytes:
    """``text`` as a 255-byte NUL-terminated, NUL-padded field."""
    raw = text.encode()
    if len(raw) >= STRING_SIZE:
        raise ValueError("string does not fit a 255-byte field")
    return raw.ljust(STRING_SIZE, b"\0")


def parse_name(field: bytes, *, strip_quotes: bool = False) -> str:
    """A 255-byte string field: text up to the first NUL (later bytes are ignored).

    ``strip_quotes`` removes one pair of surrounding double quotes (file names).
    """
    if len(field) != STRING_SIZE:
        raise LegacyFormatError(f"string field of {len(field)} bytes, expected {STRING_SIZE}")
    end = field.find(b"\0")
    if end < 0:
        raise LegacyFormatError("string field without a terminating NUL")
    try:
        text = field[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LegacyFormatError("string field is not UTF-8") from exc
    if strip_quotes and len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text:
        raise LegacyFormatError("empty string field")
    return text


def parse_public_key_payload(payload: bytes) -> tuple[str, bytes]:
    """``name[255] + public key[160]``."""
    if len(payload) != STRING_SIZE + PUBLIC_KEY_SIZE:
        raise LegacyFormatError("public key payload has the wrong size")
    return parse_name(payload[:STRING_SIZE]), payload[STRING_SIZE:]


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The fixed part of a send-file request. For dialects A and B the packet fields are
    ``original_size = None``, ``packet = 1``, ``total = 1``."""

    content_size: int
    original_size: int | None
    packet: int
    total: int
    name: str
    data_size: int  # ciphertext bytes that follow in this request


def parse_file_header(dialect: Dialect, fixed: bytes, payload_size: int) -> FileHeader:
    """The fixed part of a send-file payload, checked against the request's payload size."""
    if dialect.packets:
        if len(fixed) != PACKET_HEADER_SIZE:
            raise LegacyFormatError("truncated packet header")
        content, original, packet, total, name = _FILE_CD.unpack(fixed)
        data_size = payload_size - PACKET_HEADER_SIZE
        header = FileHeader(
            content, original, packet, total, parse_name(name, strip_quotes=True), data_size
        )
    else:
        if len(fixed) != FILE_HEADER_SIZE:
            raise LegacyFormatError("truncated file header")
        content, name = _FILE_AB.unpack(fixed)
        data_size = payload_size - FILE_HEADER_SIZE
        header = FileHeader(content, None, 1, 1, parse_name(name, strip_quotes=True), data_size)
        if data_size != content:
            raise LegacyFormatError("payload size does not match the content size")
    if data_size < 0 or header.total < 1:
        raise LegacyFormatError("file request sizes are inconsistent")
    return header


def file_header_size(dialect: Dialect) -> int:
    return PACKET_HEADER_SIZE if dialect.packets else FILE_HEADER_SIZE


def file_received_payload(client_id: bytes, content_size: int, name: str, crc: int) -> bytes:
    return client_id + _U32.pack(content_size) + string_field(name) + _U32.pack(crc)
