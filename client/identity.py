"""The client's home directory: who we are, which server we trust, our private key.

Layout of ``CIPHERDROP_HOME`` (default ``~/.cipherdrop``)::

    <home>/              mode 0700, created on first use
        identity.json    name, client id (hex), server endpoint, server fingerprint
        private_key.pem  PKCS#8 PEM, mode 0600 from birth, optionally under a passphrase
        private_key.pem.next  the new key while ``cipherdrop rekey`` runs (same rules)
        source.key       from the first rekey on: the key of the source tokens, 0600
        known_servers    one "<endpoint> <fingerprint>" line per trusted server (TOFU)

Guarantees:

* The private key is written through :mod:`common.secretfile` (0600 in the ``open`` call,
  atomic replace) and read back only if group and others cannot access it.
* The identity file is replaced atomically, so a crash leaves the old one or the new one.
* A new key is written to ``private_key.pem.next`` before the server hears of it and
  takes the place of the old one only once the server has moved the client to it; an
  interrupted ``rekey`` leaves both files, and running it again finishes the change.
* :func:`pin_server` is the only trust decision: a fingerprint given by the user (or the
  identity) must match; otherwise the one in ``known_servers`` must match; otherwise the
  key is trusted on first use and recorded. Another key is trusted only if the pinned key
  signed the hand-over to it (``rotate-server-key``); any other mismatch raises
  :class:`ServerKeyMismatchError` naming both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from common import keys
from common.codec import server_key_endorsement_bytes
from common.errors import ConfigError, IntegrityError, RemoteProtocolError
from common.keys import RsaKey
from common.secretfile import read_secret_file, replace_secret_file, write_secret_file

__all__ = [
    "HOME_MODE",
    "Identity",
    "NotRegisteredError",
    "Pinned",
    "ServerKeyMismatchError",
    "adopt_next_key",
    "canonical_fingerprint",
    "endorses",
    "ensure_home",
    "is_encrypted_pem",
    "keep_source_secret",
    "known_server",
    "load_identity",
    "load_next_key",
    "load_private_key",
    "load_source_secret",
    "pin_server",
    "remember_server",
    "replace_server",
    "save_identity",
    "save_next_key",
    "save_private_key",
    "update_server_fingerprint",
]

HOME_MODE = 0o700
IDENTITY_FILE = "identity.json"
PRIVATE_KEY_FILE = "private_key.pem"
NEXT_KEY_FILE = "private_key.pem.next"
SOURCE_KEY_FILE = "source.key"
_SOURCE_KEY_LEN = 32
KNOWN_SERVERS_FILE = "known_servers"
_MAX_FILE = 1024 * 1024


class NotRegisteredError(ConfigError):
    """The home directory holds no identity: ``cipherdrop register`` has not been run."""


class ServerKeyMismatchError(IntegrityError):
    """The server presented a key other than the pinned one (possible interception)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A registered client as stored in its home (the private key is loaded separately)."""

    name: str
    client_id: bytes
    server: str
    server_fingerprint: str
    home: Path = field(compare=False)


def ensure_home(home: Path) -> Path:
    """Create ``home`` with mode 0700 if it is missing; refuse a non-directory."""
    home = Path(home)
    if home.exists() and not home.is_dir():
        raise ConfigError(f"client.home: {home} is not a directory")
    try:
        home.mkdir(mode=HOME_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"client.home: cannot create {home}: {exc.strerror or exc}") from exc
    return home


def save_identity(identity: Identity, private_key: RsaKey, passphrase: str | None) -> None:
    """Write the private key (0600) and then the identity file into ``identity.home``."""
    home = ensure_home(identity.home)
    save_private_key(home, private_key, passphrase)
    _write_identity(identity)


def _write_identity(identity: Identity) -> None:
    record = {
        "name": identity.name,
        "client_id": identity.client_id.hex(),
        "server": identity.server,
        "server_fingerprint": identity.server_fingerprint,
    }
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    # Not secret, but written the same atomic way so a crash never leaves half a file.
    write_secret_file(identity.home / IDENTITY_FILE, text.encode())


def load_identity(home: Path) -> Identity:
    """The identity stored in ``home``; NotRegisteredError if there is none."""
    path = Path(home) / IDENTITY_FILE
    try:
        data = _read_small(path)
    except FileNotFoundError:
        raise NotRegisteredError(
            f"not registered: no identity in {home} (run: cipherdrop register NAME)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        record = json.loads(data)
        identity = Identity(
            name=str(record["name"]),
            client_id=bytes.fromhex(record["client_id"]),
            server=str(record["server"]),
            server_fingerprint=str(record["server_fingerprint"]),
            home=Path(home),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"identity file {path} is damaged: {exc}") from exc
    if len(identity.client_id) != 16:
        raise ConfigError(f"identity file {path} is damaged: client id is not 16 bytes")
    return identity


def is_encrypted_pem(home: Path) -> bool:
    """True if the stored private key is under a passphrase."""
    return b"ENCRYPTED" in _key_pem(home).split(b"\n", 1)[0]


def load_private_key(home: Path, passphrase: str | None) -> RsaKey:
    """The client's private key; a wrong or missing passphrase is a clear ConfigError."""
    pem = _key_pem(home)
    try:
        return keys.load_private_key(pem, passphrase)
    except IntegrityError as exc:
        hint = "wrong passphrase" if passphrase else "it may need a passphrase (--passphrase)"
        raise ConfigError(f"cannot load {home / PRIVATE_KEY_FILE}: {hint}") from exc


