"""The field table of every control-message body: what each key holds and how it is checked.

A body is a msgpack map whose keys are the dataclass's field names in declaration order.
Each :class:`Field` has a ``load`` (wire value to Python value) and a ``dump`` (Python
value to wire value); both validate and raise :class:`RemoteProtocolError` naming the
field. :mod:`common.codec` is the only user; ``docs/protocol.md`` section 3 mirrors this.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from itertools import pairwise
from typing import Any, cast

import msgpack

from common.errors import LocalProtocolError, RemoteProtocolError
from common.fields import (
    MAX_CHUNK_SIZE,
    MAX_ERROR_MESSAGE_LEN,
    MAX_INVITE_LEN,
    MAX_LIST_LEN,
    MAX_PUBLIC_KEY_LEN,
    MAX_SIGNATURE_LEN,
    MAX_SOURCE_LEN,
    MAX_WRAPPED_KEY_LEN,
    SHA256_LEN,
    U32_MAX,
    Checker,
    check_bool,
    check_bytes,
    check_enum,
    check_id,
    check_optional_id,
    check_uint,
    chunk_count_for,
)
from common.messages import (
    PROTOCOL_VERSION,
    ChunkStored,
    Deleted,
    DeleteFile,
    DownloadBegin,
    DownloadChunk,
    DownloadReady,
    ErrorCode,
    ErrorReply,
    FileInfo,
    FileList,
    KeyRequest,
    LegacyKeyRequest,
    LegacyRegistered,
    LegacyRegisterRequest,
    LegacySessionGranted,
    ListFiles,
    ListUploads,
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
)
from common.names import validate_client_name, validate_file_name, validate_text

__all__ = [
    "SCHEMAS",
    "Field",
    "check_consistency",
    "dump_fields",
    "gateway_signed_bytes",
    "legacy_grant_signed_bytes",
    "load_fields",
]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    load: Checker
    dump: Checker


def _field(name: str, check: Checker) -> Field:
    return Field(name, check, check)


def _list(value: object, field: str, item: Checker) -> list[object]:
    if type(value) not in (list, tuple):
        raise RemoteProtocolError(f"{field}: expected array, got {type(value).__name__}")
    items = cast(list[object] | tuple[object, ...], value)
    if len(items) > MAX_LIST_LEN:
        raise RemoteProtocolError(f"{field}: {len(items)} entries, at most {MAX_LIST_LEN}")
    return [item(entry, f"{field}[{i}]") for i, entry in enumerate(items)]


def _chunk_indexes(value: object, field: str) -> tuple[int, ...]:
    indexes = tuple(cast(list[int], _list(value, field, check_uint)))
    if any(a >= b for a, b in pairwise(indexes)):
        raise RemoteProtocolError(f"{field}: indexes must be strictly ascending")
    return indexes


def _optional_sha256(value: object, field: str) -> bytes | None:
    return None if value is None else check_bytes(value, field, SHA256_LEN, SHA256_LEN)


def _items(name: str, kind: type) -> Field:
    """Field ``name``: an array of ``kind`` maps (FileInfo, UploadInfo), a listing's entries."""

    def load_one(value: object, field: str) -> object:
        try:
            return load_fields(kind, value)
        except RemoteProtocolError as exc:
            raise type(exc)(f"{field}.{exc}") from exc

    def dump_one(value: object, field: str) -> dict[str, object]:
        if type(value) is not kind:
            got = type(value).__name__
            raise RemoteProtocolError(f"{field}: expected {kind.__name__}, got {got}")
        try:
            return dump_fields(value)
        except RemoteProtocolError as exc:
            raise type(exc)(f"{field}.{exc}") from exc

    def load(value: object, field: str) -> tuple[object, ...]:
        return tuple(_list(value, field, load_one))

    return Field(name, load, partial(_list, item=dump_one))


_TRANSFER_ID = _field("transfer_id", check_id)
_DATA_KEY = _field("data_key", partial(check_bytes, minimum=32, maximum=32))
_FILE_NAME = _field("name", validate_file_name)
_SIZE = _field("size", check_uint)
_INDEX = _field("index", check_uint)
_CRC = _field("crc", partial(check_uint, maximum=U32_MAX))
_CHUNK_SIZE = _field("chunk_size", partial(check_uint, minimum=1, maximum=MAX_CHUNK_SIZE))
_CHUNK_COUNT = _field("chunk_count", partial(check_uint, minimum=1))
_SIGNATURE = _field("signature", partial(check_bytes, maximum=MAX_SIGNATURE_LEN))
_PUBLIC_KEY = _field("public_key", partial(check_bytes, maximum=MAX_PUBLIC_KEY_LEN))
_GATEWAY_KEY = _field("gateway_key", partial(check_bytes, maximum=MAX_PUBLIC_KEY_LEN))
_SOURCE = _field("source", partial(check_bytes, minimum=0, maximum=MAX_SOURCE_LEN))
_EPHEMERAL = _field("ephemeral", partial(check_bytes, minimum=32, maximum=32))  # X25519


