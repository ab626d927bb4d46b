"""The client side of 7/MDP with request ids, a window, deadlines and retries, without I/O.

:class:`TransportCore` keeps a table of requests keyed by their request id (taken from
the envelope, the first body frame). At most ``window`` requests are on the wire; the
rest wait in submission order. The loop in :mod:`client.transport` passes replies and a
monotonic ``now`` in and carries out the :class:`Send` and :class:`Reconnect` commands
it drains; finished requests come out of :meth:`TransportCore.outcomes`.

Rules (requests are idempotent by design, so a resend is always safe):

* Each send of a request has a deadline ``now + timeout``. When it passes, the request
  is sent again with the same request id, up to ``retries`` times; then it fails with
  :class:`~common.errors.BrokerUnavailable` if nothing at all was heard from the broker
  since the request was first sent, else :class:`~common.errors.Timeout`.
* Lazy Pirate: when a request times out and the broker has been silent since it was sent,
  the socket is presumed dead: :class:`Reconnect` is emitted, then every request on the
  wire is sent again on the new socket (with a fresh deadline).
* Broker status replies ``[status, reason, echo]`` (``echo`` = our envelope): 503 (no
  worker, queue full, worker lost) and 504 (expired in the queue) are retried after a
  short back-off that doubles per attempt and count as retries; once retries are spent a
  503 fails as :class:`~common.errors.RefusedError` (code ``"503"``) and a 504 as
  :class:`~common.errors.Timeout`. Any other status (a worker's 500) fails at once as
  ``RefusedError(status, reason)``.
* A reply for a request that is no longer in flight (a duplicate caused by a resend, or
  one that came too late) is ignored, as is anything malformed up to its request id.
  Matching reads only the request id (:func:`~common.codec.peek_request_id`); the reply
  is checked whole by whoever opens it (:mod:`client.session`), as a tampered payload
  under a valid envelope always was.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from common import mdp
from common.codec import peek_request_id
from common.errors import (
    BrokerUnavailable,
    CipherdropError,
    LocalProtocolError,
    RefusedError,
    RemoteProtocolError,
    Timeout,
)
from common.mdp import Part, as_bytes

RETRYABLE = frozenset({mdp.UNAVAILABLE, mdp.EXPIRED})

Body: TypeAlias = bytes | memoryview  # a reply body frame, see _body_part
# Body frames at least this long (file chunks) are handed on as views of the received
# frame instead of copies: a 1 MiB copy per chunk measured 4-6% of a download's client CPU.
_VIEW_FROM = 64 * 1024


def _body_part(part: Part) -> Body:
    """Small frames as bytes; big ones as a read-only view that keeps the frame alive."""
    if type(part) is bytes or len(part) < _VIEW_FROM:
        return as_bytes(part)
    return part.buffer  # type: ignore[union-attr]


def request_key(envelope: Part) -> bytes:
    """The correlation key of a request or reply: its envelope's request id."""
    return peek_request_id(as_bytes(envelope))


