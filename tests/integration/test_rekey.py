"""``cipherdrop rekey`` against a real broker and real workers.

The client moves to a new key pair; its files stay readable, the old key is refused, and
an interrupted rekey (either side of the server's transaction) is finished by running
the command again.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.cli import ExitStatus
from client.identity import (
    NEXT_KEY_FILE,
    PRIVATE_KEY_FILE,
    SOURCE_KEY_FILE,
    is_encrypted_pem,
    load_identity,
    load_private_key,
    save_next_key,
)
from common import keys
from config import load_settings
from workers.app import open_server

from .stack import Stack, running_stack

pytestmark = pytest.mark.integration

NEW_KEY = re.compile(
    r"^new key (?P<fingerprint>SHA256:[0-9a-f ]+); (?P<ended>\d+) session\(s\) ended$"
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def registered(stack: Stack, home: Path, name: str, **env: str) -> Path:
    args = ["register", name, "--passphrase"] if env else ["register", name]
    result = stack.client(home, *args, env=env)
    assert result.returncode == 0, result.stderr
    return home


def server_key_of(stack: Stack, home: Path) -> bytes | None:
    """The public key the server holds for the client of ``home``."""
    server = open_server(load_settings(stack.config, env={}))
    try:
        row = server.store.get_client(load_identity(home).client_id)
        assert row is not None
        return row.public_key
    finally:
        server.store.close()


def public_der(home: Path, passphrase: str | None = None) -> bytes:
    return keys.public_key_der(load_private_key(home, passphrase))


def rekey(stack: Stack, home: Path, **env: str) -> re.Match[str]:
    result = stack.client(home, "rekey", env=env)
    assert result.returncode == 0, result.stderr
    match = NEW_KEY.match(result.stdout.strip())
    assert match, result.stdout
    return match


def test_rekey_moves_the_client_and_its_files_stay(stack: Stack, tmp_path: Path) -> None:
    home = registered(stack, tmp_path / "home", "rekey-alice")
    source = tmp_path / "notes.txt"
    source.write_bytes(b"kept across a new key\n" * 1000)
    assert stack.client(home, "put", str(source)).returncode == 0
    old_home = tmp_path / "old-home"
    shutil.copytree(home, old_home)
    old_der = public_der(home)

    match = rekey(stack, home)
    new_der = public_der(home)
    assert new_der != old_der
    assert match["fingerprint"] == keys.fingerprint(new_der)
    assert match["ended"] == "2"  # the sessions of `register` and of `put`
    assert server_key_of(stack, home) == new_der
    assert not (home / NEXT_KEY_FILE).exists()
    assert (home / PRIVATE_KEY_FILE).stat().st_mode & 0o777 == 0o600

    # Files stay: their data keys do not depend on the client's key.
    out = tmp_path / "back.txt"
    result = stack.client(home, "get", "notes.txt", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == source.read_bytes()
    # Files put before the rekey are still known as unchanged: the source tokens' key is
    # kept from the first key pair.
    result = stack.client(home, "put", str(source), "--skip-unchanged")
    assert result.returncode == 0, result.stderr
    assert "unchanged, skipped" in result.stdout
    assert (home / SOURCE_KEY_FILE).stat().st_mode & 0o777 == 0o600
    # The old key proves nothing any more.
    result = stack.client(old_home, "ls")
    assert result.returncode == ExitStatus.REFUSED
    assert "proof of identity" in result.stderr and "Traceback" not in result.stderr


def test_a_rekey_the_server_did_but_the_client_did_not_finish(stack: Stack, tmp_path: Path) -> None:
    home = registered(stack, tmp_path / "home", "rekey-bob")
    old_pem = (home / PRIVATE_KEY_FILE).read_bytes()
    rekey(stack, home)
    # The state of a client killed after the server's reply and before the rename.
    new_pem = (home / PRIVATE_KEY_FILE).read_bytes()
    (home / PRIVATE_KEY_FILE).write_bytes(old_pem)
    save_next_key(home, keys.load_private_key(new_pem), None)

    result = stack.client(home, "ls")
    assert result.returncode == ExitStatus.REFUSED
    assert "run 'cipherdrop rekey' to finish it" in result.stderr

    result = stack.client(home, "rekey")
    assert result.returncode == 0, result.stderr
    assert "finishing the key change begun before" in result.stderr
    assert NEW_KEY.match(result.stdout.strip())
    assert (home / PRIVATE_KEY_FILE).read_bytes() == new_pem
    assert not (home / NEXT_KEY_FILE).exists()
    result = stack.client(home, "ls")
    assert result.returncode == 0, result.stderr


def test_a_rekey_the_server_never_heard_of_moves_to_the_kept_key(
    stack: Stack, tmp_path: Path
) -> None:
    home = registered(stack, tmp_path / "home", "rekey-carol")
    old_der = public_der(home)
    kept = keys.generate_private_key(stack.rsa_bits)
    save_next_key(home, kept, None)  # written, then killed before the request went out

    result = stack.client(home, "ls")  # the old key still works, with a reminder
    assert result.returncode == 0, result.stderr
    assert "run 'cipherdrop rekey' to finish it" in result.stderr
    assert server_key_of(stack, home) == old_der

    rekey(stack, home)
    assert server_key_of(stack, home) == keys.public_key_der(kept) == public_der(home)


def test_a_damaged_kept_key_is_refused_and_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    home = registered(stack, tmp_path / "home", "rekey-dave")
    old_der = public_der(home)
    save_next_key(home, keys.generate_private_key(stack.rsa_bits), None)
    (home / NEXT_KEY_FILE).write_bytes(b"-----BEGIN PRIVATE KEY-----\nbroken\n")

    result = stack.client(home, "rekey")
    assert result.returncode == ExitStatus.CONFIG
    assert NEXT_KEY_FILE in result.stderr and "Traceback" not in result.stderr
    assert server_key_of(stack, home) == old_der == public_der(home)


def test_a_key_under_a_passphrase_stays_under_it(stack: Stack, tmp_path: Path) -> None:
    words = {"CIPHERDROP_PASSPHRASE": "correct horse battery"}
    home = registered(stack, tmp_path / "home", "rekey-erin", **words)
    rekey(stack, home, **words)
    assert is_encrypted_pem(home)
    new_der = public_der(home, words["CIPHERDROP_PASSPHRASE"])
    assert server_key_of(stack, home) == new_der
    result = stack.client(home, "ls", env=words)
    assert result.returncode == 0, result.stderr
