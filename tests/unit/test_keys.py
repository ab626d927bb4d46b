"""common.keys: sizes, strict public key parsing, fingerprints, OAEP, PSS, hybrid, PEM."""

from __future__ import annotations

import base64
import hashlib

import pytest
from Crypto.PublicKey import RSA
from hypothesis import given
from hypothesis import strategies as st

from common import crypto, keys
from common.errors import ConfigError, IntegrityError, RemoteProtocolError
from common.keys import RsaKey

# DER encodings of the object identifiers the tests look for.
OID_RSA_ENCRYPTION = bytes.fromhex("06092a864886f70d010101")  # 1.2.840.113549.1.1.1
OID_SCRYPT = bytes.fromhex("06092b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11
OID_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42


@pytest.fixture(scope="module")
def key() -> RsaKey:
    return keys.generate_private_key(2048)


@pytest.fixture(scope="module")
def other_key() -> RsaKey:
    return keys.generate_private_key(2048)


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def pem_body(pem: bytes) -> bytes:
    lines = pem.decode().strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def test_default_key_size_is_3072_bits() -> None:
    generated = keys.generate_private_key()
    assert generated.size_in_bits() == keys.DEFAULT_RSA_BITS == 3072
    assert generated.has_private()
    assert generated.e == 65537


@pytest.mark.parametrize("bits", [512, 1024, 2047, 16384])
def test_key_sizes_outside_the_allowed_range_are_refused(bits: int) -> None:
    with pytest.raises(ConfigError, match=str(bits)):
        keys.generate_private_key(bits)


def test_public_key_der_is_subject_public_key_info(key: RsaKey) -> None:
    der = keys.public_key_der(key)
    assert der[0] == 0x30  # SEQUENCE
    assert OID_RSA_ENCRYPTION in der
    assert der == keys.public_key_der(key.public_key())
    loaded = keys.load_public_key(der)
    assert not loaded.has_private()
    assert (loaded.n, loaded.e) == (key.n, key.e)


def test_load_public_key_refuses_keys_below_the_minimum() -> None:
    small = RSA.generate(1024)
    with pytest.raises(RemoteProtocolError, match="1024"):
        keys.load_public_key(small.public_key().export_key(format="DER"))


def test_load_public_key_honours_a_higher_minimum(key: RsaKey) -> None:
    with pytest.raises(RemoteProtocolError):
        keys.load_public_key(keys.public_key_der(key), min_bits=3072)


def test_load_public_key_refuses_other_exponents() -> None:
    odd = RSA.generate(2048, e=3)
    with pytest.raises(RemoteProtocolError, match="exponent"):
        keys.load_public_key(odd.public_key().export_key(format="DER"))


@pytest.mark.parametrize("e", [3, 17, 65537])
def test_load_legacy_public_key_accepts_rsa_1024_with_the_legacy_exponents(e: int) -> None:
    legacy = RSA.generate(1024, e=e)
    der = legacy.public_key().export_key(format="DER")
    loaded = keys.load_legacy_public_key(der)
    assert (loaded.n, loaded.e, loaded.has_private()) == (legacy.n, e, False)
    if e == 17:  # the originals' keys: exactly their 160-byte field
        assert len(der) == 160


def test_load_legacy_public_key_refuses_everything_else(key: RsaKey) -> None:
    legacy = RSA.generate(1024, e=17)
    der = legacy.public_key().export_key(format="DER")
    refused = [
        keys.public_key_der(key),  # 2048 bits: strong keys are not legacy keys
        RSA.generate(1024, e=5).public_key().export_key(format="DER"),
        der + b"\0",
        der[:-1],
        b"\x30" * 160,
        legacy.export_key(format="DER"),  # the private key
        legacy.public_key().export_key(format="PEM"),
        b"",
    ]
    for candidate in refused:
        with pytest.raises(RemoteProtocolError):
            keys.load_legacy_public_key(candidate)


def test_legacy_keys_are_refused_where_keys_are_ours() -> None:
    """RSA-1024 passes only :func:`keys.load_legacy_public_key`."""
    der = RSA.generate(1024, e=65537).public_key().export_key(format="DER")
    assert keys.load_legacy_public_key(der).size_in_bits() == 1024
    with pytest.raises(RemoteProtocolError, match="1024"):
        keys.load_public_key(der)


@given(st.binary(max_size=400))
def test_load_legacy_public_key_on_any_bytes_gives_a_key_or_the_protocol_error(
    data: bytes,
) -> None:
    try:
        loaded = keys.load_legacy_public_key(data)
    except RemoteProtocolError:
        return
    assert loaded.size_in_bits() == 1024


def test_load_public_key_refuses_non_canonical_encodings(key: RsaKey) -> None:
    der = keys.public_key_der(key)
    not_spki = [
        key.public_key().export_key(format="PEM"),
        key.public_key().export_key(format="OpenSSH"),
        key.export_key(format="DER"),  # the private key
        der + b"\x00",  # trailing junk
        der[:-1],
        b"",
        b"\x00" * 4096,
    ]
    for candidate in not_spki:
        with pytest.raises(RemoteProtocolError):
            keys.load_public_key(candidate)


@given(st.binary(max_size=600))
def test_load_public_key_on_any_bytes_gives_a_key_or_the_protocol_error(data: bytes) -> None:
    try:
        loaded = keys.load_public_key(data)
    except RemoteProtocolError:
        return
    assert not loaded.has_private()
    assert keys.public_key_der(loaded) == data


def test_fingerprint_is_sha256_of_der_in_groups_of_four(key: RsaKey) -> None:
    der = keys.public_key_der(key)
    digest = hashlib.sha256(der).hexdigest()
    text = keys.fingerprint(key)
    assert text == "SHA256:" + " ".join(digest[i : i + 4] for i in range(0, 64, 4))
    assert keys.fingerprint(der) == keys.fingerprint(key.public_key()) == text
    assert keys.fingerprint_digest(key) == hashlib.sha256(der).digest()


def test_fingerprints_of_different_keys_differ(key: RsaKey, other_key: RsaKey) -> None:
    assert keys.fingerprint(key) != keys.fingerprint(other_key)


def test_parse_fingerprint_tolerates_case_and_separators(key: RsaKey) -> None:
    text = keys.fingerprint(key)
    digest = keys.fingerprint_digest(key)
    hexdigits = digest.hex()
    variants = [
        text,
        text.upper(),
        "  " + text.lower() + "\n",
        hexdigits,
        ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2)),
        "sha256:" + "-".join(hexdigits[i : i + 8] for i in range(0, 64, 8)),
    ]
    for variant in variants:
        assert keys.parse_fingerprint(variant) == digest


