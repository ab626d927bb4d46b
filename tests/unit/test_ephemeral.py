"""X25519 one-use keys of the key exchange: RFC 7748 known answers, bad peer keys refused,
and the session key derived from both secrets."""

from __future__ import annotations

import pytest

from common.crypto import hkdf_sha256
from common.ephemeral import Ephemeral, session_key
from common.errors import IntegrityError

# RFC 7748 section 6.1.
ALICE_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_PRIVATE = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PUBLIC = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_rfc_7748_known_answer() -> None:
    alice, bob = Ephemeral(ALICE_PRIVATE), Ephemeral(BOB_PRIVATE)
    assert alice.public == ALICE_PUBLIC and bob.public == BOB_PUBLIC
    assert alice.agree(BOB_PUBLIC) == SHARED == bob.agree(ALICE_PUBLIC)


def test_fresh_pairs_agree_and_differ() -> None:
    a, b, c = Ephemeral(), Ephemeral(), Ephemeral()
    assert a.agree(b.public) == b.agree(a.public)
    assert a.agree(b.public) != a.agree(c.public)
    assert len({a.public, b.public, c.public}) == 3


@pytest.mark.parametrize(
    "peer",
    [
        bytes(32),  # order 1: the shared secret would be zero
        (1).to_bytes(32, "little"),  # small order
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),  # 8
        ALICE_PUBLIC[:31],
        ALICE_PUBLIC + b"\x00",
        b"",
    ],
)
def test_a_peer_key_of_small_order_or_wrong_length_is_refused(peer: bytes) -> None:
    with pytest.raises(IntegrityError):
        Ephemeral().agree(peer)


def test_the_session_key_depends_on_both_secrets_and_the_session() -> None:
    shared, wrapped, sid = bytes(range(32)), bytes(range(32, 64)), bytes(16)
    key = session_key(shared, wrapped, sid)
    assert key == hkdf_sha256(shared + wrapped, b"cipherdrop v1 session key", salt=sid)
    assert len(key) == 32
    assert session_key(bytes(32), wrapped, sid) != key
    assert session_key(shared, bytes(32), sid) != key
    assert session_key(shared, wrapped, b"\x01" * 16) != key
