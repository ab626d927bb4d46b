"""The everyday commands against real processes: ls, get, rm, mv, put of several files,
``put --sha256``.

Every client is ``python -m client`` with its own home; downloads are compared byte for
byte with the source and with the ``cksum`` command; what the server holds is read back
with the server's own code.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import session as core
from client.cli import ExitStatus
from client.connection import FILE_SERVICE
from client.identity import load_identity
from client.partial import part_paths
from common.messages import Deleted, DeleteFile
from workers.files import LIST_PAGE

from .stack import ROOT, Stack, running_stack
from .test_resume import CountingRelay as Relay
from .test_upload_e2e import (
    SMALL,
    SUMMARY,
    account,
    blob_dirs,
    cksum_command,
    put,
    record_other_sha256,
    server_of,
    stored_plaintext,
)

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024
GET = " bytes  cksum "


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="module")
def home(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lee")
    assert stack.client(path, "register", "lee").returncode == 0
    return path


def ls_json(stack: Stack, home: Path) -> dict[str, dict[str, object]]:
    result = stack.client(home, "ls", "--json")
    assert result.returncode == 0, result.stderr
    return {record["name"]: record for record in json.loads(result.stdout)}


def get(stack: Stack, home: Path, *args: str) -> str:
    result = stack.client(home, "get", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- ls ----------------------------------------------------------------------------------


def test_ls_shows_own_files_with_size_time_verified_and_crc(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "listed.txt"
    source.write_text("listed\n" * 1000)
    before = int(time.time() * 1000)
    put(stack, home, source)
    record = ls_json(stack, home)["listed.txt"]
    assert record["size"] == source.stat().st_size
    assert record["crc"] == cksum_command(source)
    assert record["verified"] is True and record["sha256"] is None
    assert before - 5000 <= int(record["uploaded_at_ms"]) <= int(time.time() * 1000) + 5000  # type: ignore[call-overload]
    table = stack.client(home, "ls")
    assert table.returncode == 0
    line = next(line for line in table.stdout.splitlines() if line.startswith("listed.txt"))
    assert "6.8 KiB" in line and "yes" in line and str(cksum_command(source)) in line


def test_ls_does_not_show_other_clients_files(stack: Stack, home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert stack.client(other, "register", "lee-other").returncode == 0
    assert ls_json(stack, other) == {}
    assert stack.client(other, "ls").stdout.strip() == "no files"


def test_ls_gathers_every_page(stack: Stack, tmp_path: Path) -> None:
    many = tmp_path / "many"
    assert stack.client(many, "register", "lee-many").returncode == 0
    tree = tmp_path / "t"
    tree.mkdir()
    names = [f"t/{n:05d}" for n in range(LIST_PAGE + 2)]  # two pages, the second short
    for name in names:
        (tmp_path / name).write_bytes(name.encode())
    result = stack.client(many, "put", "-r", "--quiet", str(tree), timeout=600)
    assert result.returncode == 0, result.stderr
    listed = stack.client(many, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [record["name"] for record in records] == names
    assert all(record["size"] == len(record["name"]) for record in records)
    table = stack.client(many, "ls")
    assert table.returncode == 0
    assert sum(line.startswith("t/") for line in table.stdout.splitlines()) == len(names)


# --- get ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 1], ids=lambda size: f"{size}B"
)
def test_get_round_trip_at_chunk_boundaries(
    stack: Stack, home: Path, tmp_path: Path, size: int
) -> None:
    source = tmp_path / f"rt-{size}.bin"
    source.write_bytes(os.urandom(size))
    put(stack, home, source, **SMALL)
    target = tmp_path / "out.bin"
    out = get(stack, home, source.name, "-o", str(target))
    assert out.startswith(f"{target}  {size}{GET}{cksum_command(source)}  verified")
    assert target.read_bytes() == source.read_bytes()
    assert not any(path.exists() for path in part_paths(target))


def test_get_never_overwrites_without_force(stack: Stack, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "keep.txt"
    source.write_text("from the server\n")
    put(stack, home, source)
    target = tmp_path / "local.txt"
    target.write_text("precious local data\n")
    result = stack.client(home, "get", "keep.txt", "-o", str(target))
    assert result.returncode == ExitStatus.FILE_ERROR
    assert "--force" in result.stderr
    assert target.read_text() == "precious local data\n"
    get(stack, home, "keep.txt", "-o", str(target), "--force")
    assert target.read_text() == "from the server\n"


def test_get_of_a_missing_name_is_refused(stack: Stack, home: Path, tmp_path: Path) -> None:
    result = stack.client(home, "get", "no-such-file", "-o", str(tmp_path / "x"))
    assert result.returncode == ExitStatus.REFUSED
    assert "no such file" in result.stderr and not (tmp_path / "x").exists()


def test_altered_chunk_fails_and_leaves_nothing_under_the_name(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tamper.bin"
    source.write_bytes(os.urandom(4 * CHUNK))
    put(stack, home, source, **SMALL)
    target = tmp_path / "tamper.out"
    relay = Relay(stack.endpoint, flip_reply=2)
    try:
        result = stack.client(
            home, "get", "tamper.bin", "-o", str(target), "--server", relay.endpoint
        )
    finally:
        relay.close()
    assert relay.flipped >= 1
    assert result.returncode == ExitStatus.INTEGRITY, result.stderr
    assert "Traceback" not in result.stderr
    assert not target.exists()


# --- put and get of several files ------------------------------------------------------------


def test_put_r_and_get_several_names_keep_relative_paths(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    files = {"a.txt": b"A\n", "sub/b.bin": os.urandom(5000), "sub/deeper/c.txt": b"C" * 70_000}
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    loose = tmp_path / "loose.txt"
    loose.write_text("loose\n")
    result = stack.client(home, "put", "-r", str(tree), str(loose), env=SMALL)
    assert result.returncode == 0, result.stderr
    names = [f"tree/{rel}" for rel in files] + ["loose.txt"]
    assert sorted(line.split("  ")[0] for line in result.stdout.splitlines()) == sorted(names)
    listed = ls_json(stack, home)
    assert all(listed[name]["verified"] for name in names)
    out = tmp_path / "restore"
    out.mkdir()
    printed = get(stack, home, *names, "-o", str(out))
    assert len(printed.splitlines()) == len(names)
    for rel, data in files.items():
        assert (out / "tree" / rel).read_bytes() == data
    assert (out / "loose.txt").read_text() == "loose\n"


def _file_requests(stack: Stack, downloads: int) -> list[str]:
    """The types of the requests the (one) file worker handled, in its order, read once
    its log has reached the ``downloads``-th DOWNLOAD_BEGIN since the last call.

    The worker logs a request before it replies, but its lines reach the test through a
    pipe and a reading thread: without the wait the last ones may not be there yet."""
    worker = stack.workers["file"][0]
    for _ in range(downloads):
        worker.expect(worker.stderr, lambda line: '"DOWNLOAD_BEGIN"' in line)
    records = (json.loads(line) for line in worker.transcript)
    return [r["type"] for r in records if r.get("event") == "request"]


def _most_uploads_open(types: list[str]) -> int:
    open_, most = 0, 0
    for kind in types:
        open_ += {"UPLOAD_BEGIN": 1, "UPLOAD_CONFIRM": -1}.get(kind, 0)
        most = max(most, open_)
    return most


def _begins_in_a_row(types: list[str]) -> bool:
    downloads = [kind for kind in types if kind.startswith("DOWNLOAD_")]
    return any(a == b == "DOWNLOAD_BEGIN" for a, b in itertools.pairwise(downloads))


def test_small_files_go_several_at_a_time_and_large_ones_alone(tmp_path: Path) -> None:
    """``put -r`` and ``get -r`` run files of one chunk or less in lanes
    (client/parallel.py): the one file worker sees several uploads open at once and
    downloads begun before the last one's chunk was asked for. With ``--limit-rate``, or
    ``client.parallel_files`` = 1, they go one at a time. Every file verifies and comes
    back whole each time."""
    tree = tmp_path / "many"
    files = {f"a/{i:02d}.bin": os.urandom(1 + i * 1000) for i in range(16)}  # one chunk each
    files["b/big.bin"] = os.urandom(3 * CHUNK + 5)  # goes alone, between the two runs
    files.update({f"c/{i:02d}.txt": b"small %d\n" % i * (i + 1) for i in range(16)})
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    with running_stack(tmp_path / "stack", file_workers=1, log_level="debug") as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "lanes").returncode == 0
        alone = {**SMALL, "CIPHERDROP_CLIENT_PARALLEL_FILES": "1"}
        for flags, env, lanes in (
            ((), SMALL, True),
            (("--limit-rate", "1G"), SMALL, False),
            ((), alone, False),
        ):
            stack.workers["file"][0].transcript.clear()
            put = stack.client(home, "put", "-r", str(tree), *flags, env=env)
            assert put.returncode == 0, put.stderr
            printed = sorted(line.split("  ")[0] for line in put.stdout.splitlines())
            assert printed == sorted(f"many/{rel}" for rel in files)
            out = tmp_path / f"back-{len(list(tmp_path.glob('back-*')))}"
            got = stack.client(home, "get", "-r", "many", "-o", str(out), *flags, env=env)
            assert got.returncode == 0, got.stderr
            for rel, data in files.items():
                assert (out / "many" / rel).read_bytes() == data
            types = _file_requests(stack, downloads=len(files))
            assert (_most_uploads_open(types) > 1) is lanes, types
            assert _begins_in_a_row(types) is lanes, types
        listed = ls_json(stack, home)
        assert all(listed[f"many/{rel}"]["verified"] for rel in files)


def test_get_r_and_rm_r_take_a_directory_put_with_r_whole(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    album = tmp_path / "album"
    files = {"one.jpg": os.urandom(3000), "2024/two.jpg": b"two\n", "2024/may/three.jpg": b"3"}
    for rel, data in files.items():
        (album / rel).parent.mkdir(parents=True, exist_ok=True)
        (album / rel).write_bytes(data)
    neighbour = tmp_path / "album-notes.txt"  # shares the prefix, not the directory
    neighbour.write_text("not in the album\n")
    assert stack.client(home, "put", "-r", str(album), str(neighbour)).returncode == 0
    only = stack.client(home, "ls", "--json", "album/2024", "album-notes.txt")
    assert sorted(entry["name"] for entry in json.loads(only.stdout)) == [
        "album-notes.txt",
        "album/2024/may/three.jpg",
        "album/2024/two.jpg",
    ]
    assert stack.client(home, "ls", "nothing-here").stdout.strip() == "no files"

    out = tmp_path / "restored" / "here"  # -o of get -r: a directory, made if missing
    printed = get(stack, home, "-r", "album/", "-o", str(out))
    assert len(printed.splitlines()) == len(files)
    for rel, data in files.items():
        assert (out / "album" / rel).read_bytes() == data
    assert not (out / "album-notes.txt").exists()
    only_may = tmp_path / "may"
    get(stack, home, "-r", "album/2024/may", "-o", str(only_may))
    assert [p.name for p in only_may.rglob("*") if p.is_file()] == ["three.jpg"]

    missing = stack.client(home, "get", "-r", "no-such-album", "-o", str(tmp_path / "nothing"))
    assert missing.returncode == ExitStatus.REFUSED
    assert "nothing stored as no-such-album" in missing.stderr
    assert not (tmp_path / "nothing").exists()

    removed = stack.client(home, "rm", "-r", "album")
    assert removed.returncode == 0, removed.stderr
    assert sorted(removed.stdout.split()) == sorted(
        [f"album/{rel}" for rel in files] + ["deleted"] * 3
    )
    listed = ls_json(stack, home)
    assert not any(name.startswith("album/") for name in listed)
    assert "album-notes.txt" in listed
    assert stack.client(home, "rm", "-r", "album").returncode == ExitStatus.REFUSED
    assert stack.client(home, "rm", "-r", "-f", "album").returncode == 0


def test_put_skip_unchanged_sends_only_what_changed_since_it_was_put(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("same.txt", "edited.txt", "touched.txt"):
        (docs / name).write_text(f"{name} as first put\n")
    assert stack.client(home, "put", "-r", str(docs)).returncode == 0
    (docs / "edited.txt").write_text("edited.txt, longer now\n")  # size changes
    later = (docs / "touched.txt").stat().st_mtime_ns + 10**9
    os.utime(docs / "touched.txt", ns=(later, later))  # same bytes, new time: sent again
    (docs / "new.txt").write_text("new\n")
    result = stack.client(home, "put", "-r", "--skip-unchanged", str(docs))
    assert result.returncode == 0, result.stderr
    lines = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert lines["docs/same.txt"].endswith("unchanged, skipped")
    for sent in ("docs/edited.txt", "docs/touched.txt", "docs/new.txt"):
        assert lines[sent].endswith("verified"), lines[sent]
    for name in ("same.txt", "edited.txt", "touched.txt", "new.txt"):
        assert stored_plaintext(stack, home, f"docs/{name}") == (docs / name).read_bytes()
    again = stack.client(home, "put", "-r", "--skip-unchanged", str(docs))
    assert again.stdout.count("unchanged, skipped") == 4, again.stdout
    # Without the option every file is sent, as before.
    plain = stack.client(home, "put", "-r", str(docs))
    assert plain.stdout.count("verified") == 4


def test_get_skip_unchanged_fetches_only_files_that_differ(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (kept / name).write_bytes(os.urandom(3 * CHUNK + 7))
    assert stack.client(home, "put", "-r", str(kept), env=SMALL).returncode == 0
    out = tmp_path / "out"
    get(stack, home, "-r", "kept", "-o", str(out))
    (out / "kept" / "b.bin").write_bytes(os.urandom(3 * CHUNK + 7))  # same size, other bytes
    (out / "kept" / "c.bin").unlink()
    skipping = ["get", "-r", "--skip-unchanged", "kept", "-o", str(out)]
    refused = stack.client(home, *skipping)
    assert refused.returncode == ExitStatus.FILE_ERROR, refused.stderr
    assert "b.bin exists; use --force" in refused.stderr
    result = stack.client(home, *skipping, "--force")
    assert result.returncode == 0, result.stderr
    lines = {Path(line.split("  ")[0]).name: line for line in result.stdout.splitlines()}
    assert lines["a.bin"].endswith("unchanged, skipped")
    assert lines["b.bin"].endswith("verified")
    # The three go together (client/parallel.py): c.bin may have been fetched by the
    # refused run, which finished the files under way when b.bin was refused.
    earlier = [line for line in refused.stdout.splitlines() if "c.bin  " in line]
    assert lines["c.bin"].endswith("unchanged, skipped" if earlier else "verified")
    assert all(line.endswith("verified") for line in earlier)
    for name in ("a.bin", "b.bin", "c.bin"):
        assert (out / "kept" / name).read_bytes() == (kept / name).read_bytes()


def client_bytes(
    stack: Stack, home: Path, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """The client with binary standard input and output."""
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=stack.client_env(home),
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_put_from_standard_input_and_get_to_standard_output(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 * CHUNK + 11) + b"tail"
    stored = client_bytes(stack, home, "put", "-", "--name", "piped.bin", stdin=data)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.decode().startswith(f"piped.bin  {len(data)} bytes  cksum ")
    assert stored_plaintext(stack, home, "piped.bin") == data
    assert not list(Path(tempfile.gettempdir()).glob("cipherdrop-stdin-*"))  # spool removed

    fetched = client_bytes(stack, home, "get", "piped.bin", "-o", "-")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == data  # exactly the file, nothing else on standard output
    assert b"verified, on standard output" in fetched.stderr

    missing = client_bytes(stack, home, "get", "no-such.bin", "-o", "-")
    assert missing.returncode == ExitStatus.REFUSED and missing.stdout == b""
    for usage in (
        ["put", "-"],  # no --name
        ["put", "-", "other.txt", "--name", "x"],
        ["get", "a", "b", "-o", "-"],
        ["get", "-r", "a", "-o", "-"],
    ):
        refused = client_bytes(stack, home, *usage)
        assert refused.returncode == 2 and b"standard" in refused.stderr, usage


def test_limit_rate_paces_put_and_get(stack: Stack, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "paced.bin"
    source.write_bytes(os.urandom(16 * CHUNK))  # 1 MiB in 16 chunks that do not compress
    rate = 512 * 1024
    # The first chunk goes at once; the other 15 need at least 15 * 64 KiB / rate seconds.
    least = 15 * CHUNK / rate
    started = time.monotonic()
    put_result = stack.client(home, "put", str(source), "--limit-rate", "512k", env=SMALL)
    took = time.monotonic() - started
    assert put_result.returncode == 0, put_result.stderr
    assert took >= least, took
    started = time.monotonic()
    out = tmp_path / "paced.copy"
    get(stack, home, "paced.bin", "-o", str(out), "--limit-rate", "512K")
    assert time.monotonic() - started >= least
    assert out.read_bytes() == source.read_bytes()
    for bad in ("0", "fast", "1.5M", "10T"):
        refused = stack.client(home, "get", "paced.bin", "--limit-rate", bad)
        assert refused.returncode == 2 and "rate" in refused.stderr, bad


def test_put_of_a_directory_without_r_is_refused(stack: Stack, home: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    result = stack.client(home, "put", str(tmp_path / "d"))
    assert result.returncode == ExitStatus.FILE_ERROR and "-r" in result.stderr


# --- rm ----------------------------------------------------------------------------------


def test_rm_deletes_the_file_and_reclaims_its_space(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "doomed.bin"
    source.write_bytes(os.urandom(3 * CHUNK))
    put(stack, home, source, **SMALL)
    server = server_of(stack)
    try:
        row = server.store.get_file(load_identity(home).client_id, "doomed.bin")
    finally:
        server.store.close()
    assert row is not None and row.transfer_id.hex() in blob_dirs(stack)
    result = stack.client(home, "rm", "doomed.bin")
    assert (result.returncode, result.stdout.strip()) == (0, "doomed.bin  deleted")
    assert row.transfer_id.hex() not in blob_dirs(stack)
    assert "doomed.bin" not in ls_json(stack, home)
    again = stack.client(home, "rm", "doomed.bin")
    assert again.returncode == ExitStatus.REFUSED and "no such file" in again.stderr
    assert stack.client(home, "rm", "-f", "doomed.bin").returncode == 0


def test_mv_renames_and_replaces_only_with_force(stack: Stack, home: Path, tmp_path: Path) -> None:
    for name, text in (("draft.md", "draft\n"), ("published.md", "published\n")):
        (tmp_path / name).write_text(text)
        put(stack, home, tmp_path / name)
    moved = stack.client(home, "mv", "draft.md", "notes/draft.md")
    assert (moved.returncode, moved.stdout.strip()) == (0, "draft.md -> notes/draft.md  renamed")
    listed = ls_json(stack, home)
    assert "draft.md" not in listed and listed["notes/draft.md"]["size"] == len("draft\n")
    taken = stack.client(home, "mv", "notes/draft.md", "published.md")
    assert taken.returncode == ExitStatus.REFUSED
    assert "published.md exists; use --force to replace it" in taken.stderr
    assert ls_json(stack, home) == listed
    forced = stack.client(home, "mv", "-f", "notes/draft.md", "published.md")
    assert forced.returncode == 0 and "replaced" in forced.stdout
    assert stored_plaintext(stack, home, "published.md") == b"draft\n"
    missing = stack.client(home, "mv", "notes/draft.md", "x.md")
    assert missing.returncode == ExitStatus.REFUSED and "no such file" in missing.stderr
    bad = stack.client(home, "mv", "published.md", "../escape")
    assert bad.returncode != 0 and "invalid name" in bad.stderr and "Traceback" not in bad.stderr


def sha256sum_command(path: Path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def test_put_sha256_is_recorded_listed_and_checked_by_get(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "hashed.bin"  # three chunks, one of them compressed on the wire
    source.write_bytes(os.urandom(2 << 20) + b"a line of text\n" * 40_000)
    expected = sha256sum_command(source)
    put = stack.client(home, "put", str(source), "--sha256", "--quiet")
    assert put.returncode == 0, put.stderr
    assert f"  sha256 {expected}  verified" in put.stdout
    plain = tmp_path / "unhashed.bin"
    plain.write_bytes(b"no digest asked for")
    assert stack.client(home, "put", str(plain), "--quiet").returncode == 0
    # client.sha256 = true makes it the default, and --no-sha256 still turns it off
    always = {"CIPHERDROP_CLIENT_SHA256": "true"}
    by_setting = tmp_path / "by-setting.bin"
    by_setting.write_bytes(b"a digest by default")
    assert stack.client(home, "put", str(by_setting), "-q", env=always).returncode == 0
    opted_out = tmp_path / "opted-out.bin"
    opted_out.write_bytes(b"not this one")
    put = stack.client(home, "put", str(opted_out), "-q", "--no-sha256", env=always)
    assert put.returncode == 0, put.stderr
    listed = {name: entry["sha256"] for name, entry in ls_json(stack, home).items()}
    assert listed["hashed.bin"] == expected and listed["unhashed.bin"] is None
    assert listed["by-setting.bin"] == sha256sum_command(by_setting)
    assert listed["opted-out.bin"] is None

    copy = tmp_path / "copy.bin"
    got = stack.client(home, "get", "hashed.bin", "-o", str(copy), "--quiet")
    assert got.returncode == 0, got.stderr
    assert f"  sha256 {expected}  verified" in got.stdout
    assert copy.read_bytes() == source.read_bytes()
    got = stack.client(home, "get", "unhashed.bin", "-o", str(tmp_path / "u"), "--quiet")
    assert got.returncode == 0 and "  sha256 " not in got.stdout


def test_a_get_that_does_not_match_the_recorded_sha256_fails_and_places_nothing(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    source = tmp_path / "guarded.bin"
    source.write_bytes(os.urandom(1 << 20))
    assert stack.client(home, "put", str(source), "--sha256", "--quiet").returncode == 0
    record_other_sha256(server_of(stack), home, "guarded.bin")  # a store that lost it
    target = tmp_path / "out"
    target.mkdir()
    got = stack.client(home, "get", "guarded.bin", "-o", str(target), "--quiet")
    assert got.returncode == ExitStatus.INTEGRITY, got.stderr
    assert "SHA-256" in got.stderr and "Traceback" not in got.stderr
    assert list(target.iterdir()) == []  # no file, no part file left behind


def test_rm_is_idempotent_by_request_id(stack: Stack, home: Path, tmp_path: Path) -> None:
    for name in ("first.txt", "second.txt"):
        (tmp_path / name).write_text(name)
        put(stack, home, tmp_path / name)
    acct = account(stack, home)
    try:
        req = core.session_request(acct.session, DeleteFile("first.txt"))
        replies = [
            core.open_reply(acct.session, req, acct.conn.send(FILE_SERVICE, req), Deleted)
            for _ in range(2)
        ]
        # The retry gets the recorded answer (existed) although the file is gone now.
        assert replies == [Deleted("first.txt", True)] * 2
    finally:
        acct.conn.close()
    assert set(ls_json(stack, home)) >= {"second.txt"}
    assert "first.txt" not in ls_json(stack, home)


# --- a large file ------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# Runs its arguments as a child and prints that child's peak RSS (KiB) as the last line of
# stderr. The launcher is small, so the child's figure is its own: Linux carries the
# pre-exec high-water mark of a forked process into ru_maxrss, which would otherwise
# report the size of this test process.
_MEASURE = (
    "import os, sys\n"
    "pid = os.spawnv(os.P_NOWAIT, sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss, file=sys.stderr)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measured_client(stack: Stack, home: Path, *args: str) -> tuple[str, float]:
    """Run the client to completion; its stdout and its own peak RSS in MiB."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "client", *args],
        cwd=ROOT,
        env=stack.client_env(home),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, int(result.stderr.splitlines()[-1]) / 1024


