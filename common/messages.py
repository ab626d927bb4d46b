"""The vocabulary of the cipherdrop wire protocol: envelope, message types, message bodies.

Everything here is a plain value: enums and frozen, slotted dataclasses with no behaviour
beyond a few lookups. Turning them into bytes and back, with validation of every field,
is the job of :mod:`common.codec` alone; ``docs/protocol.md`` sections 2-4 is the byte-level
reference for what is defined here.

A request or reply body is two frames, ``[envelope, payload]``. The envelope
(:class:`Envelope`) names the message type; the payload is ciphertext whose plaintext is
either a msgpack control body (one dataclass below per type) or, for the two data-carrying
types (:data:`DATA_TYPES`), raw chunk bytes whose position is the envelope's ``stream``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.enums import NO_FLAGS, PROTOCOL_VERSION, Codec, ErrorCode, Flags, MessageType, Verdict
from common.errors import LocalProtocolError
from common.names import InvalidNameError, validate_client_name, validate_file_name

__all__ = [
    "DATA_TYPES",
    "NO_FLAGS",
    "PROTOCOL_VERSION",
    "ChunkStored",
    "Codec",
    "DeleteFile",
    "Deleted",
    "DownloadBegin",
    "DownloadChunk",
    "DownloadReady",
    "Envelope",
    "ErrorCode",
    "ErrorReply",
    "FileInfo",
    "FileList",
    "Flags",
    "InvalidNameError",
    "KeyRequest",
    "LegacyKeyRequest",
    "LegacyRegisterRequest",
    "LegacyRegistered",
    "LegacySessionGranted",
    "ListFiles",
    "ListUploads",
    "Message",
    "MessageType",
    "RegisterRequest",
    "Registered",
    "RekeyRequest",
    "Rekeyed",
    "RenameFile",
    "Renamed",
    "ServerKey",
    "ServerKeyRequest",
    "SessionGranted",
    "StreamPosition",
    "UploadBegin",
    "UploadCommit",
    "UploadCommitted",
    "UploadConfirm",
    "UploadDone",
    "UploadInfo",
    "UploadList",
    "UploadReady",
    "Verdict",
    "carries_data",
    "message_class",
    "reply_type",
    "type_of",
    "validate_client_name",
    "validate_file_name",
]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a data-carrying message sits in its transfer: bound into the chunk's AAD."""

    transfer_id: bytes
    index: int
    final: bool


@dataclass(frozen=True, slots=True)
class Envelope:
    """The first body frame; its encoded bytes are the AEAD associated data of the payload."""

    version: int
    type: MessageType
    client_id: bytes
    key_id: bytes
    request_id: bytes
    flags: Flags = NO_FLAGS
    codec: Codec = Codec.NONE
    stream: StreamPosition | None = None


# --- registration and key exchange -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    """A new client: its name and the public key that alone may later prove it; the
    operator's invite code where the server registers only invited clients (else b"")."""

    name: str
    public_key: bytes
    invite: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class Registered:
    client_id: bytes


@dataclass(frozen=True, slots=True)
class ServerKeyRequest:
    """Asks for the server's public key (plain): the client pins its fingerprint."""


@dataclass(frozen=True, slots=True)
class ServerKey:
    """The server's RSA public key, X.509 SubjectPublicKeyInfo DER. After a change of
    server key, ``previous_key`` is the key before and ``endorsement`` its signature over
    ``server_key_endorsement_bytes``, so a client that pinned the previous key can follow
    the change; both empty otherwise."""

    public_key: bytes
    previous_key: bytes = b""
    endorsement: bytes = b""


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """First key upload and every reconnect; ``signature`` covers ``key_request_signed_bytes``.
    ``ephemeral``: the client's one-use X25519 public key (forward secrecy)."""

    client_id: bytes
    name: str
    public_key: bytes
    timestamp: int
    nonce: bytes
    ephemeral: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class RekeyRequest:
    """Replace the client's key ``public_key`` by ``new_public_key``. ``signature`` is by
    the current key and ``new_signature`` by the new one, both over ``rekey_signed_bytes``:
    only whoever holds both moves the client to the new key."""

    client_id: bytes
    name: str
    public_key: bytes
    new_public_key: bytes
    timestamp: int
    nonce: bytes
    signature: bytes
    new_signature: bytes


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """The client's key is now the request's ``new_public_key``; ``sessions_ended``: how
    many of its sessions the change ended (every one it had)."""

    sessions_ended: int