@dataclass(frozen=True, slots=True)
class Send:
    """Send these frames on the current socket."""

    frames: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Close the socket (linger 0) and open a new one before sending anything more."""


Command: TypeAlias = Send | Reconnect


@dataclass(frozen=True, slots=True)
class Reply:
    """A request finished with this reply body."""

    key: bytes
    frames: tuple[Body, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """A request finished without a reply."""

    key: bytes
    error: CipherdropError


Outcome: TypeAlias = Reply | Failure


@dataclass(slots=True)
class _Entry:
    key: bytes
    service: bytes
    body: tuple[Part, ...]
    first_sent: float = 0.0
    sent_at: float = 0.0
    deadline: float = float("inf")
    resend_at: float | None = None  # set while backing off after a status reply
    retries_used: int = 0


class TransportCore:
    """Sans-I/O request table for one client socket; see the module docstring."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        window: int = 8,
        backoff: float = 0.05,
        key_of: Callable[[Part], bytes] = request_key,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.timeout = timeout
        self.retries = retries
        self.window = window
        self.backoff = backoff
        self._key_of = key_of
        self._waiting: deque[_Entry] = deque()
        self._flight: dict[bytes, _Entry] = {}
        self._outbox: list[Command] = []
        self._done: list[Outcome] = []
        self._last_heard = float("-inf")

    # -- inputs ----------------------------------------------------------------------

    def submit(self, service: str, body: Sequence[Part], now: float) -> bytes:
        """Queue a request; return its key. Sent at once if the window has room."""
        if not body:
            raise LocalProtocolError("a request needs at least the envelope frame")
        key = self._key_of(body[0])
        if key in self._flight or any(e.key == key for e in self._waiting):
            raise LocalProtocolError("request id already in use")
        self._waiting.append(_Entry(key, service.encode(), tuple(body)))
        self._pump(now)
        return key

    def receive(self, frames: Sequence[Part], now: float) -> str | None:
        """Take one message from the broker; return why it was ignored, or None if used."""
        self._last_heard = now
        try:
            message = mdp.parse_client(frames)
            status = mdp.parse_status(message.body)
            if status is None and not message.body:
                raise RemoteProtocolError("reply with an empty body")
            key = self._key_of(status.echo if status is not None else message.body[0])
        except RemoteProtocolError as exc:
            return f"malformed reply: {exc}"
        entry = self._flight.get(key)
        if entry is None:
            return "reply for no request in flight (duplicate or late)"
        if entry.service != message.service:
            return "reply from another service"
        if status is None:
            self._finish(Reply(key, tuple(_body_part(f) for f in message.body)), now)
        else:
            self._on_status(entry, status.status, status.reason, now)
        return None

    def tick(self, now: float) -> None:
        """Resend what is due, time out what is late, reconnect when the broker is silent."""
        for entry in self._flight.values():
            if entry.resend_at is not None and entry.resend_at <= now:
                entry.resend_at = None
                self._send(entry, now)
        expired = [e for e in self._flight.values() if e.resend_at is None and e.deadline <= now]
        if not expired:
            return
        # Silence since a request went out means the socket or the broker is gone, not
        # just a slow worker: start over on a fresh socket (Lazy Pirate).
        silent = any(self._last_heard < e.sent_at for e in expired)
        for entry in expired:
            if entry.retries_used >= self.retries:
                self._finish(Failure(entry.key, self._timeout_error(entry)), now, pump=False)
            else:
                entry.retries_used += 1
                if not silent:
                    self._send(entry, now)
        if silent:
            self._outbox.append(Reconnect())
            for entry in self._flight.values():
                if entry.resend_at is None:
                    self._send(entry, now)
        self._pump(now)

    # -- outputs ---------------------------------------------------------------------

    def drain(self) -> list[Command]:
        """The commands produced since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def outcomes(self) -> list[Outcome]:
        """The requests that finished since the last call, in the order they finished."""
        out, self._done = self._done, []
        return out

    def next_deadline(self) -> float:
        """The monotonic time at which :meth:`tick` next has something to do."""
        times = [e.deadline if e.resend_at is None else e.resend_at for e in self._flight.values()]
        return min(times, default=float("inf"))

    @property
    def in_flight(self) -> int:
        """Requests sent and not finished (including those backing off)."""
        return len(self._flight)

    @property
    def pending(self) -> int:
        """Requests submitted and not finished, on the wire or waiting for room."""
        return len(self._flight) + len(self._waiting)

    # -- internals -------------------------------------------------------------------

    def _on_status(self, entry: _Entry, status: bytes, reason: str, now: float) -> None:
        code = status.decode()
        if status not in RETRYABLE:
            self._finish(Failure(entry.key, RefusedError(code, reason)), now)
        elif entry.retries_used >= self.retries:
            error = Timeout(reason) if status == mdp.EXPIRED else RefusedError(code, reason)
            self._finish(Failure(entry.key, error), now)
        else:
            entry.retries_used += 1
            entry.resend_at = now + min(self.timeout, self.backoff * 2.0**entry.retries_used)

    def _timeout_error(self, entry: _Entry) -> CipherdropError:
        tries = entry.retries_used + 1
        if self._last_heard < entry.first_sent:
            return BrokerUnavailable(f"no answer from the broker after {tries} tries")
        return Timeout(f"no reply after {tries} tries of {self.timeout:g} s")

    def _finish(self, outcome: Outcome, now: float, *, pump: bool = True) -> None:
        del self._flight[outcome.key]
        self._done.append(outcome)
        if pump:
            self._pump(now)

    def _pump(self, now: float) -> None:
        while self._waiting and len(self._flight) < self.window:
            entry = self._waiting.popleft()
            entry.first_sent = now
            self._flight[entry.key] = entry
            self._send(entry, now)

    def _send(self, entry: _Entry, now: float) -> None:
        entry.sent_at = now
        entry.deadline = now + self.timeout
        self._outbox.append(Send(tuple(mdp.client_request(entry.service, entry.body))))