@pytest.mark.parametrize("text", ["", "SHA256:", "SHA256:abcd", "SHA256:" + "g" * 64, "x" * 66])
def test_parse_fingerprint_refuses_what_is_not_one(text: str) -> None:
    with pytest.raises(ConfigError, match="fingerprint"):
        keys.parse_fingerprint(text)


def test_oaep_wrap_unwrap_round_trip(key: RsaKey) -> None:
    session_key = crypto.random_key()
    wrapped = keys.wrap_key(key.public_key(), session_key)
    assert len(wrapped) == key.size_in_bytes()
    assert keys.unwrap_key(key, wrapped) == session_key
    assert keys.wrap_key(key.public_key(), session_key) != wrapped  # OAEP is randomised


def test_unwrap_failures_are_integrity_errors(key: RsaKey, other_key: RsaKey) -> None:
    wrapped = keys.wrap_key(key.public_key(), crypto.random_key())
    attempts = [(other_key, wrapped), (key, flip(wrapped, 1000)), (key, wrapped[:-1]), (key, b"")]
    for private_key, candidate in attempts:
        with pytest.raises(IntegrityError):
            keys.unwrap_key(private_key, candidate)


def test_unwrap_refuses_a_key_of_the_wrong_size(key: RsaKey) -> None:
    from Crypto.Cipher import PKCS1_OAEP
    from Crypto.Hash import SHA256

    short = PKCS1_OAEP.new(key.public_key(), hashAlgo=SHA256).encrypt(b"k" * 16)
    with pytest.raises(IntegrityError):
        keys.unwrap_key(key, short)
    with pytest.raises(ValueError):
        keys.wrap_key(key.public_key(), b"k" * 16)


def test_pss_sign_verify(key: RsaKey, other_key: RsaKey) -> None:
    signature = keys.sign(key, b"register alice")
    assert len(signature) == key.size_in_bytes()
    keys.verify(key.public_key(), b"register alice", signature)
    with pytest.raises(IntegrityError):
        keys.verify(key.public_key(), b"register mallory", signature)
    with pytest.raises(IntegrityError):
        keys.verify(other_key.public_key(), b"register alice", signature)
    with pytest.raises(IntegrityError):
        keys.verify(key.public_key(), b"register alice", flip(signature, 7))
    with pytest.raises(IntegrityError):
        keys.verify(key.public_key(), b"register alice", signature[:-1])


