"""The broker's state records: workers, services, pending requests, events and counters.

These are plain mutable records owned by :class:`broker.core.Broker`; nothing here does
I/O or decides anything. They are kept small and slotted because one ``Pending`` is made
per request on the hot path.

How the state fits together:

- every registered worker is in ``Broker.workers`` (by routing id) and counted in its
  service; an idle worker is also in ``Service.waiting``, oldest first (the LRU order);
  a busy one holds exactly one ``Pending`` in ``Worker.pending``;
- a request that found no idle worker waits in ``Service.queue`` (first come, first
  served) or, if a worker was lost while holding it, in ``Service.retry``, which is
  served first. Each of the two queues is in deadline order, so expiry only looks at
  their heads. Invariant: a service never has both an idle worker and a waiting request.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, fields

from common.mdp import Part

# A multipart message for the ROUTER socket: frames[0] is the peer's routing id. A plain
# list rather than a record, because one is built for every message routed.
Outgoing = list[Part]


class Pending:
    """One client request the broker is responsible for until it is answered."""

    __slots__ = ("body", "client", "deadline", "retried")

    def __init__(self, client: bytes, body: Sequence[Part], deadline: float) -> None:
        self.client = client
        self.body = body  # body frames, passed through untouched (zmq.Frame when large)
        self.deadline = deadline  # while queued: when it expires
        self.retried = False  # already handed to a worker that was lost

    @property
    def echo(self) -> Part:
        """The first body frame (the envelope), copied into error replies."""
        return self.body[0]


class Worker:
    """A registered worker: one service, at most one request in hand."""

    __slots__ = ("expiry", "identity", "pending", "service")

    def __init__(self, identity: bytes, service: Service, expiry: float) -> None:
        self.identity = identity
        self.service = service
        self.expiry = expiry  # removed when `now` passes this without hearing from it
        self.pending: Pending | None = None


class Service:
    """A named service: its idle workers in LRU order and its waiting requests."""

    __slots__ = ("name", "queue", "retry", "waiting", "workers")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.waiting: OrderedDict[bytes, Worker] = OrderedDict()
        self.queue: deque[Pending] = deque()
        self.retry: deque[Pending] = deque()
        self.workers = 0  # registered workers, idle or busy

    def next_request(self) -> Pending | None:
        """The request to serve next: retries first, then first come first served."""
        if self.retry:
            return self.retry.popleft()
        if self.queue:
            return self.queue.popleft()
        return None

    @property
    def queued(self) -> int:
        return len(self.queue) + len(self.retry)

    def unused(self) -> bool:
        """True when nothing refers to this service any more, so it may be forgotten."""
        return self.workers == 0 and not self.queue and not self.retry


@dataclass(frozen=True, slots=True)
class Event:
    """Something the shell may log: the core itself never logs.

    ``kind`` is one of ``malformed``, ``worker_ready``, ``worker_rejected``,
    ``worker_removed``, ``request_rejected``, ``request_expired``, ``request_requeued``,
    ``request_lost``. ``peer`` is the routing id concerned.
    """

    kind: str
    peer: bytes
    service: bytes = b""
    detail: str = ""


@dataclass(slots=True)
class Stats:
    """Counters since start, for the shutdown summary and for tests."""

    requests: int = 0
    replies: int = 0
    mmi: int = 0
    queue_full: int = 0
    expired: int = 0
    requeued: int = 0
    lost: int = 0
    bad_requests: int = 0
    malformed: int = 0
    disconnects_sent: int = 0
    workers_registered: int = 0
    workers_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
