"""``cipherdrop-admin rotate-master-key``: a new master key, stored keys re-wrapped under it;
and ``rotate-server-key``: a new server identity, endorsed by the previous one.

What is re-wrapped: session keys, the clients' latest session keys, the data keys of
uploads and files, the recorded replies and the master-key check value, all in one
transaction. File contents are not touched: they are sealed under their data keys,
which only change wrapping.

Order, so that a crash at any moment loses nothing:

1. the new key is written, complete and synced, to ``master.key.new`` (mode 0600);
2. the database transaction re-wraps everything under it and commits;
3. ``master.key`` is atomically replaced by the new key, and ``master.key.new`` removed.

A crash after 2 leaves ``master.key.new`` holding the key the database needs; running
the command again notices and finishes step 3. With ``CIPHERDROP_MASTER_KEY`` set, no
file is written: the new key is taken from ``CIPHERDROP_NEW_MASTER_KEY`` and the
operator switches the variable afterwards.

Workers keep the master key in memory, so the rotation refuses to run while any other
process has the database open (every SQLite connection in WAL mode holds a shared lock
on the ``-shm`` file; this checks for it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

from common import crypto, keys
from common.errors import ConfigError, IntegrityError, StorageError
from common.secretfile import read_secret_file, write_secret_file
from workers.admin_store import AdminStore
from workers.app import MASTER_CHECK_CONTEXT, MASTER_CHECK_KEY
from workers.datadir import (
    MASTER_KEY_ENV,
    MASTER_KEY_NAME,
    PREVIOUS_SERVER_KEY_NAME,
    SERVER_KEY_NAME,
    MasterKey,
    server_private_key,
)

__all__ = [
    "NEW_MASTER_KEY_ENV",
    "database_in_use",
    "pending_key_path",
    "rotate_master_key",
    "rotate_server_key",
]

NEW_MASTER_KEY_ENV = "CIPHERDROP_NEW_MASTER_KEY"
# SQLite's unix VFS: every connection to a WAL database holds a read lock on this byte of
# the -shm file ("DMS" slot: 120 + 8 lock bytes) for as long as it is open.
_SHM_DMS_BYTE = 128


def database_in_use(db_path: Path) -> bool:
    """True if another process has the database open (call before opening it here:
    closing a descriptor drops every lock this process holds on that file)."""
    try:
        fd = os.open(f"{db_path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the probe lock
    return False


def pending_key_path(data_dir: Path) -> Path:
    return data_dir / f"{MASTER_KEY_NAME}.new"


def _opens_check(store: AdminStore, key: MasterKey) -> bool:
    value = store.meta_value(MASTER_CHECK_KEY)
    if value is None:
        raise ConfigError("the database was never opened by a worker: nothing to rotate")
    try:
        key.unwrap(value, MASTER_CHECK_CONTEXT)
    except IntegrityError:
        return False
    return True


def _env_key(env: Mapping[str, str], name: str) -> MasterKey:
    try:
        return MasterKey(bytes.fromhex(env.get(name, "").strip()))
    except (ValueError, ConfigError):
        raise ConfigError(f"{name} must be 64 hex digits (32 bytes)") from None


def rotate_master_key(
    data_dir: Path, store: AdminStore, env: Mapping[str, str]
) -> tuple[str, dict[str, int]]:
    """Rotate; ``(what happened, re-wrapped rows per table)``. ``store`` must have been
    opened after :func:`database_in_use` said no."""
    from_env = bool(env.get(MASTER_KEY_ENV))
    old = (
        _env_key(env, MASTER_KEY_ENV)
        if from_env
        else MasterKey(read_secret_file(data_dir / MASTER_KEY_NAME))
    )
    pending = pending_key_path(data_dir)
    if not from_env and pending.exists():
        leftover = MasterKey(read_secret_file(pending))
        if _opens_check(store, leftover):
            _install(data_dir, leftover)
            return "finished an interrupted rotation", {}
        pending.unlink()
    if not _opens_check(store, old):
        raise ConfigError(f"the master key does not match the database in {data_dir}")
    new = _env_key(env, NEW_MASTER_KEY_ENV) if from_env else MasterKey(crypto.random_key())
    if not from_env:
        write_secret_file(pending, new.key)
    try:
        counts = store.rewrap_all(lambda blob, ctx: new.wrap(old.unwrap(blob, ctx), ctx))
    except IntegrityError:
        with contextlib.suppress(OSError):
            pending.unlink()
        raise StorageError(
            "a stored key does not open under the current master key (damaged database?);"
            " nothing was changed"
        ) from None
    if from_env:
        return f"re-wrapped under {NEW_MASTER_KEY_ENV}; now set {MASTER_KEY_ENV} to it", counts
    _install(data_dir, new)
    return f"new master key in {data_dir / MASTER_KEY_NAME}", counts


def rotate_server_key(data_dir: Path, rsa_bits: int) -> tuple[str, str]:
    """A new server key; the current one is kept as ``server_key.previous.pem``, from which
    the register workers sign the hand-over that clients follow. ``(previous, new)``
    fingerprints. Either file is replaced atomically; a crash between the two leaves the
    current key in both, and running the command again rotates as usual."""
    try:
        current_pem = read_secret_file(data_dir / SERVER_KEY_NAME)
    except FileNotFoundError:
        raise ConfigError(f"no server key in {data_dir}: nothing to rotate") from None
    current = server_private_key(data_dir / SERVER_KEY_NAME, current_pem)
    new = keys.generate_private_key(rsa_bits)
    write_secret_file(data_dir / PREVIOUS_SERVER_KEY_NAME, current_pem)
    write_secret_file(data_dir / SERVER_KEY_NAME, keys.private_key_to_pem(new))
    return keys.fingerprint(current), keys.fingerprint(new)


def _install(data_dir: Path, key: MasterKey) -> None:
    write_secret_file(data_dir / MASTER_KEY_NAME, key.key)  # atomic replace, synced
    with contextlib.suppress(FileNotFoundError):
        pending_key_path(data_dir).unlink()
