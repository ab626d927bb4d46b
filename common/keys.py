"""RSA identities: key pairs, OAEP key wrapping, PSS signatures, fingerprints, PEM files.

What it guarantees:

* Keys are at least :data:`MIN_RSA_BITS` (2048) bits; :data:`DEFAULT_RSA_BITS` is 3072.
  A public key from the network is accepted only as canonical X.509
  SubjectPublicKeyInfo DER of an RSA key of 2048..8192 bits with exponent 65537; anything
  else is the peer's fault (:class:`~common.errors.RemoteProtocolError`). The one
  exception, :func:`load_legacy_public_key`, serves only the legacy protocol (RSA-1024).
* Wrapping is RSA-OAEP with SHA-256 and MGF1-SHA256 (empty label); signatures are
  RSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt.
* Every failure to unwrap, verify, open or load (wrong passphrase, junk) is the one
  opaque :class:`~common.errors.IntegrityError`, so no answer tells an attacker which
  check failed (no padding oracle).
* A fingerprint is ``"SHA256:"`` followed by the SHA-256 of the public key DER as 16
  space-separated groups of 4 lowercase hex digits; :func:`parse_fingerprint` reads that
  back tolerating case, spaces, colons and dashes.
* Private keys serialise as PKCS#8 PEM, encrypted with scrypt and AES-256-CBC when a
  passphrase is given. Writing them to disk with mode 0600 is :mod:`common.secretfile`'s job.
"""

from __future__ import annotations

import hashlib
import math
import re

from Crypto.Cipher import PKCS1_OAEP
from Crypto.Hash import SHA256
from Crypto.IO import PEM, PKCS8
from Crypto.PublicKey import RSA
from Crypto.PublicKey.RSA import RsaKey
from Crypto.Signature import pss
from Crypto.Util.asn1 import DerSequence

from common import crypto
from common.errors import ConfigError, IntegrityError, RemoteProtocolError

__all__ = [
    "DEFAULT_RSA_BITS",
    "LEGACY_EXPONENTS",
    "LEGACY_RSA_BITS",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "RsaKey",
    "fingerprint",
    "fingerprint_digest",
    "generate_private_key",
    "load_legacy_public_key",
    "load_private_key",
    "load_public_key",
    "open_with_private_key",
    "parse_fingerprint",
    "private_key_to_pem",
    "public_key_der",
    "seal_to_public_key",
    "sign",
    "typed_hex",
    "unwrap_key",
    "verify",
    "wrap_key",
]

MIN_RSA_BITS = 2048
DEFAULT_RSA_BITS = 3072
# A stranger's 16384-bit key would make every operation with it cost a hundred times more.
MAX_RSA_BITS = 8192
_PUBLIC_EXPONENT = 65537
# The legacy protocol's keys (docs/legacy.md): RSA-1024; the originals' library makes them
# with e = 17, which is why their SubjectPublicKeyInfo is exactly 160 bytes.
LEGACY_RSA_BITS = 1024
LEGACY_EXPONENTS = frozenset({3, 17, 65537})
# SubjectPublicKeyInfo of an 8192-bit key is about 1.05 KB; refuse to parse more.
_MAX_PUBLIC_DER = 2048
_PEM_PROTECTION = "scryptAndAES256-CBC"
_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # rsaEncryption, the PKCS#8 algorithm of an RSA key
# Spelled out so the strength does not depend on the library version's defaults:
# scrypt N=2^17, r=8, p=1 (128 MiB, about half a second) and a 16-byte salt.
_PEM_SCRYPT_PARAMS = {
    "iteration_count": 2**17,
    "block_size": 8,
    "parallelization": 1,
    "salt_size": 16,
}
_FINGERPRINT_PREFIX = "SHA256:"
_FINGERPRINT_SEPARATORS = re.compile(r"[\s:\-]")


def generate_private_key(bits: int = DEFAULT_RSA_BITS) -> RsaKey:
    """A new RSA key pair (about a second for 3072 bits)."""
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise ConfigError(
            f"RSA key size {bits} bits is out of range: use {MIN_RSA_BITS}..{MAX_RSA_BITS}"
        )
    try:
        return RSA.generate(bits, e=_PUBLIC_EXPONENT)
    except ValueError as exc:
        raise ConfigError(f"RSA key size {bits} bits is not supported: {exc}") from exc


def public_key_der(key: RsaKey) -> bytes:
    """The X.509 SubjectPublicKeyInfo DER of ``key`` (public half only)."""
    return key.public_key().export_key(format="DER")


