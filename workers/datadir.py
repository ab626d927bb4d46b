"""The server's data directory and the two secrets it keeps outside the database.

Layout (``docs/storage.md``)::

    <data dir>/            mode 0700, created on first start
        server_key.pem     the server's long-term RSA identity, PKCS#8, mode 0600
        server_key.previous.pem  the identity before the last ``rotate-server-key``,
                           kept to endorse the new one (optional, same rules)
        master.key         32 random bytes that wrap every key in the database, mode 0600
        cipherdrop.db      the SQLite store (plus its -wal and -shm files)
        blobs/             sealed file chunks, one directory per transfer

Guarantees:

* Several workers starting at once on an empty directory end up with one server key and
  one master key: each secret is written complete under a temporary name and then
  ``link``-ed to its final name, which fails if another process got there first; the
  loser reads the winner's file.
* Secret files are created 0600 (:mod:`common.secretfile`) and refused when group or
  others may read them.
* ``CIPHERDROP_MASTER_KEY`` (64 hex digits) replaces ``master.key`` when set, so the
  master key can live in a secret manager instead of on the same disk as the database.
* :class:`MasterKey` wraps keys with AES-256-GCM, the row's role and id as associated
  data, so a wrapped key copied into another row or column does not unwrap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common import crypto, keys
from common.errors import ConfigError, IntegrityError
from common.keys import RsaKey
from common.secretfile import read_secret_file, write_secret_file

__all__ = [
    "DB_NAME",
    "MASTER_KEY_ENV",
    "DataDir",
    "MasterKey",
    "open_data_dir",
    "server_private_key",
]

DB_NAME = "cipherdrop.db"
SERVER_KEY_NAME = "server_key.pem"
PREVIOUS_SERVER_KEY_NAME = "server_key.previous.pem"
MASTER_KEY_NAME = "master.key"
BLOBS_NAME = "blobs"
MASTER_KEY_ENV = "CIPHERDROP_MASTER_KEY"
_DIR_MODE = 0o700
_WRAP_LABEL = b"cipherdrop master-wrap v1\x00"
_DIGEST_INFO = b"cipherdrop v1 request digest"


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The key that wraps every key kept in the database; never printed."""

    key: bytes = field(repr=False)
    _digest_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != crypto.KEY_SIZE:
            raise ConfigError(f"master key must be {crypto.KEY_SIZE} bytes")
        object.__setattr__(self, "_digest_key", crypto.hkdf_sha256(self.key, _DIGEST_INFO))

    def wrap(self, secret: bytes, context: bytes) -> bytes:
        """Seal ``secret`` for storage; ``context`` (e.g. ``b"session:" + id``) names its row."""
        return crypto.seal(self.key, secret, _WRAP_LABEL + context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        """Open a :meth:`wrap` blob with the same context; IntegrityError otherwise."""
        return crypto.open_sealed(self.key, blob, _WRAP_LABEL + context)

    def digest(self, data: bytes) -> bytes:
        """A keyed 16-byte digest (BLAKE2b): tells requests apart without revealing them."""
        return hashlib.blake2b(data, key=self._digest_key, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class DataDir:
    """An opened data directory: its paths and its two secrets."""

    path: Path
    server_key: RsaKey = field(repr=False)
    master: MasterKey = field(repr=False)
    previous_server_key: RsaKey | None = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        return self.path / DB_NAME

    @property
    def blobs_path(self) -> Path:
        return self.path / BLOBS_NAME

    @property
    def server_public_der(self) -> bytes:
        return keys.public_key_der(self.server_key)

    @property
    def fingerprint(self) -> str:
        return keys.fingerprint(self.server_key)


def open_data_dir(
    path: Path, rsa_bits: int = keys.DEFAULT_RSA_BITS, env: Mapping[str, str] = os.environ
) -> DataDir:
    """Open ``path``, creating it and its secrets on first start; ConfigError on trouble."""
    path = Path(path)
    try:
        path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        (path / BLOBS_NAME).mkdir(mode=_DIR_MODE, exist_ok=True)
        pem = _create_once(
            path / SERVER_KEY_NAME,
            lambda: keys.private_key_to_pem(keys.generate_private_key(rsa_bits)),
        )
        master = _master_key(path, env)
    except OSError as exc:
        raise ConfigError(f"store.data_dir: cannot use {path}: {exc.strerror or exc}") from exc
    return DataDir(
        path,
        server_private_key(path / SERVER_KEY_NAME, pem),
        master,
        previous_server_key=_previous_server_key(path),
    )


def server_private_key(path: Path, pem: bytes) -> RsaKey:
    """The server key in ``pem`` (read from ``path``); ConfigError naming the file if it
    is not a readable private key."""
    try:
        return keys.load_private_key(pem)
    except IntegrityError as exc:
        raise ConfigError(f"{path} is not a readable private key") from exc


def _previous_server_key(path: Path) -> RsaKey | None:
    """The server key before the last rotation, if it is kept (to endorse the new one)."""
    previous = path / PREVIOUS_SERVER_KEY_NAME
    try:
        return server_private_key(previous, read_secret_file(previous))
    except FileNotFoundError:
        return None


def _master_key(path: Path, env: Mapping[str, str]) -> MasterKey:
    text = env.get(MASTER_KEY_ENV)
    if text:
        try:
            return MasterKey(bytes.fromhex(text.strip()))
        except ValueError as exc:
            raise ConfigError(f"{MASTER_KEY_ENV} must be 64 hex digits (32 bytes)") from exc
    return MasterKey(_create_once(path / MASTER_KEY_NAME, crypto.random_key))


def _create_once(target: Path, make: Callable[[], bytes]) -> bytes:
    """Read ``target``, or create it with ``make()`` if no process has yet."""
    try:
        return read_secret_file(target)
    except FileNotFoundError:
        pass
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.new")
    write_secret_file(temporary, make())
    try:
        os.link(temporary, target)  # atomic, and never replaces: the first process wins
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return read_secret_file(target)