def save_private_key(
    home: Path, private_key: RsaKey, passphrase: str | None, name: str = PRIVATE_KEY_FILE
) -> None:
    """Replace the client's private key file (0600, atomically), under ``passphrase``;
    ``name`` :data:`NEXT_KEY_FILE` keeps the key a rekey is moving to."""
    write_secret_file(Path(home) / name, keys.private_key_to_pem(private_key, passphrase))


def save_next_key(home: Path, private_key: RsaKey, passphrase: str | None) -> None:
    """Keep the key a rekey is moving to (0600, under the same passphrase as the old)."""
    save_private_key(home, private_key, passphrase, NEXT_KEY_FILE)


def load_next_key(home: Path, passphrase: str | None) -> RsaKey | None:
    """The key of a rekey begun and not finished, if there is one."""
    path = Path(home) / NEXT_KEY_FILE
    try:
        pem = read_secret_file(path)
    except FileNotFoundError:
        return None
    try:
        return keys.load_private_key(pem, passphrase)
    except IntegrityError as exc:
        raise ConfigError(f"cannot load {path}: damaged, or not under this passphrase") from exc


def adopt_next_key(home: Path) -> None:
    """The new key becomes the client's key (the server has moved the client to it)."""
    replace_secret_file(Path(home) / NEXT_KEY_FILE, Path(home) / PRIVATE_KEY_FILE)


def load_source_secret(home: Path) -> bytes | None:
    """The key of the source tokens kept since the client's first rekey, if any (until
    then it is derived from the private key)."""
    path = Path(home) / SOURCE_KEY_FILE
    try:
        secret = read_secret_file(path)
    except FileNotFoundError:
        return None
    if len(secret) != _SOURCE_KEY_LEN:
        raise ConfigError(f"{path} is damaged: not {_SOURCE_KEY_LEN} bytes")
    return secret


def keep_source_secret(home: Path, secret: bytes) -> None:
    """Keep the key of the source tokens before the key pair it came from is replaced,
    so tokens of files put before stay valid (0600; kept as it is if already there)."""
    if not (Path(home) / SOURCE_KEY_FILE).exists():
        write_secret_file(Path(home) / SOURCE_KEY_FILE, secret)


def known_server(home: Path, endpoint: str) -> str | None:
    """The fingerprint recorded for ``endpoint`` in ``known_servers``, if any."""
    try:
        text = _read_small(Path(home) / KNOWN_SERVERS_FILE).decode()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and not parts[0].startswith("#") and parts[0] == endpoint:
            return parts[1]
    return None


