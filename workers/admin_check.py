"""``cipherdrop-admin check``: prove that every stored file can still be read back intact.

For each visible file, every chunk must be on disk, open under the file's data key (which
must itself open under the master key) at its index with the right final flag, decompress
to exactly the recorded plaintext size, and give the recorded CRC part; the parts joined
must give the file's recorded POSIX ``cksum`` and the sizes its size; a file put with a
SHA-256 must hash to it. Any failure is reported for that file with the first chunk and
reason, and checking goes on with the next chunk and file. Nothing is written; contents
are never printed or logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from common import crypto
from common.compress import Buffer, decompress_chunk
from common.errors import IntegrityError, RemoteProtocolError, StorageError
from workers.admin_store import AdminStore, StoredFile
from workers.blobs import Blobs
from workers.crc_combine import chunk_part, combine
from workers.datadir import MasterKey
from workers.store import ChunkRow
from workers.uploads import chunk_aad, data_key_context, open_sha256

__all__ = ["FileReport", "check_file", "plaintext"]


@dataclass(frozen=True, slots=True)
class FileReport:
    file: StoredFile
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class _ChunkProblem(Exception):
    pass


def _data_key(master: MasterKey, file: StoredFile) -> bytes:
    try:
        return master.unwrap(file.data_key, data_key_context(file.transfer_id))
    except IntegrityError:
        raise _ChunkProblem("the data key does not open under the master key") from None


def _open(blobs: Blobs, key: bytes, file: StoredFile, row: ChunkRow) -> Buffer:
    """The plaintext of one chunk, checked against its row; _ChunkProblem otherwise."""
    where = f"chunk {row.index}"
    try:
        codec, sealed = blobs.read(file.transfer_id, row.index)
    except StorageError:
        raise _ChunkProblem(f"{where}: missing or unreadable on disk") from None
    final = row.index == file.chunk_count - 1
    try:
        compressed = crypto.open_chunk(
            key, row.index, final, sealed, aad=chunk_aad(file.transfer_id, codec)
        )
    except IntegrityError:
        raise _ChunkProblem(f"{where}: does not authenticate (altered or damaged)") from None
    try:
        plain = decompress_chunk(codec, compressed, file.chunk_size)
    except RemoteProtocolError:
        raise _ChunkProblem(f"{where}: does not decompress") from None
    if len(plain) != row.plain_size:
        raise _ChunkProblem(f"{where}: {len(plain)} bytes, recorded {row.plain_size}")
    return plain


def _rows(store: AdminStore, file: StoredFile) -> list[ChunkRow]:
    rows = store.chunks(file.transfer_id)
    if [row.index for row in rows] != list(range(file.chunk_count)):
        raise _ChunkProblem(f"{len(rows)} of {file.chunk_count} chunk rows recorded")
    return rows


def check_file(store: AdminStore, blobs: Blobs, master: MasterKey, file: StoredFile) -> FileReport:
    """Check one file; see the module docstring."""
    problems: list[str] = []
    parts: list[tuple[int, int]] = []
    digest = hashlib.sha256()
    try:
        key = _data_key(master, file)
        rows = _rows(store, file)
    except _ChunkProblem as exc:
        return FileReport(file, (str(exc),))
    for row in rows:
        try:
            plain = _open(blobs, key, file, row)
        except _ChunkProblem as exc:
            problems.append(str(exc))
            continue
        part = chunk_part(plain)
        if part != row.crc_part:
            problems.append(f"chunk {row.index}: CRC part differs from the recorded one")
        parts.append((part, len(plain)))
        if file.sha256 is not None:
            digest.update(plain)
    if not problems:
        if sum(length for _, length in parts) != file.size:
            problems.append(f"the chunks hold {sum(n for _, n in parts)} bytes, not {file.size}")
        elif combine(parts) != file.crc:
            problems.append(f"cksum {combine(parts)} differs from the recorded {file.crc}")
        elif file.sha256 is not None:
            problems.extend(_sha256_problem(key, file, digest.digest()))
    return FileReport(file, tuple(problems))


def _sha256_problem(key: bytes, file: StoredFile, found: bytes) -> list[str]:
    try:
        recorded = open_sha256(key, file.transfer_id, file.sha256)
    except IntegrityError:
        return ["the recorded SHA-256 does not open under the data key"]
    if recorded != found:
        return ["the contents' SHA-256 differs from the recorded one"]
    return []


def plaintext(
    store: AdminStore, blobs: Blobs, master: MasterKey, file: StoredFile
) -> Iterator[Buffer]:
    """The file's contents, chunk by chunk, checked as :func:`check_file` checks them;
    IntegrityError at the first chunk that fails."""
    try:
        key = _data_key(master, file)
        for row in _rows(store, file):
            yield _open(blobs, key, file, row)
    except _ChunkProblem as exc:
        raise IntegrityError(f"{file.client_name}/{file.name}: {exc}") from None
