"""common.waiting: what a socket already holds, read without blocking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from common.waiting import messages_waiting, readable

TIMEOUT_MS = 5000


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    context = zmq.Context()
    sender, receiver = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    receiver.bind("inproc://waiting")
    sender.connect("inproc://waiting")
    yield sender, receiver
    sender.close(linger=0)
    receiver.close(linger=0)
    context.term()


def test_an_empty_socket_is_not_readable_and_yields_nothing(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    _, receiver = pair
    assert not readable(receiver)
    assert list(messages_waiting(receiver)) == []


def test_every_queued_message_is_read_whole_then_reading_stops(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    sender, receiver = pair
    sent = [[b"a", b"1"], [b"b"], [b"c", b"", b"3"]]
    for message in sent:
        sender.send_multipart(message)
    assert receiver.poll(TIMEOUT_MS) == zmq.POLLIN
    # inproc hands over every message of a send_multipart before it returns
    got = list(messages_waiting(receiver))
    assert [[frame.bytes for frame in message] for message in got] == sent
    assert all(isinstance(frame, zmq.Frame) for message in got for frame in message)
    assert not readable(receiver)
