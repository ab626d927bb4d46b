"""client.progress: a bar on a terminal, nothing otherwise."""

from __future__ import annotations

import io

from client.progress import make_progress, progress_label


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_bytes_rate_and_eta() -> None:
    out = Terminal()
    bar = make_progress(4 * 1024 * 1024, "file.bin", stream=out)
    bar.update(1024 * 1024)
    bar.close()
    shown = out.getvalue()
    assert "file.bin" in shown
    assert "/4.00M" in shown  # bytes done of the total, in binary units
    assert "B/s" in shown  # the rate
    assert "<" in shown  # elapsed<remaining: the ETA


def test_a_pipe_gets_nothing() -> None:
    out = io.StringIO()  # not a terminal
    bar = make_progress(100, "file.bin", stream=out)
    bar.update(50)
    bar.close()
    assert out.getvalue() == ""


def test_quiet_gets_nothing_even_on_a_terminal() -> None:
    out = Terminal()
    bar = make_progress(100, "file.bin", quiet=True, stream=out)
    bar.update(50)
    bar.close()
    assert out.getvalue() == ""


def test_several_files_are_counted_in_the_label() -> None:
    assert progress_label("a.txt", 1, 1) == "a.txt"
    assert progress_label("dir/b.txt", 2, 12) == "[2/12] dir/b.txt"
    out = Terminal()
    make_progress(10, progress_label("c.bin", 3, 4), stream=out).close()
    assert "[3/4] c.bin" in out.getvalue()
