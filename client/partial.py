"""A download in progress on disk: the part file and its small state file.

A download of ``NAME`` into directory ``D`` writes ``D/.NAME.cipherdrop-part`` and, next
to it, ``D/.NAME.cipherdrop-state``: a JSON record of which server file it is (transfer
id, size, chunk size and count, CRC) and how many chunks, from the first, are written and
authenticated. Chunks are written in order, so "the first ``received`` chunks" says it all.

Guarantees:

* The state is one record of :data:`STATE_SIZE` bytes, overwritten in place by a single
  write at offset 0 (never truncated, never renamed): a killed client leaves the old
  record or the new one. It is written only after the chunks it counts have been
  written to the part file, so it never claims a chunk the part file does not hold after
  a crash of the client. (After a power cut the part file may lack data the state
  counts, or the record may be torn: a record that does not parse starts the download
  over, and a CRC mismatch at the end discards the part, so a bad file is never renamed
  into place.) Replacing the record by rename instead cost up to 25 ms per update on
  ext4, whose replace-by-rename rule flushes the new file while the download's own
  writeback fills the disk queue: about a second per GiB on the writer thread.
* :meth:`PartialDownload.resume_point` is non-zero only if the state names the very
  same server file (same transfer id, size, chunk size, chunk count and CRC) and the
  part file is long enough; anything else starts over from chunk 0.
* Both files are created with mode 0600: the part file holds decrypted contents.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import preallocate
from common.messages import DownloadReady

__all__ = ["PART_SUFFIX", "STATE_SIZE", "STATE_SUFFIX", "PartialDownload", "part_paths"]

PART_SUFFIX = ".cipherdrop-part"
STATE_SUFFIX = ".cipherdrop-state"
_STATE_VERSION = 1
_MAX_STATE = 4096  # bytes: a state file bigger than this is not ours
STATE_SIZE = 512  # the record, space-padded: one write within one disk sector


def part_paths(target: Path) -> tuple[Path, Path]:
    """``(part file, state file)`` of a download into ``target``."""
    return (
        target.with_name(f".{target.name}{PART_SUFFIX}"),
        target.with_name(f".{target.name}{STATE_SUFFIX}"),
    )


def _identity(ready: DownloadReady) -> dict[str, Any]:
    return {
        "transfer_id": ready.transfer_id.hex(),
        "size": ready.size,
        "chunk_size": ready.chunk_size,
        "chunk_count": ready.chunk_count,
        "crc": ready.crc,
    }


@dataclass
class PartialDownload:
    """The part and state files of one download into ``target``."""

    target: Path
    ready: DownloadReady
    received: int = 0  # chunks 0 .. received-1 are written and authenticated
    _state_fd: int | None = field(default=None, repr=False)

    @property
    def part(self) -> Path:
        return part_paths(self.target)[0]

    @property
    def state(self) -> Path:
        return part_paths(self.target)[1]

    def resume_point(self) -> int:
        """Chunks already here from an earlier run of the same download (0 if none)."""
        try:
            with self.state.open("rb") as stream:
                record = json.loads(stream.read(_MAX_STATE))
            received = record["received"]
            same = record.get("version") == _STATE_VERSION and all(
                record.get(key) == value for key, value in _identity(self.ready).items()
            )
            part_size = self.part.stat().st_size
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        if not same or type(received) is not int or not 0 <= received <= self.ready.chunk_count:
            return 0
        if part_size < self.offset(received):
            return 0
        return received

    def offset(self, index: int) -> int:
        """Where chunk ``index`` starts in the file."""
        return min(index * self.ready.chunk_size, self.ready.size)

    def open_part(self, resume: int) -> int:
        """Open the part file for writing (a new empty one unless resuming), with the
        file's disk space reserved where the file system can (common.preallocate); its fd.
        OSError if it cannot be opened or the space is not there."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if resume == 0:
            flags |= os.O_TRUNC
        self.received = resume
        fd = os.open(self.part, flags, 0o600)
        try:  # the whole file's space now: a full disk shows before anything is fetched
            preallocate.reserve(fd, 0, self.ready.size)
        except OSError:
            os.close(fd)
            raise
        return fd

    def save(self) -> None:
        """Record ``received`` (after the chunks it counts were written)."""
        record = {"version": _STATE_VERSION, **_identity(self.ready), "received": self.received}
        if self._state_fd is None:  # emptied once, then only ever overwritten
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
            self._state_fd = os.open(self.state, flags, 0o600)
        os.pwrite(self._state_fd, json.dumps(record).encode().ljust(STATE_SIZE), 0)

    def close(self) -> None:
        """Close the state file (it stays for a later run to resume from)."""
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None

    def discard(self) -> None:
        """Remove the part and state files (after a failed check, or once placed)."""
        self.close()
        for path in (self.part, self.state):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
