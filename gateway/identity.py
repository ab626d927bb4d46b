"""The gateway's own identity and its pin of the server key, kept in the gateway directory.

* ``gateway.key``: the gateway's RSA private key (PKCS#8 PEM), created on first start with
  mode 0600 in the ``open`` call (:mod:`common.secretfile`). Its fingerprint is what the
  server operator lists in ``<data_dir>/trusted_gateways``; nothing trusts it implicitly.
* ``server.fingerprint``: the server key the gateway pinned, given by the operator or
  recorded on first use; a server showing another key is refused (ConfigError), unless
  the pinned key endorsed it (``cipherdrop-admin rotate-server-key``): the gateway then
  follows, as clients do, and records the new key.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from client.identity import canonical_fingerprint, endorses
from common import keys
from common.errors import ConfigError, IntegrityError
from common.keys import RsaKey
from common.secretfile import read_secret_file, write_secret_file

__all__ = ["KEY_NAME", "PIN_NAME", "ServerPin", "load_identity", "pin_server"]

KEY_NAME = "gateway.key"
PIN_NAME = "server.fingerprint"
_DIR_MODE = 0o700


def load_identity(directory: Path, bits: int = keys.DEFAULT_RSA_BITS) -> RsaKey:
    """The gateway's private key, made (``bits`` bits) and stored on first use."""
    try:
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        try:
            pem = read_secret_file(directory / KEY_NAME)
        except FileNotFoundError:
            pem = keys.private_key_to_pem(keys.generate_private_key(bits))
            write_secret_file(directory / KEY_NAME, pem)
    except OSError as exc:
        raise ConfigError(f"gateway directory {directory}: {exc.strerror or exc}") from exc
    try:
        return keys.load_private_key(pem)
    except IntegrityError as exc:
        raise ConfigError(f"{directory / KEY_NAME} is not a readable private key") from exc


class ServerPin(NamedTuple):
    """The server key's fingerprint, and the pinned one it replaced if that key endorsed
    the change (else None)."""

    fingerprint: str
    followed: str | None = None


def pin_server(
    directory: Path,
    server_der: bytes,
    configured: str | None,
    endorsement: tuple[bytes, bytes] | None = None,
) -> ServerPin:
    """Check the server key against the pin (configured, else recorded).

    A key the pinned one endorsed (``endorsement`` = previous key DER, its signature)
    is trusted and recorded; the caller tells the operator, whose ``configured``
    fingerprint is then out of date.
    """
    shown = keys.fingerprint(server_der)
    pin_file = directory / PIN_NAME
    if configured is not None:
        wanted = configured
    elif pin_file.exists():
        wanted = pin_file.read_text(encoding="utf-8").strip()
    else:
        write_secret_file(pin_file, f"{shown}\n".encode())  # trust on first use
        return ServerPin(shown)
    if keys.parse_fingerprint(wanted) == keys.fingerprint_digest(server_der):
        return ServerPin(shown)
    if endorses(wanted, server_der, endorsement):
        write_secret_file(pin_file, f"{shown}\n".encode())
        return ServerPin(shown, followed=canonical_fingerprint(wanted))
    raise ConfigError(
        f"the server key {shown} is not the pinned one ({canonical_fingerprint(wanted)});"
        f" check {pin_file} or --server-fingerprint"
    )
