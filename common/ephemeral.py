"""Forward secrecy for sessions: an X25519 exchange of one-use keys inside the key exchange.

Each key exchange, client and server each make an X25519 key pair used for that exchange
only (:class:`Ephemeral`) and send its public half, signed with the rest of their message.
The session key is then :func:`session_key`: HKDF-SHA256 of the X25519 shared secret and
the 32 bytes the server wrapped to the client's RSA key. Whoever later obtains the
client's RSA private key and a recording of the exchange can unwrap the second part but
not compute the first (nor can the server's key, which opens only the key request): the
one-use private keys existed only in the two processes' memory during the exchange.

Guarantees: a public key is exactly 32 bytes; an exchange that gives the all-zero shared
secret (a peer key of small order, which would let it choose the secret) is refused
with ``IntegrityError``, as RFC 7748 section 6.1 allows.
"""

from __future__ import annotations

import hmac

from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.PublicKey import ECC

from common.crypto import hkdf_sha256
from common.errors import IntegrityError

__all__ = ["PUBLIC_KEY_LEN", "Ephemeral", "session_key"]

PUBLIC_KEY_LEN = 32
_SESSION_KEY_INFO = b"cipherdrop v1 session key"
_ZERO = bytes(32)


class Ephemeral:
    """One X25519 key pair, for one key exchange."""

    def __init__(self, private: bytes | None = None) -> None:
        """A fresh key pair; ``private`` (32 bytes) only for known-answer tests."""
        if private is None:
            self._key = ECC.generate(curve="curve25519")
        else:
            self._key = import_x25519_private_key(private)
        self.public = bytes(self._key.public_key().export_key(format="raw"))

    def agree(self, peer_public: bytes) -> bytes:
        """The 32-byte X25519 shared secret with ``peer_public``; IntegrityError if the
        peer's key is not one (wrong length, not on the curve, or of small order)."""
        if len(peer_public) != PUBLIC_KEY_LEN:
            raise IntegrityError("bad ephemeral key")
        try:
            peer = import_x25519_public_key(peer_public)
            shared = bytes(key_agreement(static_priv=self._key, static_pub=peer, kdf=_raw))
        except ValueError:
            raise IntegrityError("bad ephemeral key") from None
        if hmac.compare_digest(shared, _ZERO):
            raise IntegrityError("bad ephemeral key")
        return shared


def _raw(secret: bytes) -> bytes:
    return secret


def session_key(shared: bytes, wrapped_secret: bytes, session_id: bytes) -> bytes:
    """The session key: HKDF-SHA256(ikm = X25519 secret || RSA-wrapped secret,
    salt = session id, info = "cipherdrop v1 session key"), 32 bytes."""
    return hkdf_sha256(shared + wrapped_secret, _SESSION_KEY_INFO, salt=session_id)
