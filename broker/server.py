"""The broker's zmq loop: one ROUTER socket around a :class:`broker.core.Broker`.

All protocol decisions are the core's; this loop only moves frames and logs. It
guarantees that the loop never blocks on a peer: every send is non-blocking on a
ROUTER_MANDATORY socket, so a peer that is gone (EHOSTUNREACH) or not reading (its
high-water mark reached) costs one counted, rate-limited log line, and a worker lost
that way is removed at once (its request given back). Frames are received with
``copy=False`` so a large body is never copied by the broker, only referenced.
Messages larger than ``max_message_size`` never reach the loop: libzmq drops the peer.

Performance: per message the loop does one blocking ``recv`` per frame (its timeout set
from the core's next deadline, no poller) and sends through the base socket class. Each
extra system call per wake-up is measurable on a small, loaded machine, where libzmq's
hand-over between the application thread and its I/O thread already dominates the cost
of a small message. :meth:`stop` wakes the blocked ``recv`` with a message from a
private inproc DEALER bound to the same ROUTER.
"""

from __future__ import annotations

import contextlib
import errno
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

# Plain ints: pyzmq's flag enums cost more than the send itself on small messages.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVTIMEO = int(zmq.RCVTIMEO)
# The base class's send: the zmq.Socket override only adds argument handling for draft
# socket types, which costs more than the send itself for a small frame.
_SEND = zmq.backend.Socket.send
_MAX_WAIT_MS = 1 << 20  # RCVTIMEO is a C int; the loop just wakes up early
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
        # stop() wakes a blocked recv with a message on a private inproc endpoint of the
        # same ROUTER: cheaper than polling a second descriptor on every wake-up. It is
        # never routed to: the core does not know its routing id.
        wake = f"inproc://cipherdrop-broker-wake-{id(self):x}"
        self._socket.bind(wake)
        self._waker = self._context.socket(zmq.DEALER)
        self._waker.setsockopt(zmq.LINGER, 0)
        self._waker.connect(wake)

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
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(zmq.ZMQError):  # already closed: nothing to wake
            self._waker.send(b"", _NOBLOCK)

    def run(self) -> None:
        """Route messages until :meth:`stop` is called.

        One blocking ``recv`` per message, its timeout set from the core's next deadline:
        a poller costs several extra system calls per wake-up, which on a loaded machine
        is most of the broker's time per small message.
        """
        core, clock, sock = self.core, time.monotonic, self._socket
        recv, handle, set_option = sock.recv, core.handle, sock.setsockopt
        timeout_ms = 0
        while not self._stopping:
            now = clock()
            if now >= core.next_deadline():
                self._send(core.tick(now))
                self._log_events(now)
                if suppressed := self._limiter.suppressed(now):
                    log.warning("broker.log_suppressed", counts=suppressed)
                continue
            # A power of two no longer than the wait: never late, and the option is set a
            # dozen times per deadline rather than on every message.
            wait = min(ceil((core.next_deadline() - now) * 1000), _MAX_WAIT_MS)
            wait = 1 << (wait.bit_length() - 1)
            if wait != timeout_ms:
                set_option(_RCVTIMEO, wait)
                timeout_ms = wait
            try:
                frame = recv(0, copy=False)
            except zmq.Again:  # the deadline is due
                continue
            frames = [frame]
            while frame.more:  # the rest of a multipart message is already here
                frame = recv(0, copy=False)
                frames.append(frame)
            if self._stopping and len(frames) == 2:
                break  # the wake-up from stop(); any other message is still served
            try:
                out = handle(frames[0].bytes, frames[1:], clock())
            except Exception:  # a bug in the core must not stop the broker
                self.counters["internal_errors"] += 1
                if self._limiter.allow("internal_error", b"", clock()):
                    log.exception("broker.internal_error")
                continue
            if out:
                self._send(out)
            if core.events:
                self._log_events(clock())

    def close(self) -> None:
        """Send the goodbyes (DISCONNECT to workers, 503 to waiting clients) and close."""
        if not self._socket.closed:
            self._send(self.core.shutdown())
            self._log_events(time.monotonic())
            self._socket.close(linger=SHUTDOWN_LINGER_MS)
        self._waker.close(linger=0)
        if self._own_context:
            self._context.term()

    def summary(self) -> dict[str, int]:
        """Counters for the shutdown log line."""
        out = self.core.stats.as_dict()
        out.update(self.counters)
        for kind, count in self._limiter.flush().items():
            out[f"log_suppressed_{kind}"] = count
        return out

    # -- internals ---------------------------------------------------------------------

    def _send(self, messages: list[Outgoing]) -> None:
        sock, send = self._socket, _SEND
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
                    for index in range(last):
                        send(sock, frames[index], _MORE)
                    send(sock, frames[last], _NOBLOCK)
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