@pytest.mark.timeout(600)  # about 45 s here; bench/lifecycle.py runs 5 GiB
def test_1_gib_round_trip_in_bounded_memory(tmp_path: Path) -> None:
    with running_stack(tmp_path / "stack") as stack:
        home = tmp_path / "home"
        assert stack.client(home, "register", "gib").returncode == 0
        source = tmp_path / "gib.bin"
        with source.open("wb") as out:
            for index in range(1024):  # half random, half text
                out.write(os.urandom(1 << 20) if index % 2 else b"gigabyte text\n" * 74898)
        size = source.stat().st_size
        out, put_peak = measured_client(stack, home, "put", str(source), "-q")
        match = SUMMARY.match(out.strip())
        assert match is not None, out
        assert (int(match["size"]), int(match["crc"])) == (size, cksum_command(source))
        target = tmp_path / "gib.out"
        out, get_peak = measured_client(stack, home, "get", "gib.bin", "-q", "-o", str(target))
        assert f"{size}{GET}{match['crc']}  verified" in out
        assert sha256_of(target) == sha256_of(source)
        assert put_peak < 250, f"client peak RSS during put {put_peak} MiB"
        assert get_peak < 250, f"client peak RSS during get {get_peak} MiB"
        for proc in (stack.broker, *stack.workers["file"]):
            assert peak_rss_mib(proc.pid) < 250, f"{proc.name}: {peak_rss_mib(proc.pid)} MiB"