def _after_name(value: object, field: str) -> str:
    """A listing's starting point: "" (the first page) or a valid file name."""
    return "" if value == "" else validate_file_name(value, field)


SCHEMAS: dict[type, tuple[Field, ...]] = {
    RegisterRequest: (
        _field("name", validate_client_name),
        _PUBLIC_KEY,
        _field("invite", partial(check_bytes, minimum=0, maximum=MAX_INVITE_LEN)),
    ),
    Registered: (_field("client_id", check_id),),
    ServerKeyRequest: (),
    ServerKey: (
        _PUBLIC_KEY,
        _field("previous_key", partial(check_bytes, minimum=0, maximum=MAX_PUBLIC_KEY_LEN)),
        _field("endorsement", partial(check_bytes, minimum=0, maximum=MAX_SIGNATURE_LEN)),
    ),
    KeyRequest: (
        _field("client_id", check_id),
        _field("name", validate_client_name),
        _PUBLIC_KEY,
        _field("timestamp", check_uint),
        _field("nonce", check_id),
        _EPHEMERAL,
        _SIGNATURE,
    ),
    RekeyRequest: (
        _field("client_id", check_id),
        _field("name", validate_client_name),
        _PUBLIC_KEY,
        _field("new_public_key", partial(check_bytes, maximum=MAX_PUBLIC_KEY_LEN)),
        _field("timestamp", check_uint),
        _field("nonce", check_id),
        _SIGNATURE,
        _field("new_signature", partial(check_bytes, maximum=MAX_SIGNATURE_LEN)),
    ),
    Rekeyed: (_field("sessions_ended", check_uint),),
    SessionGranted: (
        _field("session_id", check_id),
        _field("wrapped_key", partial(check_bytes, maximum=MAX_WRAPPED_KEY_LEN)),
        _field("expires_at", check_uint),
        _EPHEMERAL,
        _SIGNATURE,
    ),
    UploadBegin: (
        _FILE_NAME,
        _SIZE,
        _CHUNK_SIZE,
        _CHUNK_COUNT,
        _SOURCE,
    ),
    UploadReady: (_TRANSFER_ID, _DATA_KEY, _field("stored", _chunk_indexes)),
    ChunkStored: (_TRANSFER_ID, _INDEX),
    UploadCommit: (_TRANSFER_ID,),
    UploadCommitted: (_TRANSFER_ID, _SIZE, _CRC),
    UploadConfirm: (
        _TRANSFER_ID,
        _field("verdict", partial(check_enum, kind=Verdict)),
        _field("sha256", _optional_sha256),
    ),
    UploadDone: (_FILE_NAME, _field("verified", check_bool)),
    ListFiles: (_field("after", _after_name),),
    FileInfo: (
        _FILE_NAME,
        _SIZE,
        _field("uploaded_at", check_uint),
        _field("verified", check_bool),
        _CRC,
        _field("sha256", _optional_sha256),
        _SOURCE,
    ),
    FileList: (_items("files", FileInfo), _field("more", check_bool)),
    ListUploads: (_field("after", check_optional_id),),
    UploadInfo: (
        _TRANSFER_ID,
        _FILE_NAME,
        _SIZE,
        _field("held", check_uint),
        _field("began_at", check_uint),
    ),
    UploadList: (_items("uploads", UploadInfo), _field("more", check_bool)),
    DownloadBegin: (_FILE_NAME,),
    DownloadReady: (
        _TRANSFER_ID,
        _DATA_KEY,
        _SIZE,
        _CHUNK_SIZE,
        _CHUNK_COUNT,
        _CRC,
        _field("sha256", _optional_sha256),
    ),
    DownloadChunk: (_TRANSFER_ID, _INDEX),
    DeleteFile: (_FILE_NAME,),
    Deleted: (_FILE_NAME, _field("existed", check_bool)),
    RenameFile: (_FILE_NAME, _field("new_name", validate_file_name), _field("replace", check_bool)),
    Renamed: (_FILE_NAME, _field("new_name", validate_file_name), _field("replaced", check_bool)),
    ErrorReply: (
        _field("code", partial(check_enum, kind=ErrorCode)),
        _field("message", partial(validate_text, max_len=MAX_ERROR_MESSAGE_LEN)),
    ),
    LegacyRegisterRequest: (
        _GATEWAY_KEY,
        _field("name", validate_client_name),
        _field("timestamp", check_uint),
        _field("nonce", check_id),
        _SIGNATURE,
    ),
    LegacyRegistered: (_field("client_id", check_id),),
    LegacyKeyRequest: (
        _GATEWAY_KEY,
        _field("client_id", check_optional_id),  # empty: reconnect, found by name
        _field("name", validate_client_name),
        _field("public_key", partial(check_bytes, minimum=0, maximum=MAX_PUBLIC_KEY_LEN)),
        _field("timestamp", check_uint),
        _field("nonce", check_id),
        _SIGNATURE,
    ),
    LegacySessionGranted: (
        _field("client_id", check_id),
        _PUBLIC_KEY,
        _field("session_id", check_id),
        _field("wrapped_key", partial(check_bytes, maximum=MAX_WRAPPED_KEY_LEN)),
        _field("expires_at", check_uint),
        _SIGNATURE,
    ),
}
_KEYS = {cls: tuple(f.name for f in schema) for cls, schema in SCHEMAS.items()}
for _cls, _keys in _KEYS.items():  # the table must follow the dataclasses exactly
    if _keys != tuple(f.name for f in fields(_cls)):
        raise RuntimeError(f"body schema of {_cls.__name__} does not match its fields")


