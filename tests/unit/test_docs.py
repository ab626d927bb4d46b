"""The documents name only tests that exist (``file.py::test``, relative to tests/unit/
unless a path under tests/ is given), so a renamed or removed test cannot leave a claim
in docs/security.md, or anywhere else, without its check."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"`((?:tests/[\w/]+/)?\w+\.py)::(\w+)")


def test_every_test_a_document_names_exists() -> None:
    missing = []
    for doc in sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]):
        for file, name in REFERENCE.findall(doc.read_text(encoding="utf-8")):
            path = ROOT / file if file.startswith("tests/") else ROOT / "tests" / "unit" / file
            if not path.exists() or not re.search(rf"^def {name}\(", path.read_text(), re.M):
                missing.append(f"{doc.name}: {file}::{name}")
    assert missing == []


def test_the_check_finds_references() -> None:
    security = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    assert len(REFERENCE.findall(security)) > 100
