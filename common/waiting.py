"""Reading what a DEALER socket already holds, without polling and without exceptions.

The client transport and the worker loop both ask the socket (``ZMQ_EVENTS``) before
reading: one option read is cheaper than a poll, and far cheaper than the ``zmq.Again``
a non-blocking receive raises when nothing is left. Flags are plain ints: pyzmq's flag
enums cost more than the call they are passed to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import zmq

__all__ = ["messages_waiting", "readable"]

_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


def readable(socket: zmq.Socket[bytes]) -> bool:
    """True if a whole message can be received from ``socket`` at once."""
    return bool(cast(int, socket.getsockopt(_EVENTS)) & _POLLIN)


def messages_waiting(socket: zmq.Socket[bytes]) -> Iterator[list[zmq.Frame]]:
    """The messages ``socket`` holds now, received without copying; never blocks."""
    while readable(socket):
        yield socket.recv_multipart(flags=_NOBLOCK, copy=False)
