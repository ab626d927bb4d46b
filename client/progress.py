"""The upload progress bar: bytes, rate and ETA on standard error, or nothing at all.

It is shown only when standard error is a terminal and ``--quiet`` was not given, so
scripts and logs never receive control characters. Standard output is left alone: the
one-line result goes there. tqdm is imported only when a bar is shown: it costs ~30 ms
of start-up that scripts and ``--quiet`` runs need not pay.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

__all__ = ["Progress", "make_progress", "progress_label"]


class Progress(Protocol):
    """What the upload pipeline reports to."""

    def update(self, n: int) -> object: ...

    def reset(self, total: int | None = None) -> object: ...

    def close(self) -> object: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def progress_label(name: str, number: int, count: int) -> str:
    """The bar's label: the name, after ``[number/count]`` when there are several files."""
    return name if count == 1 else f"[{number}/{count}] {name}"


def make_progress(
    total: int, label: str, *, quiet: bool = False, stream: TextIO | None = None
) -> Progress:
    """A tqdm bar on ``stream`` (standard error) if it is a terminal, else a silent one."""
    out = stream if stream is not None else sys.stderr
    if quiet or not out.isatty():
        return _Silent()
    from tqdm import tqdm  # type: ignore[import-untyped]

    bar: Progress = tqdm(
        total=total,
        desc=label,
        file=out,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        dynamic_ncols=True,
        leave=False,
    )
    return bar
