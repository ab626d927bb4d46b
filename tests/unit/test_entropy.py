"""Random bytes for nonces and request ids: the kernel's, asked for without giving up the GIL."""

from __future__ import annotations

import ctypes
import sys
import threading

from common import entropy


def test_every_length_gives_that_many_fresh_bytes() -> None:
    for n in (1, 12, 16, 32, 255, 256, 257, 4096):
        values = {entropy.token_bytes(n) for _ in range(20)}
        assert {len(value) for value in values} == {n}
        assert len(values) == 20 or n == 1  # 1-byte values may repeat; longer ones do not
    assert entropy.token_bytes(0) == b""


def test_the_bytes_look_uniform() -> None:
    data = b"".join(entropy.token_bytes(16) for _ in range(4096))  # 64 KiB
    counts = [data.count(bytes([value])) for value in range(256)]
    # 256 expected per value; a broken source (zeros, a repeated buffer) is far off this.
    assert min(counts) > 150 and max(counts) < 370


def test_threads_never_get_the_same_bytes() -> None:
    seen: list[bytes] = []

    def draw() -> None:
        seen.extend(entropy.token_bytes(16) for _ in range(500))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 2000


def test_on_linux_the_call_keeps_the_gil() -> None:
    if not sys.platform.startswith("linux"):
        assert entropy._getrandom is None  # os.urandom is used instead
        return
    assert entropy._getrandom is not None
    # A PYFUNCTYPE prototype: ctypes calls it with the GIL held.
    assert entropy._getrandom._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
