"""Make the source tree start like an installed product before timing it.

``pip install`` compiles every module to bytecode; a source checkout gets bytecode only
as modules are first imported, and not at all where ``PYTHONDONTWRITEBYTECODE`` is set.
Without it each ``cipherdrop`` command compiles its modules again: about 70 ms of a
start-up of 0.4 s here, which a benchmark of whole commands would charge to the product.
"""

from __future__ import annotations

import compileall
from pathlib import Path

PACKAGES = ("broker", "client", "common", "config", "gateway", "workers")


def compile_sources(root: Path) -> None:
    """Write the bytecode of every package module, as an install would (quietly)."""
    for package in PACKAGES:
        compileall.compile_dir(root / package, quiet=1)