@dataclass(frozen=True, slots=True)
class SessionGranted:
    """``signature`` is the server's, over ``session_granted_signed_bytes(reply, nonce)``.
    The session key is derived from the secret in ``wrapped_key`` and the X25519 exchange
    of the request's and this reply's ``ephemeral`` keys (common.ephemeral)."""

    session_id: bytes
    wrapped_key: bytes
    expires_at: int
    ephemeral: bytes
    signature: bytes


# --- upload ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UploadBegin:
    """``source`` names the version of the file (0-32 bytes, the client's choice): only an
    unfinished upload begun with the same one is resumed."""

    name: str
    size: int
    chunk_size: int
    chunk_count: int
    source: bytes = b""


@dataclass(frozen=True, slots=True)
class UploadReady:
    """``data_key`` seals this upload's chunks (it travels inside the session-sealed reply);
    ``stored``: indexes the server already holds for this transfer, strictly ascending."""

    transfer_id: bytes
    data_key: bytes = field(repr=False)
    stored: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChunkStored:
    transfer_id: bytes
    index: int


@dataclass(frozen=True, slots=True)
class UploadCommit:
    transfer_id: bytes


@dataclass(frozen=True, slots=True)
class UploadCommitted:
    """``crc`` is the POSIX ``cksum`` CRC of the whole plaintext, as the command prints it."""

    transfer_id: bytes
    size: int
    crc: int


@dataclass(frozen=True, slots=True)
class UploadConfirm:
    """``sha256``: with ``Verdict.OK`` only, the SHA-256 of the whole plaintext as the
    client read it (``put --sha256``), recorded with the file and checked by every
    download; None: none is recorded."""

    transfer_id: bytes
    verdict: Verdict
    sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class UploadDone:
    name: str
    verified: bool


# --- listing, download, delete, errors ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListFiles:
    """One page of the sender's files: those whose names sort after ``after`` ("": from
    the first). Names sort by code point."""

    after: str = ""


@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    size: int
    uploaded_at: int
    verified: bool
    crc: int
    sha256: bytes | None
    source: bytes = b""  # the source token its upload began with (UploadBegin.source)


