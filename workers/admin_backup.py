"""``cipherdrop-admin backup PATH``: a consistent copy of the database and file contents,
taken while the server runs.

The database is copied first, as one snapshot (SQLite's online backup API); then the
contents of every file in that snapshot are copied. A file's chunks never change once it
is visible, so the copy matches the snapshot, except for files deleted or
replaced while the copy ran: their contents may be gone by the time they are copied,
and they are dropped from the copied database (reported as "changed during backup").
Unfinished uploads are dropped from the copy too. The copy is a directory laid out like
a data directory (``docs/operations.md``), mode 0700, files 0600.

Keys are NOT in the backup unless ``with_keys``: the database alone reveals no key and
no contents, and the master key is better kept apart from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, StorageError
from common.secretfile import read_secret_file, write_secret_file
from workers.admin_store import AdminStore
from workers.blobs import Blobs
from workers.datadir import (
    BLOBS_NAME,
    DB_NAME,
    MASTER_KEY_NAME,
    PREVIOUS_SERVER_KEY_NAME,
    SERVER_KEY_NAME,
    DataDir,
)

__all__ = ["BackupResult", "backup"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class BackupResult:
    files: int
    chunks: int
    dropped: tuple[str, ...]  # files deleted or replaced while the backup ran
    damaged: tuple[str, ...]  # files whose contents were missing in the data dir
    with_keys: bool


def _new_directory(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"backup target {target} exists and is not an empty directory")
    try:
        target.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        (target / BLOBS_NAME).mkdir(mode=_DIR_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot create {target}: {exc.strerror or exc}") from exc


def backup(data: DataDir, store: AdminStore, target: Path, with_keys: bool) -> BackupResult:
    """Write the backup; see the module docstring."""
    _new_directory(target)
    db_copy = target / DB_NAME
    os.close(os.open(db_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE))
    store.backup_to(db_copy)
    snapshot = AdminStore.open(db_copy)
    source = Blobs(data.blobs_path, background_sync=False)
    copy = Blobs(target / BLOBS_NAME, background_sync=False)
    try:
        chunks, gone, damaged, dropped = 0, set(), [], []
        for file in snapshot.stored_files():
            label = f"{file.client_name}/{file.name}"
            try:
                source.copy_to(file.transfer_id, copy)
                chunks += file.chunk_count
            except FileNotFoundError:
                copy.remove(file.transfer_id)
                live = {f.transfer_id for f in store.stored_files(file.client_id)}
                if file.transfer_id in live:
                    damaged.append(label)  # still visible, contents missing: keep the row
                else:
                    gone.add(file.transfer_id)
                    dropped.append(label)
            except OSError as exc:
                raise StorageError(f"cannot copy {label}: {exc.strerror or exc}") from exc
        snapshot.forget_transfers(gone)
        count = len(snapshot.stored_files())
        snapshot.make_standalone()
    finally:
        snapshot.close()
        copy.close()
        source.close()
    if with_keys:
        write_secret_file(target / SERVER_KEY_NAME, read_secret_file(data.path / SERVER_KEY_NAME))
        write_secret_file(target / MASTER_KEY_NAME, data.master.key)
        if (data.path / PREVIOUS_SERVER_KEY_NAME).exists():  # it endorses the current key
            previous = read_secret_file(data.path / PREVIOUS_SERVER_KEY_NAME)
            write_secret_file(target / PREVIOUS_SERVER_KEY_NAME, previous)
    return BackupResult(count, chunks, tuple(dropped), tuple(damaged), with_keys)
