"""The broker's zmq loop: one ROUTER socket around a :class:`broker.core.Broker`.

All protocol decisions are the core's; this loop only moves frames and logs. It
guarantees that the loop never blocks on a peer: every send is non-blocking on a
ROUTER_MANDATORY socket, so a peer that is gone (EHOSTUNREACH) or not reading (its
high-water mark reached) costs one counted, rate-limited log line, and a worker lost
that way is removed at once (its request given back). Frames are received with
``copy=False`` so a large body is never copied by the broker, only referenced.
Messages larger than ``max_message_size`` never reach the loop: libzmq drops the peer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections import Counter
from math import ceil

import structlog
import zmq

from common.errors import ConfigError

from .core import Broker
from .ratelimit import LogLimiter
from .state import Event, Outgoing

log = structlog.get_logger()

BATCH = 256  # messages taken per wake-up before timers are looked at again
# Plain ints: pyzmq's flag enums cost more than the send itself on small messages.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
SHUTDOWN_LINGER_MS = 200  # time granted to the goodbye messages, and no more
_WARN = frozenset(
    {
        "malformed",
        "worker_rejected",
        "request_rejected",
        "request_expired",
        "request_requeued",
        "request_lost",
        "undeliverable",
        "internal_error",
    }
)


class BrokerServer:
    """Binds the ROUTER socket, runs the loop until :meth:`stop`, then says goodbye."""

    def __init__(
        self,
        core: Broker,
        endpoint: str,
        *,
        hwm: int,
        max_message_size: int,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.counters: Counter[str] = Counter()
        self._own_context = context is None
        self._context = context if context is not None else zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        self._limiter = LogLimiter()
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def bind(self) -> str:
        """Bind and return the endpoint actually bound (a ``*`` port resolved)."""
        try:
            self._socket.bind(self.endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"broker.endpoint: cannot bind {self.endpoint!r}: {exc}") from exc
        bound = self._socket.getsockopt(zmq.LAST_ENDPOINT)
        return bound.decode() if isinstance(bound, bytes) else str(bound)

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler or another thread."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            os.write(self._wake_w, b"\0")

    def run(self) -> None:
        """Route messages until :meth:`stop` is called."""
        core, clock = self.core, time.monotonic
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while not self._stopping:
            now = clock()
            if now >= core.next_deadline():
                self._send(core.tick(now))
                self._log_events(now)
                if suppressed := self._limiter.suppressed(now):
                    log.warning("broker.log_suppressed", counts=suppressed)
                continue
            poller.poll(max(1, ceil((core.next_deadline() - now) * 1000)))
            self._drain()

    def close(self) -> None:
        """Send the goodbyes (DISCONNECT to workers, 503 to waiting clients) and close."""
        if not self._socket.closed:
            self._send(self.core.shutdown())
            self._log_events(time.monotonic())
            self._socket.close(linger=SHUTDOWN_LINGER_MS)
        if self._own_context:
            self._context.term()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def summary(self) -> dict[str, int]:
        """Counters for the shutdown log line."""
        out = self.core.stats.as_dict()
        out.update(self.counters)
        for kind, count in self._limiter.flush().items():
            out[f"log_suppressed_{kind}"] = count
        return out

    # -- internals ---------------------------------------------------------------------

    def _drain(self) -> None:
        """Handle what is waiting on the socket, up to BATCH messages."""
        sock, handle, clock = self._socket, self.core.handle, time.monotonic
        recv, get = sock.recv, sock.get
        for _ in range(BATCH):
            # Asking is cheaper than catching zmq.Again (its construction is slow).
            if not int(get(_EVENTS)) & _POLLIN:
                break
            frame = recv(_NOBLOCK, copy=False)
            frames = [frame]
            while frame.more:  # the rest of a multipart message is already here
                frame = recv(0, copy=False)
                frames.append(frame)
            try:
                out = handle(frames[0].bytes, frames[1:], clock())
            except Exception:  # a bug in the core must not stop the broker
                self.counters["internal_errors"] += 1
                if self._limiter.allow("internal_error", b"", clock()):
                    log.exception("broker.internal_error")
                continue
            if out:
                self._send(out)
        if self.core.events:
            self._log_events(clock())

    def _send(self, messages: list[Outgoing]) -> None:
        send = self._socket.send
        queue = messages
        while queue:
            retry: list[Outgoing] = []  # what the core says after a failed delivery
            for frames in queue:
                try:
                    # A ROUTER takes or refuses a message on its first frame (the routing
                    # id); once that is taken, the other frames cannot fail. copy=True is
                    # the fast path for small bytes; a zmq.Frame is sent without a copy
                    # whatever the flag says.
                    last = len(frames) - 1
                    for index, part in enumerate(frames):
                        send(part, _MORE if index < last else _NOBLOCK)
                except zmq.Again:
                    retry.extend(self._undeliverable(frames, "peer queue full"))
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    retry.extend(self._undeliverable(frames, "peer gone"))
            queue = retry

    def _undeliverable(self, frames: Outgoing, why: str) -> list[Outgoing]:
        peer = frames[0]
        peer = peer if isinstance(peer, bytes) else peer.bytes
        now = time.monotonic()
        self.counters["undeliverable"] += 1
        if self._limiter.allow("undeliverable", peer, now):
            log.warning("broker.undeliverable", peer=peer.hex(), detail=why)
        return self.core.drop_peer(peer, now)

    def _log_events(self, now: float) -> None:
        allow = self._limiter.allow
        for event in self.core.drain_events():
            if allow(event.kind, event.peer, now):
                _log_event(event)


def _log_event(event: Event) -> None:
    fields: dict[str, str] = {"peer": event.peer.hex()}
    if event.service:
        fields["service"] = event.service[:64].decode("ascii", errors="replace")
    if event.detail:
        fields["detail"] = event.detail
    if event.kind in _WARN or event.detail in ("expired", "unreachable", "protocol error"):
        log.warning(f"broker.{event.kind}", **fields)
    else:
        log.info(f"broker.{event.kind}", **fields)
