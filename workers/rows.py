"""The values the store reads and writes: one frozen dataclass per kind of row.

Keys in these rows are always wrapped by the master key (``nonce || ciphertext || tag``);
times are integer milliseconds since the Unix epoch; ids are 16 bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from common.errors import StorageError

__all__ = [
    "ChunkRow",
    "ClientRow",
    "DuplicateRequest",
    "FileRow",
    "Grant",
    "NotInvited",
    "OverQuota",
    "Published",
    "Rename",
    "ReplyRecord",
    "SessionRow",
    "UnfinishedRow",
    "UploadRow",
]


class DuplicateRequest(StorageError):
    """Another process recorded a reply for this request first; nothing was changed."""


class Rename(enum.Enum):
    """Outcome of :meth:`Store.rename_file`."""

    DONE = "done"
    MISSING = "missing"  # no file of that name
    TAKEN = "taken"  # the new name is a file's, and it was not to be replaced


class NotInvited(Exception):
    """A registration needed an invite and had none that is valid; nothing was changed."""


class OverQuota(Exception):
    """A new upload would take its client past the quota; nothing was changed."""

    def __init__(self, used: int, quota: int) -> None:
        super().__init__(f"{used} bytes in use of {quota}")
        self.used = used  # by the client's files and unfinished uploads
        self.quota = quota  # the client's own, or the server's


class Grant(enum.Enum):
    """Outcome of a change of key: :meth:`Store.grant_session`, :meth:`Store.rekey_client`."""

    GRANTED = "granted"
    KEY_MISMATCH = "key-mismatch"  # the client holds another key, or is gone or revoked
    NONCE_REPLAYED = "nonce-replayed"


@dataclass(frozen=True, slots=True)
class Published:
    """Outcome of :meth:`Store.publish_upload`: ``done`` False means it was not committed
    (nothing changed); ``replaced`` is the transfer id of the file it replaced."""

    done: bool
    replaced: bytes | None


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """The reply to remember for ``(client_id, request_id)``; ``reply`` is master-sealed."""

    client_id: bytes
    request_id: bytes
    digest: bytes
    reply: bytes


@dataclass(frozen=True, slots=True)
class ClientRow:
    id: bytes
    name: str
    public_key: bytes | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: bytes
    client_id: bytes
    session_key: bytes  # wrapped
    expires_at: int
    revoked: bool  # the client's flag, read with the session


@dataclass(frozen=True, slots=True)
class UploadRow:
    transfer_id: bytes
    client_id: bytes
    name: str
    size: int
    chunk_size: int
    chunk_count: int
    data_key: bytes  # wrapped
    state: str = "open"
    crc: int | None = None


@dataclass(frozen=True, slots=True)
class UnfinishedRow:
    """An upload not yet confirmed, as its client sees it listed."""

    transfer_id: bytes
    name: str
    size: int
    held: int  # plaintext bytes of its stored chunks
    created_at: int


@dataclass(frozen=True, slots=True)
class ChunkRow:
    index: int
    stored_size: int
    plain_size: int
    crc_part: int


@dataclass(frozen=True, slots=True)
class FileRow:
    name: str
    location: str
    verified: bool
    size: int
    crc: int
    sha256: bytes | None
    uploaded_at: int
    data_key: bytes  # wrapped
    transfer_id: bytes
    chunk_size: int
    chunk_count: int
    source: bytes = b""  # the upload's source token (UploadBegin.source)
