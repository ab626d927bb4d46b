"""The three workers as real processes behind a real broker, driven over a zmq DEALER.

Requests are built by the unit-test harness (``tests/unit/server_harness.py``) exactly as
a client builds them; only the transport differs: MDP client frames over TCP on
127.0.0.1. Every receive has a deadline and every socket closes with linger 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from common import keys
from common.cksum import cksum
from common.codec import decode_body, decode_envelope, encode_body
from common.keys import RsaKey
from common.messages import (
    FileList,
    ListFiles,
    MessageType,
    ServerKey,
    ServerKeyRequest,
    SessionGranted,
    UploadBegin,
    UploadReady,
)
from common.secretfile import write_secret_file
from tests.unit.server_harness import Client, envelope, rsa_key

from .conftest import BrokerProcess
from .procs import Proc, wait_for_service

pytestmark = pytest.mark.integration

TIMEOUT_MS = 10_000
WORKER_FLAGS = ["--heartbeat-interval", "0.5", "--reconnect-min", "0.05", "--reconnect-max", "0.5"]


class Remote:
    """The client's view of the server: MDP requests over one DEALER socket."""

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self.socket = socket
        self._public: RsaKey | None = None

    @property
    def now(self) -> int:
        return int(time.time() * 1000)

    def call(self, service: str, frames: list[bytes]) -> list[bytes]:
        name = f"cipherdrop.{service}".encode()
        self.socket.send_multipart([b"", b"MDPC01", name, *frames])
        if not self.socket.poll(TIMEOUT_MS):
            raise TimeoutError(f"no reply from {name!r}")
        reply = self.socket.recv_multipart()
        assert reply[:3] == [b"", b"MDPC01", name], reply[:4]
        return reply[3:]

    @property
    def server_public(self) -> RsaKey:
        if self._public is None:
            frames = [envelope(MessageType.SERVER_KEY_REQUEST), encode_body(ServerKeyRequest())]
            reply = self.call("register", frames)
            body = decode_body(decode_envelope(reply[0]).type, reply[1])
            assert isinstance(body, ServerKey)
            self._public = keys.load_public_key(body.public_key)
        return self._public


@pytest.fixture
def stack(
    broker: BrokerProcess, tmp_path: Path, dealer: Callable[[str], zmq.Socket[bytes]]
) -> Iterator[tuple[Remote, list[Proc], Path]]:
    data = tmp_path / "var"
    data.mkdir(mode=0o700)
    # A pre-made server key keeps start-up fast; the master key is made by the race below.
    write_secret_file(data / "server_key.pem", keys.private_key_to_pem(rsa_key("server")))
    workers = [
        Proc(
            [
                sys.executable,
                "-m",
                "workers",
                service,
                "--broker",
                broker.endpoint,
                "--data",
                str(data),
                "--log-format",
                "json",
                *WORKER_FLAGS,
            ],
            f"worker-{service}-{n}",
        )
        for n, service in enumerate(["register", "key", "file", "file"])
    ]
    try:
        for worker in workers:
            worker.expect(worker.stderr, lambda line: '"worker.ready"' in line)
        for service in ("register", "key", "file"):
            wait_for_service(broker.endpoint, f"cipherdrop.{service}")
        yield Remote(dealer(broker.endpoint)), workers, data
    finally:
        for worker in workers:
            worker.stop()
            print(f"--- {worker.name} ---\n{worker.tail(30)}")


def log_lines(worker: Proc) -> list[dict[str, object]]:
    return [json.loads(line) for line in worker.transcript if line.startswith("{")]


def test_register_connect_upload_download_through_the_broker(
    stack: tuple[Remote, list[Proc], Path],
) -> None:
    remote, workers, data = stack
    assert keys.fingerprint(remote.server_public) == keys.fingerprint(rsa_key("server"))
    alice = Client(remote, "alice", rsa_key("alice"))  # type: ignore[arg-type]
    alice.register()
    assert isinstance(alice.connect(), SessionGranted)
    payload = os.urandom(40_000) + b"compressible line\n" * 4000
    committed, done = alice.upload("docs/payload.bin", payload, 8192, compress=True)
    assert committed.crc == cksum(payload) and done.verified
    listing = alice.ask(ListFiles())
    assert isinstance(listing, FileList) and [f.name for f in listing.files] == ["docs/payload.bin"]

    # A captured request sent again gets the recorded reply; nothing new is stored.
    begin = alice.session_frames(UploadBegin("again", 1, 8192, 1))
    first = alice.open_reply(remote.call("file", begin), begin[0])
    second = alice.open_reply(remote.call("file", begin), begin[0])
    assert isinstance(first, UploadReady) and first == second

    for worker in workers:  # every line they wrote, then, is in their transcripts
        assert worker.stop() == 0
        worker.wait_transcript()
    lines = [line for worker in workers for line in log_lines(worker)]
    requests = [line for line in lines if line.get("event") == "request"]
    assert {"ok", "replayed"} <= {line["outcome"] for line in requests}
    text = "\n".join(t for worker in workers for t in worker.transcript)
    for secret in (alice.session_key, first.data_key, (data / "master.key").read_bytes()):
        assert secret.hex() not in text
    assert b"compressible line" not in (data / "cipherdrop.db").read_bytes()


def test_workers_stop_cleanly_on_sigterm(stack: tuple[Remote, list[Proc], Path]) -> None:
    _, workers, _ = stack
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    assert [worker.popen.wait(timeout=10) for worker in workers] == [0] * len(workers)
    for worker in workers:
        worker.wait_transcript()
    assert all(any(line.get("event") == "worker.stopped" for line in log_lines(w)) for w in workers)