@dataclass(frozen=True, slots=True)
class FileList:
    """A page of files in name order; ``more``: ask again after the last name."""

    files: tuple[FileInfo, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class ListUploads:
    """One page of the sender's unfinished uploads: those whose transfer ids sort after
    ``after`` (b"": from the first)."""

    after: bytes = b""


@dataclass(frozen=True, slots=True)
class UploadInfo:
    transfer_id: bytes
    name: str
    size: int
    held: int  # plaintext bytes of the chunks the server holds
    began_at: int


@dataclass(frozen=True, slots=True)
class UploadList:
    """A page of unfinished uploads in transfer id order; ``more``: ask again after the
    last id."""

    uploads: tuple[UploadInfo, ...]
    more: bool = False


@dataclass(frozen=True, slots=True)
class DownloadBegin:
    name: str


@dataclass(frozen=True, slots=True)
class DownloadReady:
    """``sha256``: the SHA-256 recorded with the file (``UploadConfirm.sha256``), or None."""

    transfer_id: bytes
    data_key: bytes = field(repr=False)
    size: int
    chunk_size: int
    chunk_count: int
    crc: int
    sha256: bytes | None = None


@dataclass(frozen=True, slots=True)
class DownloadChunk:
    transfer_id: bytes
    index: int


@dataclass(frozen=True, slots=True)
class DeleteFile:
    name: str


@dataclass(frozen=True, slots=True)
class Deleted:
    name: str
    existed: bool


@dataclass(frozen=True, slots=True)
class RenameFile:
    """Give the file ``name`` the name ``new_name``; a file already called so is replaced
    only with ``replace``."""

    name: str
    new_name: str
    replace: bool = False


@dataclass(frozen=True, slots=True)
class Renamed:
    name: str
    new_name: str
    replaced: bool  # a file called new_name was there and is gone


@dataclass(frozen=True, slots=True)
class ErrorReply:
    code: ErrorCode
    message: str


# --- the legacy gateway (docs/legacy.md) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegacyRegisterRequest:
    """A trusted gateway registers a client of the legacy protocol (flagged legacy).

    ``gateway_key`` is the gateway's RSA public key (SubjectPublicKeyInfo DER), whose
    fingerprint the server operator listed as trusted; ``signature`` is the gateway's, over
    ``gateway_signed_bytes``.
    """

    gateway_key: bytes
    name: str
    timestamp: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class LegacyRegistered:
    client_id: bytes


@dataclass(frozen=True, slots=True)
class LegacyKeyRequest:
    """A trusted gateway asks for a session on behalf of a legacy client.

    First key: ``client_id`` and the client's RSA-1024 ``public_key`` are given.
    Reconnect: both are empty and the client is found by ``name``.
    """

    gateway_key: bytes
    client_id: bytes
    name: str
    public_key: bytes
    timestamp: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class LegacySessionGranted:
    """The session key is wrapped to the *gateway's* key; ``public_key`` is the legacy
    client's stored key, to which the gateway encrypts the legacy AES key."""

    client_id: bytes
    public_key: bytes
    session_id: bytes
    wrapped_key: bytes
    expires_at: int
    signature: bytes


Message = (
    RegisterRequest
    | Registered
    | ServerKeyRequest
    | ServerKey
    | KeyRequest
    | SessionGranted
    | RekeyRequest
    | Rekeyed
    | UploadBegin
    | UploadReady
    | ChunkStored
    | UploadCommit
    | UploadCommitted
    | UploadConfirm
    | UploadDone
    | ListFiles
    | FileList
    | ListUploads
    | UploadList
    | DownloadBegin
    | DownloadReady
    | DownloadChunk
    | DeleteFile
    | Deleted
    | RenameFile
    | Renamed
    | ErrorReply
    | LegacyRegisterRequest
    | LegacyRegistered
    | LegacyKeyRequest
    | LegacySessionGranted
)

# Types whose payload is chunk bytes, not a msgpack body; their envelope carries ``stream``.
DATA_TYPES = frozenset({MessageType.UPLOAD_CHUNK, MessageType.CHUNK_DATA})

_CLASS_OF: dict[MessageType, type[Message]] = {
    MessageType.REGISTER_REQUEST: RegisterRequest,
    MessageType.KEY_REQUEST: KeyRequest,
    MessageType.SERVER_KEY_REQUEST: ServerKeyRequest,
    MessageType.REKEY_REQUEST: RekeyRequest,
    MessageType.UPLOAD_BEGIN: UploadBegin,
    MessageType.UPLOAD_COMMIT: UploadCommit,
    MessageType.UPLOAD_CONFIRM: UploadConfirm,
    MessageType.LIST_FILES: ListFiles,
    MessageType.LIST_UPLOADS: ListUploads,
    MessageType.DOWNLOAD_BEGIN: DownloadBegin,
    MessageType.DOWNLOAD_CHUNK: DownloadChunk,
    MessageType.DELETE_FILE: DeleteFile,
    MessageType.RENAME_FILE: RenameFile,
    MessageType.REGISTERED: Registered,
    MessageType.SESSION_GRANTED: SessionGranted,
    MessageType.SERVER_KEY: ServerKey,
    MessageType.REKEYED: Rekeyed,
    MessageType.UPLOAD_READY: UploadReady,
    MessageType.CHUNK_STORED: ChunkStored,
    MessageType.UPLOAD_COMMITTED: UploadCommitted,
    MessageType.UPLOAD_DONE: UploadDone,
    MessageType.FILE_LIST: FileList,
    MessageType.UPLOAD_LIST: UploadList,
    MessageType.DOWNLOAD_READY: DownloadReady,
    MessageType.DELETED: Deleted,
    MessageType.RENAMED: Renamed,
    MessageType.ERROR_REPLY: ErrorReply,
    MessageType.LEGACY_REGISTER_REQUEST: LegacyRegisterRequest,
    MessageType.LEGACY_KEY_REQUEST: LegacyKeyRequest,
    MessageType.LEGACY_REGISTERED: LegacyRegistered,
    MessageType.LEGACY_SESSION_GRANTED: LegacySessionGranted,
}
_TYPE_OF: dict[type[Message], MessageType] = {cls: t for t, cls in _CLASS_OF.items()}


def carries_data(msg_type: MessageType) -> bool:
    """True for UPLOAD_CHUNK and CHUNK_DATA: payload is chunk bytes, position in ``stream``."""
    return msg_type in DATA_TYPES


def message_class(msg_type: MessageType) -> type[Message] | None:
    """The body dataclass of a control type; None for the data-carrying types."""
    return _CLASS_OF.get(msg_type)


def type_of(msg: Message) -> MessageType:
    """The envelope type that announces ``msg``."""
    msg_type = _TYPE_OF.get(type(msg))
    if msg_type is None:
        raise LocalProtocolError(f"not a control message: {type(msg).__name__}")
    return msg_type


def reply_type(request_type: MessageType) -> MessageType:
    """The successful reply type of a request type (an ErrorReply may always come instead)."""
    if request_type & 0x80:
        raise LocalProtocolError(f"{request_type.name} is not a request type")
    return MessageType(request_type | 0x80)
