"""Field checkers shared by the envelope and body codecs, and the protocol's size limits.

Each checker takes a decoded msgpack value (or a dataclass attribute about to be encoded)
and the field's name, and returns the value in its Python form or raises
:class:`RemoteProtocolError` naming the field. Types are checked exactly: ``bool`` is not
accepted where an ``int`` is expected (in Python it is one), ``bytearray`` is not ``bytes``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from typing import TypeVar

from common.errors import RemoteProtocolError

__all__ = [
    "ID_LEN",
    "INVITE_LEN",
    "MAX_CHUNK_SIZE",
    "MAX_ERROR_MESSAGE_LEN",
    "MAX_INVITE_LEN",
    "MAX_LIST_LEN",
    "MAX_PUBLIC_KEY_LEN",
    "MAX_SIGNATURE_LEN",
    "MAX_SOURCE_LEN",
    "MAX_WRAPPED_KEY_LEN",
    "SHA256_LEN",
    "U8_MAX",
    "U32_MAX",
    "U63_MAX",
    "Checker",
    "check_bool",
    "check_bytes",
    "check_enum",
    "check_id",
    "check_optional_id",
    "check_uint",
    "chunk_count_for",
]

ID_LEN = 16  # client ids, session ids, request ids, transfer ids, nonces
SHA256_LEN = 32
U8_MAX = 2**8 - 1
U32_MAX = 2**32 - 1
U63_MAX = 2**63 - 1  # sizes, offsets, indexes, times: fits a signed 64-bit column
MAX_CHUNK_SIZE = 64 * 2**20
MAX_LIST_LEN = 100_000
MAX_PUBLIC_KEY_LEN = 2048  # DER SubjectPublicKeyInfo; RSA-8192 needs about 1.1 KiB
MAX_SIGNATURE_LEN = 1024  # RSA-8192
MAX_WRAPPED_KEY_LEN = 1024  # RSA-OAEP output is the modulus size
MAX_ERROR_MESSAGE_LEN = 1024
MAX_SOURCE_LEN = 32  # UploadBegin.source: a file version token
MAX_INVITE_LEN = 32  # RegisterRequest.invite: an operator's one-time code
INVITE_LEN = 16  # the random bytes of the codes cipherdrop-admin makes (32 hex digits)

E = TypeVar("E", bound=enum.Enum)
Checker = Callable[[object, str], object]


def _wrong_type(field: str, expected: str, value: object) -> RemoteProtocolError:
    return RemoteProtocolError(f"{field}: expected {expected}, got {type(value).__name__}")


def check_uint(value: object, field: str, maximum: int = U63_MAX, minimum: int = 0) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise _wrong_type(field, "int", value)
    if not minimum <= value <= maximum:
        raise RemoteProtocolError(f"{field}: {value} outside {minimum}..{maximum}")
    return value


def check_bool(value: object, field: str) -> bool:
    if type(value) is not bool:
        raise _wrong_type(field, "bool", value)
    return value


def check_bytes(value: object, field: str, maximum: int, minimum: int = 1) -> bytes:
    if type(value) is not bytes:
        raise _wrong_type(field, "bytes", value)
    if not minimum <= len(value) <= maximum:
        raise RemoteProtocolError(f"{field}: length {len(value)} outside {minimum}..{maximum}")
    return value


def check_id(value: object, field: str) -> bytes:
    if type(value) is not bytes:
        raise _wrong_type(field, "bytes", value)
    if len(value) != ID_LEN:
        raise RemoteProtocolError(f"{field}: length {len(value)}, expected {ID_LEN}")
    return value


def check_optional_id(value: object, field: str) -> bytes:
    """An id that may be absent, written as empty bytes (never nil)."""
    if type(value) is not bytes:
        raise _wrong_type(field, "bytes", value)
    if len(value) not in (0, ID_LEN):
        raise RemoteProtocolError(f"{field}: length {len(value)}, expected 0 or {ID_LEN}")
    return value


def check_enum(value: object, field: str, kind: type[E]) -> E:
    """A member of ``kind`` given as the member or its plain int/str value."""
    if type(value) is bool or not isinstance(value, int | str):
        raise _wrong_type(field, kind.__name__, value)
    members = _members(kind)
    member: E | None = members.get(value)
    if member is None:
        raise RemoteProtocolError(f"{field}: unknown {kind.__name__} {value!r}")
    return member


@functools.cache
def _members(kind: type[E]) -> dict[object, E]:
    # A dict lookup is several times faster than calling the enum, and this runs per chunk.
    return {member.value: member for member in kind}


def chunk_count_for(size: int, chunk_size: int) -> int:
    """How many chunks a transfer of ``size`` bytes has: at least one, so an empty file
    still has a final chunk that authenticates its end."""
    return max(1, -(-size // chunk_size))