def load_public_key(der: bytes, *, min_bits: int = MIN_RSA_BITS) -> RsaKey:
    """Parse a public key received from a peer; strict, canonical SubjectPublicKeyInfo DER."""
    key = _load_canonical(der, "public key")
    bits = key.size_in_bits()
    if not min_bits <= bits <= MAX_RSA_BITS:
        raise RemoteProtocolError(
            f"RSA public key of {bits} bits is outside {min_bits}..{MAX_RSA_BITS}"
        )
    if key.e != _PUBLIC_EXPONENT:
        raise RemoteProtocolError(f"RSA public exponent must be {_PUBLIC_EXPONENT}")
    return key


def load_legacy_public_key(der: bytes) -> RsaKey:
    """Parse a legacy-protocol client's key: canonical DER of RSA-1024, e = 3, 17 or 65537.

    The one place RSA-1024 is accepted (the legacy gateway and the server's legacy key
    exchange, docs/legacy.md); every other key goes through :func:`load_public_key`, whose
    floor is 2048 bits. Anything else is :class:`~common.errors.RemoteProtocolError`.
    """
    key = _load_canonical(der, "legacy public key")
    if key.size_in_bits() != LEGACY_RSA_BITS or key.e not in LEGACY_EXPONENTS:
        raise RemoteProtocolError("legacy public key must be RSA-1024 with e = 3, 17 or 65537")
    return key


def _load_canonical(der: bytes, what: str) -> RsaKey:
    if len(der) > _MAX_PUBLIC_DER:
        raise RemoteProtocolError(f"{what} is too long")
    try:
        key = RSA.import_key(der)
    except (ValueError, IndexError, TypeError) as exc:
        raise RemoteProtocolError(f"{what} is not valid RSA SubjectPublicKeyInfo DER") from exc
    # Re-encoding must give the same bytes: this rejects PEM, PKCS#1, private keys and
    # trailing junk, so one key has exactly one encoding and one fingerprint.
    if key.has_private() or key.export_key(format="DER") != der:
        raise RemoteProtocolError(f"{what} is not canonical SubjectPublicKeyInfo DER")
    return key


def fingerprint_digest(public_key_or_der: RsaKey | bytes) -> bytes:
    """SHA-256 of the public key DER (32 bytes): what fingerprints show and compare."""
    if isinstance(public_key_or_der, RsaKey):
        public_key_or_der = public_key_der(public_key_or_der)
    return hashlib.sha256(public_key_or_der).digest()


def fingerprint(public_key_or_der: RsaKey | bytes) -> str:
    """``"SHA256:ab12 cd34 ..."``: 16 groups of 4 lowercase hex digits."""
    hexdigits = fingerprint_digest(public_key_or_der).hex()
    groups = (hexdigits[i : i + 4] for i in range(0, len(hexdigits), 4))
    return _FINGERPRINT_PREFIX + " ".join(groups)


def typed_hex(text: str, size: int) -> bytes | None:
    """``size`` bytes typed by a person as hex digits (spaces, colons and dashes between
    them ignored); None if the text is not that."""
    body = _FINGERPRINT_SEPARATORS.sub("", text)
    if len(body) != 2 * size or not all(c in "0123456789abcdefABCDEF" for c in body):
        return None
    return bytes.fromhex(body)


def parse_fingerprint(text: str) -> bytes:
    """The 32-byte digest in a fingerprint typed by a person; ConfigError if it is not one."""
    body = text.strip()
    if body[: len(_FINGERPRINT_PREFIX)].upper() == _FINGERPRINT_PREFIX:
        body = body[len(_FINGERPRINT_PREFIX) :]
    digest = typed_hex(body, 32)
    if digest is None:
        raise ConfigError(
            "server fingerprint must be 'SHA256:' and 64 hex digits (spaces or colons allowed)"
        )
    return digest


def _oaep(key: RsaKey) -> PKCS1_OAEP.PKCS1OAEP_Cipher:
    # The default MGF1 follows hashAlgo, so this is OAEP-SHA256 with MGF1-SHA256.
    return PKCS1_OAEP.new(key, hashAlgo=SHA256)


def wrap_key(public_key: RsaKey, key: bytes) -> bytes:
    """Encrypt an AES-256 key to ``public_key`` with RSA-OAEP-SHA256."""
    if len(key) != crypto.KEY_SIZE:
        raise ValueError(f"only {crypto.KEY_SIZE}-byte keys are wrapped, got {len(key)}")
    return _oaep(public_key).encrypt(key)


