"""The client's chunk pipeline (read + CRC, then compress + seal on a helper thread): every
chunk the server lacks comes out in order, sealed at its position, whatever it skips."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
import zmq

from client import session as core
from client import upload
from client.upload import UploadOptions
from common import crypto
from common.cksum import cksum
from common.codec import decode_envelope
from common.compress import decompress_chunk
from common.errors import FileAccessError
from common.messages import Codec, StreamPosition, UploadReady

CHUNK = 1024
TID = b"T" * 16


class Counted:
    def __init__(self) -> None:
        self.total = 0

    def update(self, n: int) -> None:
        self.total += n

    def reset(self, total: int | None = None) -> None:
        self.total = 0

    def close(self) -> None:
        pass


def session() -> core.Session:
    keys = crypto.derive_session_keys(crypto.random_key(), b"S" * 16)
    return core.Session(b"C" * 16, b"S" * 16, keys, 0)


@pytest.mark.parametrize("stored", [(), (1, 3), (0, 1, 2), (5, 6), tuple(range(7))])
@pytest.mark.parametrize("compression", [Codec.NONE, Codec.ZLIB])
def test_every_missing_chunk_comes_out_sealed_at_its_place(
    tmp_path: Path, stored: tuple[int, ...], compression: Codec
) -> None:
    # Distinct chunks (half random, half compressible) and a short last one.
    pieces = [os.urandom(CHUNK) if i % 2 else bytes([i]) * CHUNK for i in range(6)]
    data = b"".join(pieces) + b"tail"
    path = tmp_path / "f"
    path.write_bytes(data)
    key = crypto.random_key()
    ready = UploadReady(TID, key, stored)
    crc, in_flight, progress = upload.Cksum(), {}, Counted()
    options = UploadOptions(chunk_size=CHUNK, compression=compression)
    with path.open("rb", buffering=0) as stream:
        assert isinstance(stream, io.FileIO)
        reqs = list(
            upload._chunk_requests(
                session(), stream, len(data), ready, options, crc, in_flight, progress
            )
        )
    count = 7
    expected = [i for i in range(count) if i not in stored]
    assert [decode_envelope(r.frames[0]).stream.index for r in reqs] == expected  # type: ignore[union-attr]
    assert set(in_flight) == {r.request_id for r in reqs}
    for req in reqs:
        env = decode_envelope(req.frames[0])
        assert env.stream is not None
        index = env.stream.index
        assert env.stream.final == (index == count - 1)
        aad = core.chunk_aad(TID, env.codec)
        opened = crypto.open_chunk(key, index, env.stream.final, req.frames[1], aad)
        plain = decompress_chunk(env.codec, opened, CHUNK)
        assert plain == data[index * CHUNK : (index + 1) * CHUNK]
        assert in_flight[req.request_id][1] == len(plain)
    assert crc.digest() == cksum(data) and crc.length == len(data)
    assert progress.total == sum(len(data[i * CHUNK : (i + 1) * CHUNK]) for i in stored)


def test_a_file_of_one_chunk_is_sealed_without_a_helper_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    data = b"one small file\n" * 10
    path = tmp_path / "f"
    path.write_bytes(data)
    key = crypto.random_key()
    crc, in_flight = upload.Cksum(), {}
    with path.open("rb", buffering=0) as stream:
        assert isinstance(stream, io.FileIO)
        (req,) = upload._chunk_requests(
            session(),
            stream,
            len(data),
            UploadReady(TID, key, ()),
            UploadOptions(chunk_size=CHUNK),
            crc,
            in_flight,
            Counted(),
        )
    env = decode_envelope(req.frames[0])
    assert env.stream is not None and (env.stream.index, env.stream.final) == (0, True)
    opened = crypto.open_chunk(key, 0, True, req.frames[1], core.chunk_aad(TID, env.codec))
    assert decompress_chunk(env.codec, opened, CHUNK) == data
    assert crc.digest() == cksum(data) and "cipherdrop-seal" not in started


def test_a_file_that_grew_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * (CHUNK + 1))
    ready = UploadReady(TID, crypto.random_key(), ())
    with path.open("rb", buffering=0) as stream, pytest.raises(FileAccessError, match="grew"):
        assert isinstance(stream, io.FileIO)
        list(
            upload._chunk_requests(
                session(),
                stream,
                CHUNK,
                ready,
                UploadOptions(chunk_size=CHUNK),
                upload.Cksum(),
                {},
                Counted(),
            )
        )


@pytest.mark.parametrize("size", [3 * CHUNK, CHUNK // 2])  # with a helper thread, without
def test_a_chunk_that_cannot_be_sealed_raises_in_the_reading_thread(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * size)
    ready = UploadReady(TID, b"short key", ())  # AES refuses a 9-byte key
    with path.open("rb", buffering=0) as stream, pytest.raises(ValueError):
        assert isinstance(stream, io.FileIO)
        list(
            upload._chunk_requests(
                session(),
                stream,
                size,
                ready,
                UploadOptions(chunk_size=CHUNK),
                upload.Cksum(),
                {},
                Counted(),
            )
        )
    assert not [t for t in threading.enumerate() if t.name == "cipherdrop-seal"]


def test_a_small_sealed_chunk_is_bytes_that_zeromq_copies() -> None:
    key, position = crypto.random_key(), StreamPosition(TID, 0, True)
    plain = os.urandom(CHUNK)
    req = core.chunk_request(session(), key, position, Codec.NONE, plain)
    # Not a zero-copy frame, which pyzmq's garbage-collector thread would have to free.
    payload = req.frames[1]
    assert isinstance(payload, bytes) and len(payload) == CHUNK + crypto.OVERHEAD
    aad = core.chunk_aad(TID, Codec.NONE)
    assert crypto.open_chunk(key, 0, True, payload, aad) == plain


def test_a_sealed_buffer_is_reused_only_once_zeromq_let_it_go() -> None:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    sender.bind("inproc://sent-buffers")
    receiver.connect("inproc://sent-buffers")
    try:
        buffers = upload._SentBuffers()
        big = core.ZERO_COPY_FROM  # sealed, it is sent without a copy
        size = big + crypto.OVERHEAD
        first = buffers.take(size)
        key, position = crypto.random_key(), StreamPosition(TID, 0, True)
        req = core.chunk_request(session(), key, position, Codec.NONE, os.urandom(big), first)
        payload = req.frames[1]
        assert isinstance(payload, zmq.Frame) and payload.tracker is not None
        buffers.lend(first, payload)
        assert buffers.take(size) is not first  # not sent yet: a new buffer
        sender.send(payload, copy=False)
        assert receiver.poll(5000) and len(receiver.recv()) == size
        tracker = payload.tracker
        del req, payload  # the last reference to the sealed bytes outside ZeroMQ
        assert tracker.wait(5) is None and tracker.done
        assert buffers.take(size) is first
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()
