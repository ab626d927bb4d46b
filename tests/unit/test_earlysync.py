"""common.earlysync: an early sync never takes the caller's descriptor nor raises."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import background, earlysync
from common.earlysync import PURPOSE, SYNC_STEP, count_written, sync_soon


def test_the_callers_descriptor_stays_open_and_usable(tmp_path: Path) -> None:
    path = tmp_path / "part"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"first")
        sync_soon(fd)
        background.settle(PURPOSE, timeout=10)  # the sync has run
        os.write(fd, b" second")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"first second"


def test_a_bad_descriptor_is_only_a_missed_start(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "gone", os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    sync_soon(fd)  # nothing to duplicate: no error, nothing else happens


def test_the_count_starts_a_sync_at_each_step_and_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(earlysync, "sync_soon", synced.append)
    unsynced = 0
    for _ in range(5):
        unsynced = count_written(7, unsynced, SYNC_STEP // 2)
    assert synced == [7, 7]
    assert unsynced == SYNC_STEP // 2