def unwrap_key(private_key: RsaKey, blob: bytes | memoryview) -> bytes:
    """Decrypt a wrapped AES-256 key; IntegrityError on any failure, including a bad size."""
    try:
        key = _oaep(private_key).decrypt(blob)
    except (ValueError, TypeError) as exc:
        raise IntegrityError() from exc
    if len(key) != crypto.KEY_SIZE:
        raise IntegrityError()
    return key


def sign(private_key: RsaKey, message: bytes) -> bytes:
    """RSA-PSS-SHA256 signature of ``message``."""
    return pss.new(private_key).sign(SHA256.new(message))


def verify(public_key: RsaKey, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is ``public_key``'s PSS signature of ``message``."""
    try:
        pss.new(public_key).verify(SHA256.new(message), signature)
    except (ValueError, TypeError) as exc:
        raise IntegrityError() from exc


def seal_to_public_key(
    public_key: RsaKey, plaintext: bytes | memoryview, aad: bytes
) -> tuple[bytes, bytes]:
    """Hybrid encryption: ``(wrap_key(one-time key) || seal(one-time key, ...), key)``.

    The one-time key is returned so the sender can open the reply sealed under it.
    """
    one_time_key = crypto.random_key()
    blob = wrap_key(public_key, one_time_key) + crypto.seal(one_time_key, plaintext, aad)
    return blob, one_time_key


def open_with_private_key(
    private_key: RsaKey, blob: bytes | memoryview, aad: bytes
) -> tuple[bytes, bytes]:
    """Open a :func:`seal_to_public_key` blob: ``(plaintext, one-time key)``."""
    view = memoryview(blob).cast("B")
    wrapped_size = private_key.size_in_bytes()
    if len(view) < wrapped_size + crypto.OVERHEAD:
        raise IntegrityError()
    one_time_key = unwrap_key(private_key, view[:wrapped_size])
    return crypto.open_sealed(one_time_key, view[wrapped_size:], aad), one_time_key


def private_key_to_pem(key: RsaKey, passphrase: str | None = None) -> bytes:
    """PKCS#8 PEM; encrypted (scrypt + AES-256-CBC) when ``passphrase`` is given."""
    if not key.has_private():
        raise ValueError("not a private key")
    if passphrase is None:
        return key.export_key(format="PEM", pkcs=8)
    if not passphrase:
        raise ConfigError("passphrase must not be empty (leave it unset for no passphrase)")
    return key.export_key(format="PEM", pkcs=8, passphrase=passphrase, protection=_PEM_PROTECTION)


def load_private_key(pem: bytes, passphrase: str | None = None) -> RsaKey:
    """Load a PKCS#8 PEM RSA private key; wrong passphrase or junk -> IntegrityError.

    ``RSA.import_key`` tests p and q for primality on every load: 35-45 ms for a 3072-bit
    key, paid by every ``cipherdrop`` command. Keys here are made by
    :func:`generate_private_key` and kept in 0600 files, so the load checks instead what
    catches a damaged file, in microseconds: n = p * q, and d inverts e modulo
    lcm(p - 1, q - 1). A key that passes signs and unwraps correctly or not at all.
    """
    try:
        key = _rsa_from_pkcs8(pem, passphrase)
    except (ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise IntegrityError("private key could not be loaded") from exc
    if key.size_in_bits() < MIN_RSA_BITS:
        raise ConfigError(
            f"private key has {key.size_in_bits()} bits, below the minimum {MIN_RSA_BITS}"
        )
    return key


def _rsa_from_pkcs8(pem: bytes, passphrase: str | None) -> RsaKey:
    der, marker, _ = PEM.decode(pem.decode("ascii"))
    if marker not in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        raise ValueError(f"not a PKCS#8 private key: {marker}")
    algorithm, private, _ = PKCS8.unwrap(der, passphrase)
    if algorithm != _RSA_ENCRYPTION:
        raise ValueError("not an RSA key")
    fields = DerSequence().decode(private, nr_elements=9, only_ints_expected=True)
    version, n, e, d, p, q = (int(value) for value in fields[:6])
    if version != 0 or p * q != n or not 1 < e < n:
        raise ValueError("inconsistent RSA key")
    if (e * d) % math.lcm(p - 1, q - 1) != 1:
        raise ValueError("inconsistent RSA key")
    return RSA.construct((n, e, d, p, q), consistency_check=False)
