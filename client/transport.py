"""The client's DEALER socket to the broker: a thin zmq loop around :class:`TransportCore`.

:class:`Transport` (blocking) and :class:`~client.async_transport.AsyncTransport`
(``zmq.asyncio``, in its own module so that commands do not load asyncio) share the
core, so both have the same rules for request ids, the window, deadlines, retries and
Lazy-Pirate reconnects (see :mod:`client.transport_core`). What they add is the socket:
linger 0, every wait bounded by the core's next deadline, sends that never block.

One call::

    with Transport("tcp://127.0.0.1:5555", timeout=10.0, retries=3, window=8) as t:
        reply = t.request("cipherdrop.key", [envelope, payload])

Many calls, at most ``window`` on the wire, replies in completion order::

    for reply in t.map("cipherdrop.file", bodies):
        ...

Errors: :class:`~common.errors.Timeout`, :class:`~common.errors.BrokerUnavailable` and
:class:`~common.errors.RefusedError` (a status reply from the broker or a worker).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import zmq

from client.transport_core import (
    Body,
    Failure,
    Outcome,
    Reconnect,
    Send,
    TransportCore,
    request_key,
)
from common.errors import LocalProtocolError
from common.log import get_logger
from common.mdp import Part
from common.waiting import messages_waiting, readable

KeyOf = Callable[[Part], bytes]


def unwrap(outcome: Outcome) -> list[Body]:
    """The reply frames of a finished request, or its error raised."""
    if isinstance(outcome, Failure):
        raise outcome.error
    return list(outcome.frames)


class BaseTransport:
    """What both transports share: the core, finished results and socket set-up."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        retries: int,
        window: int,
        key_of: KeyOf,
    ) -> None:
        self.endpoint = endpoint
        self.core = TransportCore(timeout=timeout, retries=retries, window=window, key_of=key_of)
        self._finished: dict[bytes, Outcome] = {}
        self._log = get_logger().bind(endpoint=endpoint)

    def _configure(self, socket: zmq.Socket[Any]) -> None:
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self.endpoint)

    def _collect(self) -> None:
        for outcome in self.core.outcomes():
            self._finished[outcome.key] = outcome

    def _ignored(self, reason: str | None) -> None:
        if reason is not None:
            self._log.debug("transport.reply_ignored", reason=reason)

    def _wait_ms(self) -> int:
        deadline = self.core.next_deadline()
        if deadline == float("inf"):
            raise LocalProtocolError("waiting for a reply with no request in flight")
        return max(0, int((deadline - time.monotonic()) * 1000) + 1)

    def _take(self, keys: set[bytes]) -> Outcome | None:
        """Pop the first finished outcome among ``keys`` (completion order), if any."""
        for key in self._finished:
            if key in keys:
                keys.discard(key)
                return self._finished.pop(key)
        return None


class Transport(BaseTransport):
    """A blocking MDP client transport; not thread-safe (one per thread)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        window: int = 8,
        key_of: KeyOf = request_key,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        super().__init__(endpoint, timeout=timeout, retries=retries, window=window, key_of=key_of)
        self._context = context or zmq.Context.instance()
        self._socket = self._open()
        self._poller = self._poller_of(self._socket)

    def request(self, service: str, frames: Sequence[Part]) -> list[Body]:
        """Send one request and return its reply body."""
        return self.result(self.submit(service, frames))

    def submit(self, service: str, frames: Sequence[Part]) -> bytes:
        """Queue one request (sent when the window has room); return its key."""
        key = self.core.submit(service, frames, time.monotonic())
        self._execute()
        return key

    def result(self, key: bytes) -> list[Body]:
        """Wait for the request ``key`` to finish; return its reply or raise its error."""
        keys = {key}
        return unwrap(self._next(keys))

    def map(self, service: str, bodies: Iterable[Sequence[Part]]) -> Iterator[list[Body]]:
        """Send every body, at most ``window`` on the wire; yield replies as they finish.

        ``bodies`` is consumed lazily, so it may be a generator over a large file. The
        first failed request raises its error; requests still in flight are then left to
        finish or time out in the background of later calls.
        """
        keys: set[bytes] = set()
        source = iter(bodies)
        exhausted = False
        while True:
            while not exhausted and self.core.pending < self.core.window:
                body = next(source, None)
                if body is None:
                    exhausted = True
                else:
                    keys.add(self.submit(service, body))
            if not keys:
                return
            yield unwrap(self._next(keys))

    def close(self) -> None:
        """Close the socket (linger 0); unfinished requests are abandoned."""
        self._socket.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the loop --------------------------------------------------------------------

    def _next(self, keys: set[bytes]) -> Outcome:
        while (outcome := self._take(keys)) is None:
            # A reply already waiting needs no poll (a chunk's usually is).
            if readable(self._socket) or self._poller.poll(self._wait_ms()):
                for frames in messages_waiting(self._socket):
                    self._ignored(self.core.receive(frames, time.monotonic()))
            self.core.tick(time.monotonic())
            self._execute()
        return outcome

    def _execute(self) -> None:
        for command in self.core.drain():
            if isinstance(command, Reconnect):
                self._log.info("transport.reconnect")
                self._socket.close(linger=0)
                self._socket = self._open()
                self._poller = self._poller_of(self._socket)
            elif isinstance(command, Send):
                try:
                    self._socket.send_multipart(command.frames, flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    self._log.warning("transport.send_dropped")  # the deadline resends it
        self._collect()

    def _open(self) -> zmq.Socket[bytes]:
        socket = self._context.socket(zmq.DEALER)
        self._configure(socket)
        return socket

    @staticmethod
    def _poller_of(socket: zmq.Socket[bytes]) -> zmq.Poller:
        poller = zmq.Poller()  # kept: Socket.poll builds a new Poller on every call
        poller.register(socket, zmq.POLLIN)
        return poller
