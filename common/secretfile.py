"""Files that hold secrets (private keys, the master key): private from birth, never half-written.

What it guarantees:

* :func:`write_secret_file` creates the file with mode 0600 in the ``open`` call itself
  (``O_CREAT | O_EXCL``), so there is no moment where it exists with a wider mode, and it
  writes through a temporary file in the same directory, ``fsync`` and ``os.replace``: a
  crash leaves either the old file or the complete new one, never a truncated key.
* :func:`read_secret_file` refuses, with a :class:`~common.errors.ConfigError` naming the
  file, a secret that group or others may read or write, as OpenSSH does for private keys.
  The mode is checked on the opened descriptor, so the file cannot be swapped in between.
* A missing file raises ``FileNotFoundError`` unchanged: callers decide whether that
  means "first start, create one" or "not registered".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from common.errors import ConfigError

__all__ = ["SECRET_FILE_MODE", "read_secret_file", "replace_secret_file", "write_secret_file"]

SECRET_FILE_MODE = 0o600
_GROUP_OR_OTHER = stat.S_IRWXG | stat.S_IRWXO
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_secret_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from the first instant."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_NOFOLLOW | O_EXCL: never write through a symlink planted at the temporary name.
    fd = os.open(temporary, _CREATE_FLAGS | _NOFOLLOW, SECRET_FILE_MODE)
    try:
        try:
            # The umask can only narrow the mode; make it exactly 0600 whatever it is.
            os.fchmod(fd, SECRET_FILE_MODE)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def replace_secret_file(source: Path, target: Path) -> None:
    """Rename the secret file ``source`` over ``target`` in the same directory, durably."""
    os.replace(source, target)
    _fsync_directory(Path(target).parent)


def read_secret_file(path: Path) -> bytes:
    """Read a secret, refusing a file that group or others can access."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"secret file {path} is not a regular file")
        if mode & _GROUP_OR_OTHER:
            raise ConfigError(
                f"secret file {path} has mode {stat.S_IMODE(mode):04o}, which lets other "
                f"users at it; run: chmod 600 {path}"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
