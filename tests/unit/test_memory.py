"""common.memory: glibc accepts the allocator settings; elsewhere nothing happens."""

from __future__ import annotations

import platform
import sys

import pytest

from common.memory import keep_freed_buffers


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
def test_glibc_accepts_the_thresholds() -> None:
    assert keep_freed_buffers() is True


def test_elsewhere_it_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_buffers() is False
