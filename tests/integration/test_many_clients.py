"""Fifty clients at once against one broker and two workers of each kind.

Each client is a thread pair in this process with its own identity, sessions and sockets:
one thread uploads its files while the other downloads each one as soon as it is
verified. Every download must equal its source; no request may be lost (every call
returns or the test fails); no storage error ("database is locked") may reach a client,
and no worker may answer ``internal``. Clients share a few pre-made RSA keys (each still
registers and proves possession itself): generating fifty would dominate the run.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from client import connection
from client.connection import Account, Connection, TransportOptions, register
from client.download import DownloadOptions, download_file
from client.identity import load_private_key
from client.progress import make_progress
from client.upload import UploadOptions, open_source, upload_file
from common import keys
from common.keys import RsaKey

from .stack import Stack, running_stack

pytestmark = pytest.mark.integration

CLIENTS = 50
FILES = 3
CHUNK = 64 * 1024
OPTIONS = TransportOptions(timeout=30.0, retries=3, window=4)
SILENT = make_progress(0, "", quiet=True)


@dataclass
class Outcome:
    verified: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, who: str, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{who}: {type(exc).__name__}: {exc}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path / "stack", file_workers=2) as running:
        running.start_worker("register")
        running.start_worker("key")
        yield running


def accounts(stack: Stack, home: Path, name: str) -> tuple[Account, Account]:
    """Register ``name``; two accounts of it on two connections (upload, download)."""
    conn = Connection(stack.endpoint, OPTIONS)
    identity = register(conn, home, name, server_fingerprint=None, rsa_bits=2048, passphrase=None)
    key = load_private_key(home, None)
    server_key, _ = conn.pinned_server_key(home, identity.server_fingerprint)
    other = Connection(stack.endpoint, OPTIONS)
    return Account(conn, identity, key, server_key), Account(other, identity, key, server_key)


def run_client(stack: Stack, base: Path, number: int, outcome: Outcome) -> None:
    home, name = base / f"c{number}", f"client-{number}"
    sources = []
    for index in range(FILES):
        source = base / f"c{number}-{index}.bin"
        source.write_bytes(os.urandom((number * 7919 + index * 104729) % (5 * CHUNK)))
        sources.append(source)
    try:
        uploader, downloader = accounts(stack, home, name)
    except Exception as exc:
        outcome.fail(name, exc)
        return
    ready = [threading.Event() for _ in sources]

    def upload_all() -> None:
        options = UploadOptions(chunk_size=CHUNK)
        for source, done in zip(sources, ready, strict=True):
            stream, size = open_source(source)
            with stream:
                upload_file(uploader, stream, size, source.name, options, SILENT)
            done.set()

    def download_all() -> None:
        for source, done in zip(sources, ready, strict=True):
            if not done.wait(300):
                raise TimeoutError(f"{source.name} never uploaded")
            target = source.with_suffix(".out")
            download_file(downloader, source.name, target, DownloadOptions(window=4), SILENT)
            if target.read_bytes() != source.read_bytes():
                raise AssertionError(f"{source.name} differs after the round trip")
            with outcome.lock:
                outcome.verified += 1
                outcome.bytes += source.stat().st_size

    def guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:
            outcome.fail(name, exc)
            for done in ready:
                done.set()

    threads = [threading.Thread(target=guarded, args=(w,)) for w in (upload_all, download_all)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    uploader.conn.close()
    downloader.conn.close()


@pytest.mark.timeout(600)
def test_fifty_clients_upload_and_download_at_once(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = itertools.cycle([keys.generate_private_key(2048) for _ in range(4)])
    lock = threading.Lock()

    def next_key(bits: int) -> RsaKey:
        with lock:
            return next(made)

    monkeypatch.setattr(connection.keys, "generate_private_key", next_key)
    outcome = Outcome()
    pool = [
        threading.Thread(target=run_client, args=(stack, tmp_path, n, outcome))
        for n in range(CLIENTS)
    ]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(600)
    assert outcome.errors == []
    assert outcome.verified == CLIENTS * FILES
    transcripts = [line for procs in stack.workers.values() for p in procs for line in p.transcript]
    assert not [line for line in transcripts if "locked" in line or '"internal"' in line]