def test_hybrid_round_trip(key: RsaKey) -> None:
    blob, one_time_key = keys.seal_to_public_key(key.public_key(), b"name=alice", b"envelope")
    assert len(one_time_key) == crypto.KEY_SIZE
    assert keys.open_with_private_key(key, blob, b"envelope") == (b"name=alice", one_time_key)


@pytest.mark.parametrize("bit", [0, 1000, 2047, 2048, 2048 + 100, -1])
def test_hybrid_tamper_anywhere_fails(key: RsaKey, bit: int) -> None:
    blob, _ = keys.seal_to_public_key(key.public_key(), b"name=alice", b"envelope")
    with pytest.raises(IntegrityError):
        keys.open_with_private_key(key, flip(blob, bit % (len(blob) * 8)), b"envelope")


def test_hybrid_wrong_aad_key_or_length_fails(key: RsaKey, other_key: RsaKey) -> None:
    blob, _ = keys.seal_to_public_key(key.public_key(), b"name=alice", b"envelope")
    attempts = [
        (key, blob, b"other envelope"),
        (other_key, blob, b"envelope"),
        (key, blob[: key.size_in_bytes() + 10], b"envelope"),
        (key, b"", b"envelope"),
    ]
    for private_key, candidate, aad in attempts:
        with pytest.raises(IntegrityError):
            keys.open_with_private_key(private_key, candidate, aad)


def test_pem_without_passphrase_is_plain_pkcs8(key: RsaKey) -> None:
    pem = keys.private_key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = keys.load_private_key(pem)
    assert loaded == key
    assert loaded.has_private()


def test_pem_with_passphrase_uses_scrypt_and_aes256(key: RsaKey) -> None:
    pem = keys.private_key_to_pem(key, "correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    body = pem_body(pem)
    assert OID_SCRYPT in body
    assert OID_AES256_CBC in body
    assert bytes.fromhex("0203020000") in body  # scrypt cost N = 2^17, whatever the library default
    assert keys.load_private_key(pem, "correct horse") == key
    for wrong in ("wrong horse", None):
        with pytest.raises(IntegrityError):
            keys.load_private_key(pem, wrong)


@pytest.mark.parametrize("junk", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_loading_junk_is_an_integrity_error(junk: bytes) -> None:
    with pytest.raises(IntegrityError):
        keys.load_private_key(junk)


def test_loading_a_public_key_as_private_is_refused(key: RsaKey) -> None:
    with pytest.raises(IntegrityError):
        keys.load_private_key(key.public_key().export_key(format="PEM"))


def test_empty_passphrase_is_refused(key: RsaKey) -> None:
    with pytest.raises(ConfigError, match="passphrase"):
        keys.private_key_to_pem(key, "")


def _pkcs8_with(key: RsaKey, **changes: int) -> bytes:
    """The PKCS#8 PEM of ``key`` with some of its integers replaced."""
    from Crypto.IO import PEM, PKCS8
    from Crypto.Util.asn1 import DerSequence

    values = {"n": key.n, "e": key.e, "d": key.d, "p": key.p, "q": key.q}
    values.update(changes)
    n, e, d, p, q = (values[name] for name in "nedpq")
    private = DerSequence([0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p)]).encode()
    der = PKCS8.wrap(private, "1.2.840.113549.1.1.1", key_params=None)
    return PEM.encode(der, "PRIVATE KEY").encode()


def test_the_load_equals_pycryptodome_import(key: RsaKey) -> None:
    pem = keys.private_key_to_pem(key)
    loaded = keys.load_private_key(pem)
    reference = RSA.import_key(pem)
    assert (loaded.n, loaded.e, loaded.d, loaded.p, loaded.q, loaded.u) == (
        reference.n,
        reference.e,
        reference.d,
        reference.p,
        reference.q,
        reference.u,
    )
    assert keys.load_private_key(_pkcs8_with(key)) == key  # the helper below builds keys right


@pytest.mark.parametrize("change", ["n", "d", "p", "e"])
def test_a_damaged_private_key_is_an_integrity_error(key: RsaKey, change: str) -> None:
    damaged = {"n": key.n + 2, "d": key.d + 2, "p": key.p + 2, "e": 3}[change]
    with pytest.raises(IntegrityError):
        keys.load_private_key(_pkcs8_with(key, **{change: damaged}))


def test_a_pkcs1_private_key_is_refused(key: RsaKey) -> None:
    with pytest.raises(IntegrityError):
        keys.load_private_key(key.export_key(format="PEM", pkcs=1))
