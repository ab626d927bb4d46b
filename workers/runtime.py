"""The Majordomo (7/MDP) worker protocol as a state machine that does no I/O.

:class:`WorkerCore` is the whole worker side of the protocol: registration (READY),
the heartbeat schedule, broker liveness, reconnect back-off with jitter and the rule of
one request at a time. It never touches a socket and never reads the clock: the loop in
:mod:`workers.loop` passes frames and a monotonic ``now`` in, and carries out the
:class:`Connect`, :class:`Close` and :class:`Send` commands it drains from the core.

Guarantees:

* READY is the first thing sent on every new connection.
* The worker sends a HEARTBEAT at least every ``heartbeat_interval`` seconds, idle or
  busy: a handler that takes longer than the broker's liveness window (a commit that
  syncs a gigabyte) is not mistaken for a dead worker, as long as the loop keeps ticking
  while it runs (:mod:`workers.loop` does).
* A broker silent for ``heartbeat_liveness * heartbeat_interval`` seconds is dead, idle
  or busy: the socket is closed and a new one opened after a back-off that doubles from
  ``reconnect_min`` up to ``reconnect_max`` (each delay drawn in ``[d/2, d]`` so that a
  fleet of workers does not reconnect in lock step). The back-off resets once the broker
  is heard from again. A request held when the connection is lost is *abandoned*: its
  reply is dropped when it comes (the broker has given the request to someone else or
  lost it; the client resends), and no new connection is made before it comes, so the
  worker never holds two requests.
* A REPLY is only ever sent for the request being held, with that request's client
  address, and a second REQUEST while one is held is refused as a protocol error.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from common import mdp
from common.errors import LocalProtocolError, RemoteProtocolError
from common.mdp import Part

#: What may go into a reply body: big frames stay zero-copy in any of these forms.
BodyPart: TypeAlias = "Part | memoryview"


# -- commands the loop carries out ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a new DEALER socket to the broker (any previous one is already closed)."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket at once (linger 0): the broker is dead or told us to go."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send these frames on the current socket."""

    frames: tuple[BodyPart, ...]


Command: TypeAlias = Connect | Close | Send


# -- events the core reports ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request to handle now; answer it with :meth:`WorkerCore.reply`."""

    client: bytes
    body: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The broker sent DISCONNECT; the core has scheduled a reconnect."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """The broker sent frames that are not valid 7/MDP for a worker; they were dropped."""

    reason: str


Event: TypeAlias = Request | Disconnected | Malformed


class State(enum.Enum):
    """Where the worker is.

    OFFLINE --tick at reconnect time--> IDLE  (Connect + READY; not while a reply is owed)
    IDLE    --REQUEST-->                BUSY
    BUSY    --reply()-->                IDLE
    IDLE    --DISCONNECT or silence-->  OFFLINE (Close, reconnect scheduled)
    BUSY    --DISCONNECT or silence-->  OFFLINE (Close; the request is abandoned)
    """

    OFFLINE = "offline"
    IDLE = "idle"
    BUSY = "busy"


class WorkerCore:
    """Sans-I/O 7/MDP worker for one service; see the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        heartbeat_interval: float = 2.5,
        heartbeat_liveness: int = 3,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if not service or service.startswith("mmi."):
            raise ValueError(f"service: {service!r} is not a name a worker may register")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        if heartbeat_liveness < 1:
            raise ValueError("heartbeat_liveness must be >= 1")
        if not 0 < reconnect_min <= reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        self.service = service.encode()
        self.interval = heartbeat_interval
        self.liveness = heartbeat_liveness
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._rng = rng if rng is not None else random.Random()  # jitter, not secrets
        self.state = State.OFFLINE
        self._reconnect_at = float("-inf")  # connect on the first tick
        self._failures = 0  # reconnects since the broker was last heard from
        self._last_heard = 0.0
        self._last_sent = 0.0
        self._client = b""
        self._abandoned = False  # a request was held when the connection was lost
        self._outbox: list[Command] = []

    # -- inputs ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance timers: connect when due, expire a silent broker, heartbeat when due."""
        if self.state is State.OFFLINE:
            if now >= self._reconnect_at and not self._abandoned:
                self._connect(now)
        elif now - self._last_heard >= self.liveness * self.interval:
            self._close(now)
        elif now - self._last_sent >= self.interval:
            self._send(now, mdp.HEARTBEAT)

    def receive(self, frames: Sequence[Part], now: float) -> Event | None:
        """Take one multipart message from the broker; return what it means, if anything."""
        if self.state is State.OFFLINE:
            return None  # left over from a socket we already gave up on
        try:
            command = mdp.parse_worker(frames)
        except RemoteProtocolError as exc:
            return Malformed(str(exc))
        self._last_heard = now
        if command.command == mdp.HEARTBEAT:
            self._failures = 0
            return None
        if command.command == mdp.REQUEST:
            return self._request(command)
        if command.command == mdp.DISCONNECT:
            self._close(now)
            return Disconnected()
        return Malformed(f"unexpected {mdp.COMMAND_NAMES[command.command]} from the broker")

    def reply(self, body: Sequence[BodyPart], now: float) -> bool:
        """Answer the held request with ``body``; the worker is idle again afterwards.

        Returns False, sending nothing, for a request abandoned when its connection was
        lost (the reconnect may then go ahead).
        """
        if self._abandoned:
            self._abandoned = False
            return False
        if self.state is not State.BUSY:
            raise LocalProtocolError("reply() without a request being held")
        self.state = State.IDLE
        self._send(now, mdp.REPLY, self._client, b"", *body)
        return True

    def shutdown(self) -> None:
        """Say goodbye to the broker (if connected) and close; the core stays offline."""
        if self.state is not State.OFFLINE:
            self._outbox.append(Send((b"", mdp.MDPW01, mdp.DISCONNECT)))
            self._outbox.append(Close())
        self._abandoned = self._abandoned or self.state is State.BUSY
        self.state = State.OFFLINE
        self._reconnect_at = float("inf")

    # -- outputs ---------------------------------------------------------------------

    def drain(self) -> list[Command]:
        """The commands produced since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float:
        """The monotonic time at which :meth:`tick` next has something to do."""
        if self.state is State.OFFLINE:
            return float("inf") if self._abandoned else self._reconnect_at
        return min(
            self._last_sent + self.interval,
            self._last_heard + self.liveness * self.interval,
        )

    def backoff(self, failures: int) -> float:
        """The reconnect delay after ``failures`` consecutive failures (with jitter)."""
        ceiling = min(self.reconnect_max, self.reconnect_min * 2.0 ** min(failures, 60))
        return self._rng.uniform(max(self.reconnect_min, ceiling / 2), ceiling)

    # -- internals -------------------------------------------------------------------

    def _request(self, command: mdp.WorkerCommand) -> Event:
        if self.state is State.BUSY:
            return Malformed("REQUEST while another request is held")
        self._failures = 0
        self.state = State.BUSY
        self._client = command.client
        return Request(command.client, command.body)

    def _connect(self, now: float) -> None:
        self.state = State.IDLE
        self._last_heard = now
        self._outbox.append(Connect())
        self._send(now, mdp.READY, self.service)

    def _close(self, now: float) -> None:
        if self.state is State.BUSY:
            self._abandoned = True
        self.state = State.OFFLINE
        self._outbox.append(Close())
        self._reconnect_at = now + self.backoff(self._failures)
        self._failures += 1

    def _send(self, now: float, command: bytes, *rest: BodyPart) -> None:
        self._last_sent = now
        self._outbox.append(Send((b"", mdp.MDPW01, command, *rest)))