def remember_server(home: Path, endpoint: str, fingerprint: str) -> None:
    """Append ``endpoint fingerprint`` to ``known_servers``."""
    home = ensure_home(home)
    if any(c.isspace() for c in endpoint):
        raise ConfigError(f"client.server: endpoint {endpoint!r} contains whitespace")
    fd = os.open(home / KNOWN_SERVERS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as stream:
        stream.write(f"{endpoint} {fingerprint}\n")


@dataclass(frozen=True, slots=True)
class Pinned:
    """The outcome of :func:`pin_server`: the fingerprint, whether it was new, and the
    pinned fingerprint it replaced if the pinned key endorsed it (else None)."""

    fingerprint: str
    first_use: bool
    followed: str | None = None


def pin_server(
    home: Path,
    endpoint: str,
    server_der: bytes,
    expected: str | None,
    endorsement: tuple[bytes, bytes] | None = None,
) -> Pinned:
    """Decide whether to trust the server key ``server_der`` for ``endpoint``.

    ``expected`` (from a flag, the config or the identity) wins; then ``known_servers``;
    then trust on first use, which records the key. Another key than the pinned one is
    trusted only with ``endorsement`` = (pinned key DER, its signature over
    ``server_key_endorsement_bytes``): the server changed its key and the key we trust
    says so; ``known_servers`` then records the new one. Nothing is recorded unless the
    key is trusted.
    """
    actual = keys.fingerprint(server_der)
    pinned = expected or known_server(home, endpoint)
    if pinned:
        if keys.parse_fingerprint(pinned) != keys.fingerprint_digest(server_der):
            if endorses(pinned, server_der, endorsement):
                replace_server(home, endpoint, actual)
                return Pinned(actual, first_use=False, followed=canonical_fingerprint(pinned))
            where = (
                "check the fingerprint you gave"
                if expected
                else f"if the server's key really changed, remove its line from"
                f" {Path(home) / KNOWN_SERVERS_FILE}"
            )
            raise ServerKeyMismatchError(
                f"server key mismatch for {endpoint}: expected {canonical_fingerprint(pinned)},"
                f" the server presented {actual} (possible interception); {where}"
            )
        if known_server(home, endpoint) is None:
            remember_server(home, endpoint, actual)
        return Pinned(actual, first_use=False)
    remember_server(home, endpoint, actual)
    return Pinned(actual, first_use=True)


def endorses(pinned: str, server_der: bytes, endorsement: tuple[bytes, bytes] | None) -> bool:
    """True if the key of fingerprint ``pinned`` signed its hand-over to ``server_der``
    (``endorsement`` = its DER and the signature, from a ``ServerKey`` reply)."""
    if endorsement is None:
        return False
    previous_der, signature = endorsement
    if keys.fingerprint_digest(previous_der) != keys.parse_fingerprint(pinned):
        return False
    signed = server_key_endorsement_bytes(previous_der, server_der)
    try:
        keys.verify(keys.load_public_key(previous_der), signed, signature)
    except (IntegrityError, RemoteProtocolError):
        return False
    return True


def replace_server(home: Path, endpoint: str, fingerprint: str) -> None:
    """Make ``fingerprint`` the one ``known_servers`` records for ``endpoint``: its other
    lines go (atomically), then the new one is appended."""
    path = Path(home) / KNOWN_SERVERS_FILE
    try:
        lines = _read_small(path).decode().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.split(maxsplit=1)[:1] != [endpoint]]
    if kept != lines:
        write_secret_file(path, "".join(kept).encode())
    remember_server(home, endpoint, fingerprint)


def update_server_fingerprint(identity: Identity, fingerprint: str) -> Identity:
    """The identity with the server fingerprint it now pins, written back atomically."""
    updated = dataclasses.replace(identity, server_fingerprint=fingerprint)
    _write_identity(updated)
    return updated


def canonical_fingerprint(text: str) -> str:
    """A fingerprint typed in any accepted form, written the way :func:`keys.fingerprint` is."""
    hexdigits = keys.parse_fingerprint(text).hex()
    return "SHA256:" + " ".join(hexdigits[i : i + 4] for i in range(0, len(hexdigits), 4))


def _key_pem(home: Path) -> bytes:
    path = Path(home) / PRIVATE_KEY_FILE
    try:
        return read_secret_file(path)
    except FileNotFoundError:
        raise NotRegisteredError(
            f"not registered: no private key in {home} (run: cipherdrop register NAME)"
        ) from None


def _read_small(path: Path) -> bytes:
    with path.open("rb") as stream:
        data = stream.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise ConfigError(f"{path} is larger than {_MAX_FILE} bytes")
    return data
