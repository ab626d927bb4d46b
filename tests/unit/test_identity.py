"""The client's home directory: file modes, identity round trip, server pinning (TOFU)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from client import identity as ident
from common import keys
from common.errors import ConfigError
from common.keys import RsaKey

from .server_harness import endorsement


@pytest.fixture(scope="module")
def private_key() -> RsaKey:
    return keys.generate_private_key(2048)


@pytest.fixture(scope="module")
def server_der() -> bytes:
    return keys.public_key_der(keys.generate_private_key(2048))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def make_identity(home: Path) -> ident.Identity:
    return ident.Identity("alice", bytes(range(16)), "tcp://127.0.0.1:1", "SHA256:x", home)


def test_home_is_created_private(tmp_path: Path) -> None:
    home = ident.ensure_home(tmp_path / "a" / "home")
    assert mode(home) == 0o700


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        ident.ensure_home(tmp_path / "home")


def test_identity_round_trip_and_modes(tmp_path: Path, private_key: RsaKey) -> None:
    home = tmp_path / "home"
    saved = make_identity(home)
    ident.save_identity(saved, private_key, None)
    assert ident.load_identity(home) == saved
    assert mode(home) == 0o700
    assert mode(home / ident.PRIVATE_KEY_FILE) == 0o600
    loaded = ident.load_private_key(home, None)
    assert keys.public_key_der(loaded) == keys.public_key_der(private_key)
    assert not ident.is_encrypted_pem(home)


def test_key_is_0600_whatever_the_umask(tmp_path: Path, private_key: RsaKey) -> None:
    old = os.umask(0)
    try:
        ident.save_identity(make_identity(tmp_path / "home"), private_key, None)
    finally:
        os.umask(old)
    assert mode(tmp_path / "home" / ident.PRIVATE_KEY_FILE) == 0o600


def test_passphrase_protects_the_key(tmp_path: Path, private_key: RsaKey) -> None:
    home = tmp_path / "home"
    ident.save_identity(make_identity(home), private_key, "correct horse")
    assert ident.is_encrypted_pem(home)
    assert b"PRIVATE KEY" in (home / ident.PRIVATE_KEY_FILE).read_bytes()
    with pytest.raises(ConfigError, match="wrong passphrase"):
        ident.load_private_key(home, "wrong")
    with pytest.raises(ConfigError, match="passphrase"):
        ident.load_private_key(home, None)
    loaded = ident.load_private_key(home, "correct horse")
    assert keys.public_key_der(loaded) == keys.public_key_der(private_key)


def test_key_readable_by_others_is_refused(tmp_path: Path, private_key: RsaKey) -> None:
    home = tmp_path / "home"
    ident.save_identity(make_identity(home), private_key, None)
    (home / ident.PRIVATE_KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ident.load_private_key(home, None)


def test_the_key_of_a_rekey_is_kept_private_and_then_adopted(
    tmp_path: Path, private_key: RsaKey
) -> None:
    home = tmp_path / "home"
    ident.save_identity(make_identity(home), private_key, "correct horse")
    assert ident.load_next_key(home, "correct horse") is None  # no rekey under way
    new_key = keys.generate_private_key(2048)
    old = os.umask(0)
    try:
        ident.save_next_key(home, new_key, "correct horse")
    finally:
        os.umask(old)
    assert mode(home / ident.NEXT_KEY_FILE) == 0o600
    with pytest.raises(ConfigError, match="not under this passphrase"):
        ident.load_next_key(home, "wrong")
    loaded = ident.load_next_key(home, "correct horse")
    assert loaded is not None and keys.public_key_der(loaded) == keys.public_key_der(new_key)
    # Until it is adopted, the client's key is the old one.
    current = ident.load_private_key(home, "correct horse")
    assert keys.public_key_der(current) == keys.public_key_der(private_key)
    ident.adopt_next_key(home)
    assert not (home / ident.NEXT_KEY_FILE).exists()
    assert mode(home / ident.PRIVATE_KEY_FILE) == 0o600
    adopted = ident.load_private_key(home, "correct horse")
    assert keys.public_key_der(adopted) == keys.public_key_der(new_key)


@pytest.mark.parametrize("damage", ["junk", "readable by others"])
def test_a_damaged_or_exposed_rekey_key_is_refused(
    tmp_path: Path, private_key: RsaKey, damage: str
) -> None:
    home = tmp_path / "home"
    ident.save_identity(make_identity(home), private_key, None)
    ident.save_next_key(home, private_key, None)
    path = home / ident.NEXT_KEY_FILE
    if damage == "junk":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n")
    else:
        path.chmod(0o644)
    with pytest.raises(ConfigError, match=ident.NEXT_KEY_FILE):
        ident.load_next_key(home, None)


def test_missing_identity_is_not_registered(tmp_path: Path) -> None:
    with pytest.raises(ident.NotRegisteredError, match="cipherdrop register"):
        ident.load_identity(tmp_path)
    with pytest.raises(ident.NotRegisteredError):
        ident.load_private_key(tmp_path, None)


def test_damaged_identity_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / ident.IDENTITY_FILE).write_text('{"name": "alice"}')
    with pytest.raises(ConfigError, match="damaged"):
        ident.load_identity(tmp_path)


def test_first_use_records_the_fingerprint(tmp_path: Path, server_der: bytes) -> None:
    pinned = ident.pin_server(tmp_path, "tcp://h:1", server_der, None)
    assert pinned == ident.Pinned(keys.fingerprint(server_der), first_use=True)
    assert ident.known_server(tmp_path, "tcp://h:1") == keys.fingerprint(server_der)
    again = ident.pin_server(tmp_path, "tcp://h:1", server_der, None)
    assert again.first_use is False
    lines = (tmp_path / ident.KNOWN_SERVERS_FILE).read_text().splitlines()
    assert lines == [f"tcp://h:1 {keys.fingerprint(server_der)}"]


def test_changed_server_key_is_a_hard_error(tmp_path: Path, server_der: bytes) -> None:
    other = keys.public_key_der(keys.generate_private_key(2048))
    ident.pin_server(tmp_path, "tcp://h:1", server_der, None)
    with pytest.raises(ident.ServerKeyMismatchError) as info:
        ident.pin_server(tmp_path, "tcp://h:1", other, None)
    assert keys.fingerprint(server_der) in str(info.value)
    assert keys.fingerprint(other) in str(info.value)
    # Another endpoint is another server: its own first use.
    assert ident.pin_server(tmp_path, "tcp://h:2", other, None).first_use


def test_given_fingerprint_must_match(tmp_path: Path, server_der: bytes) -> None:
    wrong = "SHA256:" + "00" * 32
    with pytest.raises(ident.ServerKeyMismatchError, match="expected SHA256:0000"):
        ident.pin_server(tmp_path, "tcp://h:1", server_der, wrong)
    assert ident.known_server(tmp_path, "tcp://h:1") is None  # nothing trusted
    # Typed in another form (upper case, colons) it still matches, and is then recorded.
    typed = keys.fingerprint_digest(server_der).hex().upper()
    typed = ":".join(typed[i : i + 2] for i in range(0, 64, 2))
    assert ident.pin_server(tmp_path, "tcp://h:1", server_der, typed).first_use is False
    assert ident.known_server(tmp_path, "tcp://h:1") == keys.fingerprint(server_der)


# --- a server that changed its key -----------------------------------------------------------


def test_a_key_the_pinned_key_endorsed_is_followed(tmp_path: Path, private_key: RsaKey) -> None:
    old_der = keys.public_key_der(private_key)
    new_der = keys.public_key_der(keys.generate_private_key(2048))
    ident.pin_server(tmp_path, "tcp://h:1", old_der, None)
    ident.pin_server(tmp_path, "tcp://h:2", old_der, None)  # another endpoint's line stays
    pinned = ident.pin_server(
        tmp_path, "tcp://h:1", new_der, None, endorsement(private_key, new_der)
    )
    assert pinned == ident.Pinned(
        keys.fingerprint(new_der), first_use=False, followed=keys.fingerprint(old_der)
    )
    assert ident.known_server(tmp_path, "tcp://h:1") == keys.fingerprint(new_der)
    assert ident.known_server(tmp_path, "tcp://h:2") == keys.fingerprint(old_der)
    assert (tmp_path / ident.KNOWN_SERVERS_FILE).stat().st_mode & 0o777 == 0o600
    # The identity's pin (passed as expected) is followed the same way.
    identity = make_identity(tmp_path)
    ident.save_identity(identity, private_key, None)
    updated = ident.update_server_fingerprint(identity, keys.fingerprint(new_der))
    assert ident.load_identity(tmp_path) == updated
    assert updated.server_fingerprint == keys.fingerprint(new_der)


def test_an_endorsement_that_does_not_hold_is_a_mismatch(
    tmp_path: Path, private_key: RsaKey, server_der: bytes
) -> None:
    old_der = keys.public_key_der(private_key)
    new_key = keys.generate_private_key(2048)
    new_der = keys.public_key_der(new_key)
    ident.pin_server(tmp_path, "tcp://h:1", old_der, None)
    previous_der, signature = endorsement(private_key, new_der)
    forged = bytes(len(signature))
    not_ours = endorsement(new_key, new_der)  # signed by a key that is not the pinned one
    for bad in [
        None,
        (previous_der, forged),
        not_ours,
        (previous_der, endorsement(private_key, server_der)[1]),  # for another key
        (b"junk", signature),
    ]:
        with pytest.raises(ident.ServerKeyMismatchError):
            ident.pin_server(tmp_path, "tcp://h:1", new_der, None, bad)
        assert ident.known_server(tmp_path, "tcp://h:1") == keys.fingerprint(old_der)


def test_the_source_key_is_kept_once_private_and_checked(
    tmp_path: Path, private_key: RsaKey
) -> None:
    assert ident.load_source_secret(tmp_path) is None  # derived from the key until a rekey
    ident.keep_source_secret(tmp_path, bytes(range(32)))
    assert mode(tmp_path / ident.SOURCE_KEY_FILE) == 0o600
    ident.keep_source_secret(tmp_path, bytes(32))  # a later rekey keeps the first one
    assert ident.load_source_secret(tmp_path) == bytes(range(32))
    (tmp_path / ident.SOURCE_KEY_FILE).write_bytes(b"short")
    with pytest.raises(ConfigError, match="damaged"):
        ident.load_source_secret(tmp_path)
