"""What ``put`` uploads and what ``get`` writes: local paths paired with stored names.

``put FILE`` stores FILE under its base name (or ``--name``); ``put -r DIR`` stores every
regular file below DIR under ``DIR-name/relative/path`` (POSIX separators, sorted, empty
directories skipped, symbolic links to directories not followed). ``get NAME`` writes to
``./NAME``, or to ``-o PATH``: into it when it is a directory (or when several names are
given), else as that file. ``get -r NAME`` and ``rm -r NAME`` take the stored file NAME
and every stored file below ``NAME/`` (:func:`stored_below`), so what ``put -r DIR`` stored
comes back, or goes, whole. A stored name is always a safe relative path (see
:mod:`common.names`), so joining it under a directory never leaves that directory.

Every name is validated before anything is sent, so a bad one fails the command early.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from common.errors import FileAccessError, RefusedError
from common.messages import ErrorCode
from common.names import validate_file_name

__all__ = ["download_targets", "names_below", "stored_below", "tree_names", "upload_sources"]


def upload_sources(
    paths: Sequence[Path], *, recursive: bool, name: str | None = None
) -> list[tuple[Path, str]]:
    """``(local file, stored name)`` for each file to upload, in order."""
    if name is not None and (len(paths) != 1 or paths[0].is_dir()):
        raise FileAccessError("--name needs exactly one file")
    pairs: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            if not recursive:
                raise FileAccessError(f"cannot upload {path}: a directory (use -r)")
            pairs.extend(_walk(path))
        else:
            pairs.append((path, path.name if name is None else name))
    seen: set[str] = set()
    for _, stored in pairs:
        validate_file_name(stored)
        if stored in seen:
            raise FileAccessError(f"two files would be stored as {stored!r}")
        seen.add(stored)
    return pairs


def _walk(root: Path) -> list[tuple[Path, str]]:
    base = root.resolve().name
    found: list[tuple[Path, str]] = []
    for directory, dirs, files in os.walk(root, onerror=_walk_error):
        dirs.sort()
        relative = PurePosixPath(*Path(directory).relative_to(root).parts)
        for file in sorted(files):
            found.append((Path(directory) / file, str(PurePosixPath(base) / relative / file)))
    return found


def _walk_error(exc: OSError) -> None:
    raise FileAccessError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc


def download_targets(names: Sequence[str], output: Path | None) -> list[tuple[str, Path]]:
    """``(stored name, local path)`` for each name to download, in order."""
    for name in names:
        validate_file_name(name)
    if output is not None and not output.is_dir():
        if len(names) > 1:
            raise FileAccessError(f"{output} is not a directory (several names were given)")
        return [(names[0], output)]
    if len(set(names)) < len(names):  # its downloads would race for one file
        twice = next(name for name in names if names.count(name) > 1)
        raise FileAccessError(f"{twice!r} is given twice")
    base = output if output is not None else Path()
    return [(name, base.joinpath(*PurePosixPath(name).parts)) for name in names]


def tree_names(names: Sequence[str]) -> list[str]:
    """The names given to ``get -r`` / ``rm -r``: checked, a trailing ``/`` dropped."""
    trees = [name.rstrip("/") or name for name in names]
    for tree in trees:
        validate_file_name(tree)
    return trees


def stored_below(tree: str, stored: Sequence[str]) -> list[str]:
    """The stored names of ``tree``: the file of that name and those below ``tree/``."""
    return sorted(name for name in stored if name == tree or name.startswith(tree + "/"))


def names_below(trees: Sequence[str], stored: Sequence[str], *, missing_ok: bool) -> list[str]:
    """``-r``: the names in ``stored`` of each tree (the name itself and those below
    ``tree/``), each once; a tree with none is ``not-found`` unless ``missing_ok``."""
    chosen: dict[str, None] = {}
    for tree in trees:
        found = stored_below(tree, stored)
        if not found and not missing_ok:
            raise RefusedError(str(ErrorCode.NOT_FOUND), f"nothing stored as {tree} or in it")
        chosen.update(dict.fromkeys(found))
    return list(chosen)
