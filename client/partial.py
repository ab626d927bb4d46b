"""A download in progress on disk: the part file and its small state file.

A download of ``NAME`` into directory ``D`` writes ``D/.NAME.cipherdrop-part`` and, next
to it, ``D/.NAME.cipherdrop-state``: a JSON record of which server file it is (transfer
id, size, chunk size and count, CRC) and how many chunks, from the first, are written and
authenticated. Chunks are written in order, so "the first ``received`` chunks" says it all.

Guarantees:

* The state is replaced atomically (written under a temporary name, then renamed), and
  it is written only after the chunks it counts have been written to the part file, so it
  never claims a chunk the part file does not hold after a crash of the client. (After
  a power cut the part file may lack data the state counts; the CRC check at the end
  then fails and the part is discarded, so a bad file is never renamed into place.)
* :meth:`PartialDownload.resume_point` is non-zero only if the state names the very
  same server file (same transfer id, size, chunk size, chunk count and CRC) and the
  part file is long enough; anything else starts over from chunk 0.
* Both files are created with mode 0600: the part file holds decrypted contents.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.messages import DownloadReady

__all__ = ["PART_SUFFIX", "STATE_SUFFIX", "PartialDownload", "part_paths"]

PART_SUFFIX = ".cipherdrop-part"
STATE_SUFFIX = ".cipherdrop-state"
_STATE_VERSION = 1
_MAX_STATE = 4096  # bytes: a state file bigger than this is not ours


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
        """Open the part file for writing (a new empty one unless resuming); its fd."""
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        if resume == 0:
            flags |= os.O_TRUNC
        self.received = resume
        return os.open(self.part, flags, 0o600)

    def save(self) -> None:
        """Record ``received`` (after the chunks it counts were written)."""
        record = {"version": _STATE_VERSION, **_identity(self.ready), "received": self.received}
        temporary = self.state.with_name(self.state.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(record).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self.state)

    def discard(self) -> None:
        """Remove the part and state files (after a failed check, or once placed)."""
        for path in (self.part, self.state):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