def load_fields(cls: type, raw: object) -> object:
    """Build ``cls`` from a decoded msgpack map, checking keys (set and order) and values."""
    if type(raw) is not dict:
        raise RemoteProtocolError(f"body: expected a map, got {type(raw).__name__}")
    keys = _KEYS[cls]
    if tuple(raw) != keys:
        raise RemoteProtocolError(_explain_keys(raw, keys))
    values = [f.load(raw[f.name], f.name) for f in SCHEMAS[cls]]
    return cast(Any, cls)(*values)


def dump_fields(msg: object) -> dict[str, object]:
    """The msgpack map of a message, every value checked."""
    return {f.name: f.dump(getattr(msg, f.name), f.name) for f in SCHEMAS[type(msg)]}


def check_consistency(msg: object) -> None:
    """Rules that span fields: the chunk count follows from size and chunk size; a
    server key's endorsement comes with the key it is by, or neither is there; only a
    confirm that accepts the upload records a SHA-256."""
    if isinstance(msg, ServerKey) and bool(msg.previous_key) != bool(msg.endorsement):
        raise RemoteProtocolError("previous_key and endorsement: both set, or both empty")
    if isinstance(msg, UploadConfirm) and msg.sha256 is not None and msg.verdict != Verdict.OK:
        raise RemoteProtocolError("sha256: only with verdict OK")
    if isinstance(msg, UploadBegin | DownloadReady):
        expected = chunk_count_for(msg.size, msg.chunk_size)
        if msg.chunk_count != expected:
            raise RemoteProtocolError(
                f"chunk_count: {msg.chunk_count}, but size {msg.size} in chunks of"
                f" chunk_size {msg.chunk_size} gives {expected}"
            )


def _explain_keys(raw: dict[object, object], keys: tuple[str, ...]) -> str:
    missing = sorted(set(keys) - set(raw))
    extra = sorted(repr(k) for k in set(raw) - set(keys))
    if missing or extra:
        return f"keys: missing {missing}, unexpected {extra}"
    return f"keys: out of order, expected {list(keys)}"


# --- signatures of the legacy gateway's messages (docs/protocol.md section 3.8) -----------

_GATEWAY_CONTEXTS: dict[type, str] = {
    LegacyRegisterRequest: f"cipherdrop/{PROTOCOL_VERSION} legacy-register",
    LegacyKeyRequest: f"cipherdrop/{PROTOCOL_VERSION} legacy-key-request",
}
LEGACY_GRANT_CONTEXT = f"cipherdrop/{PROTOCOL_VERSION} legacy-session-granted"


def _signed(items: list[object]) -> bytes:
    packed: bytes = msgpack.packb(items, use_bin_type=True)
    return packed


def _checked_fields(msg: object) -> dict[str, object]:
    try:
        return dump_fields(msg)
    except RemoteProtocolError as exc:  # refuse to sign or verify what could not travel
        raise LocalProtocolError(f"{type(msg).__name__}.{exc}") from exc


def gateway_signed_bytes(msg: LegacyRegisterRequest | LegacyKeyRequest) -> bytes:
    """What the gateway signs (RSA-PSS-SHA256): ``msgpack([context, every field but the
    signature, in order])``, the context naming the message so one never passes as the other."""
    context = _GATEWAY_CONTEXTS.get(type(msg))
    if context is None:
        raise LocalProtocolError(f"not a gateway request: {type(msg).__name__}")
    raw = _checked_fields(msg)
    return _signed([context, *(value for key, value in raw.items() if key != "signature")])


def legacy_grant_signed_bytes(reply: LegacySessionGranted, request_nonce: bytes) -> bytes:
    """What the server signs: ``msgpack([context, client_id, public_key, session_id,
    wrapped_key, expires_at, request_nonce])``, binding the grant to the request it answers."""
    raw = _checked_fields(reply)
    try:
        nonce = check_id(request_nonce, "request_nonce")
    except RemoteProtocolError as exc:
        raise LocalProtocolError(str(exc)) from exc
    values = [value for key, value in raw.items() if key != "signature"]
    return _signed([LEGACY_GRANT_CONTEXT, *values, nonce])
