"""common.secretfile: 0600 from creation, atomic replacement, refusal of exposed secrets."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from common.errors import ConfigError
from common.secretfile import read_secret_file, write_secret_file


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_file_has_mode_0600_and_the_data(tmp_path: Path) -> None:
    path = tmp_path / "client.pem"
    write_secret_file(path, b"secret key")
    assert mode_of(path) == 0o600
    assert read_secret_file(path) == b"secret key"


def test_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_secret_file(tmp_path / "key", b"x")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "key") == 0o600


def test_file_is_created_with_0600_by_open_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record every os.open and the mode the file has right after it: there must be no
    # moment where the new file exists with a wider mode (no create-then-chmod).
    calls: list[tuple[int, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, **kwargs)
        if flags & os.O_CREAT:
            calls.append((mode, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    old = os.umask(0)
    try:
        write_secret_file(tmp_path / "key", b"x")
    finally:
        os.umask(old)
    assert calls == [(0o600, 0o600)]


def test_replacing_keeps_mode_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_secret_file(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode_of(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


def test_failed_write_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.key"
    write_secret_file(path, b"old key")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_secret_file(path, b"new key")
    assert path.read_bytes() == b"old key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o666, 0o610])
def test_reading_a_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    write_secret_file(path, b"x")
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        read_secret_file(path)
    assert str(path) in str(caught.value)


def test_owner_only_modes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_secret_file(path, b"x")
    path.chmod(0o400)
    assert read_secret_file(path) == b"x"


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_secret_file(tmp_path / "absent")


def test_a_directory_is_not_a_secret_file(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret_file(directory)
