"""The gateway's own key and its pin of the server key (gateway/identity.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common import keys
from common.errors import ConfigError
from common.keys import RsaKey
from gateway.identity import KEY_NAME, PIN_NAME, ServerPin, load_identity, pin_server

from .server_harness import endorsement, rsa_key


def server_keys() -> tuple[RsaKey, RsaKey]:
    """The server's key before and after a change."""
    return rsa_key("old server"), rsa_key("new server")


def test_the_gateway_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    directory = tmp_path / "gateway"
    first = load_identity(directory, 2048)
    assert stat.S_IMODE((directory / KEY_NAME).stat().st_mode) == 0o600
    assert keys.fingerprint(load_identity(directory, 2048)) == keys.fingerprint(first)
    (directory / KEY_NAME).write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="not a readable private key"):
        load_identity(directory, 2048)


def test_the_first_key_is_recorded_and_another_refused(tmp_path: Path) -> None:
    old_key, new_key = server_keys()
    old_der, new_der = keys.public_key_der(old_key), keys.public_key_der(new_key)
    assert pin_server(tmp_path, old_der, None) == ServerPin(keys.fingerprint(old_der))
    recorded = (tmp_path / PIN_NAME).read_bytes()
    assert pin_server(tmp_path, old_der, None) == ServerPin(keys.fingerprint(old_der))
    with pytest.raises(ConfigError, match="not the pinned one"):
        pin_server(tmp_path, new_der, None)
    assert (tmp_path / PIN_NAME).read_bytes() == recorded
    # A fingerprint given by the operator wins over the recorded one.
    given = keys.fingerprint(new_der)
    assert pin_server(tmp_path, new_der, given) == ServerPin(given)
    with pytest.raises(ConfigError, match="not the pinned one"):
        pin_server(tmp_path, old_der, given)


def test_a_key_the_pinned_key_endorsed_is_followed_and_recorded(tmp_path: Path) -> None:
    old_key, new_key = server_keys()
    old_der, new_der = keys.public_key_der(old_key), keys.public_key_der(new_key)
    pin_server(tmp_path, old_der, None)
    followed = pin_server(tmp_path, new_der, None, endorsement(old_key, new_der))
    assert followed == ServerPin(keys.fingerprint(new_der), keys.fingerprint(old_der))
    assert pin_server(tmp_path, new_der, None) == ServerPin(keys.fingerprint(new_der))
    # The old key is refused from now on, as for a client.
    with pytest.raises(ConfigError, match="not the pinned one"):
        pin_server(tmp_path, old_der, None)
    # An operator's fingerprint of the old key is followed the same way.
    given, other = keys.fingerprint(old_der), tmp_path / "other"
    other.mkdir()  # made with the gateway key, before the server is asked
    again = pin_server(other, new_der, given, endorsement(old_key, new_der))
    assert again == ServerPin(keys.fingerprint(new_der), given)


def test_an_endorsement_that_does_not_hold_changes_nothing(tmp_path: Path) -> None:
    old_key, new_key = server_keys()
    old_der, new_der = keys.public_key_der(old_key), keys.public_key_der(new_key)
    pin_server(tmp_path, old_der, None)
    recorded = (tmp_path / PIN_NAME).read_bytes()
    previous_der, signature = endorsement(old_key, new_der)
    for bad in [
        None,
        (previous_der, bytes(len(signature))),  # forged
        endorsement(new_key, new_der),  # signed by a key that is not the pinned one
        (previous_der, endorsement(old_key, old_der)[1]),  # for another key
        (b"junk", signature),
    ]:
        with pytest.raises(ConfigError, match="not the pinned one"):
            pin_server(tmp_path, new_der, None, bad)
        assert (tmp_path / PIN_NAME).read_bytes() == recorded
