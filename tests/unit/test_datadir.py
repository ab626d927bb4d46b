"""The data dir: created private, secrets made once even under a race, master-key wrapping."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from common import keys
from common.errors import ConfigError, IntegrityError
from common.secretfile import write_secret_file
from config import load_settings
from workers.app import open_server
from workers.datadir import MASTER_KEY_ENV, MasterKey, open_data_dir

from .server_harness import rsa_key

ROOT = Path(__file__).resolve().parents[2]


def seeded(path: Path) -> Path:
    """A data dir whose server key exists already (RSA key generation is slow)."""
    path.mkdir(mode=0o700)
    write_secret_file(path / "server_key.pem", keys.private_key_to_pem(rsa_key("server")))
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_a_private_dir_and_secrets(tmp_path: Path) -> None:
    data = open_data_dir(tmp_path / "var", rsa_bits=2048, env={})
    assert mode(tmp_path / "var") == 0o700
    assert mode(tmp_path / "var" / "server_key.pem") == 0o600
    assert mode(tmp_path / "var" / "master.key") == 0o600
    assert len((tmp_path / "var" / "master.key").read_bytes()) == 32
    assert data.server_key.size_in_bits() == 2048
    assert b"PRIVATE KEY" in (tmp_path / "var" / "server_key.pem").read_bytes()
    again = open_data_dir(tmp_path / "var", rsa_bits=2048, env={})
    assert again.master == data.master and again.fingerprint == data.fingerprint
    assert "key=" not in repr(data.master) and data.master.key.hex() not in repr(data)


def test_concurrent_first_starts_agree_on_one_key_of_each_kind(tmp_path: Path) -> None:
    code = (
        "import sys; from workers.datadir import open_data_dir;"
        "d = open_data_dir(sys.argv[1], 2048, {}); print(d.fingerprint, d.master.key.hex())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "var")],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=90) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4, outputs
    assert len({out for out, _ in outputs}) == 1
    assert sorted(os.listdir(tmp_path / "var")) == ["blobs", "master.key", "server_key.pem"]


def test_master_key_from_the_environment(tmp_path: Path) -> None:
    key = bytes(range(32))
    data = open_data_dir(seeded(tmp_path / "var"), env={MASTER_KEY_ENV: key.hex()})
    assert data.master.key == key
    assert not (tmp_path / "var" / "master.key").exists()
    with pytest.raises(ConfigError, match=MASTER_KEY_ENV):
        open_data_dir(tmp_path / "var", env={MASTER_KEY_ENV: "not hex"})


def test_a_master_key_others_can_read_is_refused(tmp_path: Path) -> None:
    open_data_dir(seeded(tmp_path / "var"), env={})
    os.chmod(tmp_path / "var" / "master.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        open_data_dir(tmp_path / "var", env={})


def test_wrapped_keys_only_unwrap_in_their_own_context() -> None:
    master = MasterKey(os.urandom(32))
    blob = master.wrap(b"k" * 32, b"session:" + b"a" * 16)
    assert master.unwrap(blob, b"session:" + b"a" * 16) == b"k" * 32
    with pytest.raises(IntegrityError):
        master.unwrap(blob, b"session:" + b"b" * 16)
    with pytest.raises(IntegrityError):
        MasterKey(os.urandom(32)).unwrap(blob, b"session:" + b"a" * 16)


def test_a_master_key_that_does_not_match_the_database_is_refused(tmp_path: Path) -> None:
    seeded(tmp_path / "var")
    settings = load_settings(env={}, flags={"store.data_dir": str(tmp_path / "var")})
    open_server(settings, env={MASTER_KEY_ENV: "11" * 32}).store.close()
    open_server(settings, env={MASTER_KEY_ENV: "11" * 32}).store.close()
    with pytest.raises(ConfigError, match="master key does not match"):
        open_server(settings, env={MASTER_KEY_ENV: "22" * 32})
