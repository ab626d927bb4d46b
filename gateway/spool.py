"""A received legacy file, kept encrypted on disk until it is decrypted chunk by chunk.

Why a spool: our upload begins with the exact plaintext size (``UploadBegin``), but in
dialects A and B that size is known only from the padding in the *last* ciphertext block.
So the ciphertext is written to an anonymous temporary file (mode 0600, unlinked at once,
so nothing is left behind after a crash) while it arrives; then the last block gives the
size and the padding check, and the file is decrypted and uploaded one chunk at a time.
Memory stays bounded by the chunk size; the spool holds only legacy ciphertext, whose key
exists only in the gateway's memory for the life of one connection.

Guarantees: :meth:`Spool.plaintext_size` is the single place the padding is checked and
every failure there is one :class:`IntegrityError`; :meth:`Spool.chunk` returns exactly
the plaintext bytes of chunk ``i`` under the chunking rule of docs/protocol.md 5.5.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

from common.errors import IntegrityError
from gateway.legacy_crypto import BLOCK, CbcStream, plaintext_size

__all__ = ["Spool"]


class Spool:
    """Ciphertext of one file: append while receiving, then read back decrypted, in order."""

    def __init__(self, directory: Path | None, content_size: int) -> None:
        self.content_size = content_size
        self.received = 0
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._cbc: CbcStream | None = None
        self._size = -1

    def write(self, data: bytes) -> None:
        if self.received + len(data) > self.content_size:
            raise IntegrityError()
        self._file.write(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.received == self.content_size

    def plaintext_size(self, key: bytes) -> int:
        """Check the padding; the unpadded size. IntegrityError on anything wrong."""
        if not self.complete:
            raise IntegrityError()
        tail = min(2 * BLOCK, self.content_size)
        self._file.flush()
        self._file.seek(self.content_size - tail)
        self._size = plaintext_size(key, self._file.read(tail), self.content_size)
        self._file.seek(0)
        self._cbc = CbcStream(key)
        return self._size

    def chunk(self, index: int, chunk_size: int) -> bytes:
        """Plaintext chunk ``index``; chunks must be read in order, from 0."""
        if self._cbc is None or index * chunk_size != self._file.tell():
            raise IntegrityError()
        end = min(self.content_size, (index + 1) * chunk_size)
        data = self._file.read(end - index * chunk_size)
        plain = self._cbc.decrypt(data)
        return plain[: max(0, min(chunk_size, self._size - index * chunk_size))]

    def close(self) -> None:
        self._file.close()
