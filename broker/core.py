"""The Majordomo broker core (7/MDP + 8/MMI), without I/O.

Messages in, messages out: :meth:`Broker.handle` takes one multipart message received on
the ROUTER socket (routing id split off) and returns the messages to send;
:meth:`Broker.tick` does what time demands (heartbeats, dead workers, expired requests);
:meth:`Broker.next_deadline` says when ``tick`` is next due. The caller passes ``now``
(monotonic seconds); the core never reads a clock, never logs and never touches a socket.
What a shell may want to log is left in :attr:`Broker.events`.

Guarantees:

- a request goes to the least recently used idle worker of its service, else waits in a
  queue bounded per service and in total; a request that cannot be queued, expires in
  the queue, or is lost twice with its worker gets an error reply: never silence;
- a worker lost while holding a request gives it back once, ahead of the queue
  (requests are idempotent by request id); the second loss is answered 503;
- body frames are passed through as given; only header frames are ever read;
- any input at all is either acted on, answered per the spec, or dropped with an event:
  ``handle`` raises nothing for bad input.

Worker commands, by sender state (unknown = no READY seen; ``x`` = DISCONNECT sent)::

                 unknown            idle                 busy
    READY        register           x + remove           x + remove
    REPLY        x                  x + remove           route, become idle
    HEARTBEAT    x                  refresh              refresh
    DISCONNECT   ignore             remove               remove (request given back)
    other        x                  x + remove           x + remove
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import ConfigError
from common.mdp import (
    BAD_REQUEST,
    COMMAND_NAMES,
    DISCONNECT,
    EXPIRED,
    HEARTBEAT,
    MDPC01,
    MDPW01,
    MMI_PREFIX,
    MMI_SERVICE,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    OK,
    READY,
    REPLY,
    REQUEST,
    UNAVAILABLE,
    Part,
    as_bytes,
    valid_service_name,
)

from .state import Event, Outgoing, Pending, Service, Stats, Worker


class Broker:
    """State and rules of one Majordomo broker. See the module docstring."""

    def __init__(
        self,
        *,
        heartbeat_interval: float = 2.5,
        heartbeat_liveness: int = 3,
        request_expiry: float = 10.0,
        queue_per_service: int = 1000,
        queue_total: int = 10000,
    ) -> None:
        for name, value in (
            ("broker.heartbeat_interval", heartbeat_interval),
            ("broker.heartbeat_liveness", heartbeat_liveness),
            ("broker.request_expiry", request_expiry),
            ("broker.queue_per_service", queue_per_service),
            ("broker.queue_total", queue_total),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        self.heartbeat_interval = heartbeat_interval
        self.worker_timeout = heartbeat_interval * heartbeat_liveness
        self.request_expiry = request_expiry
        self.queue_per_service = queue_per_service
        self.queue_total = queue_total
        self.workers: dict[bytes, Worker] = {}
        self.services: dict[bytes, Service] = {}
        self.queued = 0
        self.events: list[Event] = []
        self.stats = Stats()
        self._heartbeat_at = 0.0  # the first tick heartbeats and sets the schedule
        # Never later than the true next deadline; tick() recomputes it exactly.
        self._deadline = 0.0

    # -- public API --------------------------------------------------------------------

    def handle(self, sender: bytes, frames: Sequence[Part], now: float) -> list[Outgoing]:
        """One message from ``sender``; returns the messages to send in order."""
        if len(frames) < 3:
            return self._malformed(sender, "too few frames")
        if len(frames[0]) != 0:
            return self._malformed(sender, "no empty delimiter frame")
        header = as_bytes(frames[1])
        if header == MDPW01:
            return self._from_worker(sender, frames, now)
        if header == MDPC01:
            return self._from_client(sender, frames, now)
        return self._malformed(sender, "unknown protocol header")

    def tick(self, now: float) -> list[Outgoing]:
        """Heartbeat workers when due, remove silent ones, answer expired requests."""
        out: list[Outgoing] = []
        if now >= self._heartbeat_at:
            out.extend([w.identity, b"", MDPW01, HEARTBEAT] for w in self.workers.values())
            self._heartbeat_at = now + self.heartbeat_interval
        for worker in [w for w in self.workers.values() if w.expiry <= now]:
            self.stats.disconnects_sent += 1
            out.append([worker.identity, b"", MDPW01, DISCONNECT])
            out.extend(self._remove(worker, "expired", now))
        for service in list(self.services.values()):
            for queue in (service.retry, service.queue):
                while queue and queue[0].deadline <= now:
                    pending = queue.popleft()
                    self.queued -= 1
                    self.stats.expired += 1
                    self.events.append(Event("request_expired", pending.client, service.name))
                    out.append(_error(pending, service.name, EXPIRED, b"expired in queue"))
            self._forget_if_unused(service)
        self._deadline = self._compute_deadline()
        return out

    def next_deadline(self) -> float:
        """When :meth:`tick` must next run (it may run earlier or more often, harmlessly)."""
        return self._deadline

    def drop_peer(self, peer: bytes, now: float) -> list[Outgoing]:
        """The socket could not deliver to ``peer`` (gone, or its queue is full).

        A worker is removed (its request given back); a client needs nothing: its
        remaining replies will fail the same way and be counted by the shell.
        """
        worker = self.workers.get(peer)
        if worker is None:
            return []
        return self._remove(worker, "unreachable", now)

    def shutdown(self) -> list[Outgoing]:
        """Goodbyes before the socket closes: DISCONNECT every worker, 503 every request."""
        out: list[Outgoing] = []
        for worker in list(self.workers.values()):
            out.append([worker.identity, b"", MDPW01, DISCONNECT])
            if worker.pending is not None:
                out.append(_error(worker.pending, worker.service.name, UNAVAILABLE, b"stopping"))
                worker.pending = None
        for service in self.services.values():
            while (pending := service.next_request()) is not None:
                out.append(_error(pending, service.name, UNAVAILABLE, b"stopping"))
        self.workers.clear()
        self.services.clear()
        self.queued = 0
        return out

    def drain_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    # -- clients -----------------------------------------------------------------------

    def _from_client(self, sender: bytes, frames: Sequence[Part], now: float) -> list[Outgoing]:
        name = as_bytes(frames[2])
        if len(frames) < 4:
            self.stats.bad_requests += 1
            self.events.append(Event("request_rejected", sender, name, "empty body"))
            return [[sender, b"", MDPC01, name, BAD_REQUEST, b"empty body", b""]]
        if name.startswith(MMI_PREFIX):
            return [self._mmi(sender, name, frames)]
        service = self.services.get(name)
        if service is None:
            if not valid_service_name(name):
                self.stats.bad_requests += 1
                self.events.append(Event("request_rejected", sender, b"", "bad service name"))
                return [[sender, b"", MDPC01, name, BAD_REQUEST, b"bad service name", frames[3]]]
            service = self.services[name] = Service(name)
        self.stats.requests += 1
        body = frames[3:]
        if service.waiting:
            _, worker = service.waiting.popitem(last=False)
            return [self._assign(worker, Pending(sender, body, 0.0))]
        if len(service.queue) >= self.queue_per_service or self.queued >= self.queue_total:
            self.stats.queue_full += 1
            self.events.append(Event("request_rejected", sender, name, "queue full"))
            self._forget_if_unused(service)
            return [[sender, b"", MDPC01, name, UNAVAILABLE, b"queue full", body[0]]]
        deadline = now + self.request_expiry
        service.queue.append(Pending(sender, body, deadline))
        self.queued += 1
        if deadline < self._deadline:
            self._deadline = deadline
        return []

    def _mmi(self, sender: bytes, name: bytes, frames: Sequence[Part]) -> Outgoing:
        self.stats.mmi += 1
        if name != MMI_SERVICE:
            return [sender, b"", MDPC01, name, NOT_IMPLEMENTED]
        service = self.services.get(as_bytes(frames[3]))
        found = service is not None and service.workers > 0
        return [sender, b"", MDPC01, name, OK if found else NOT_FOUND]

    # -- workers -----------------------------------------------------------------------

    def _from_worker(self, sender: bytes, frames: Sequence[Part], now: float) -> list[Outgoing]:
        command = as_bytes(frames[2])
        worker = self.workers.get(sender)
        if command == REPLY:
            return self._reply(sender, worker, frames, now)
        if command == HEARTBEAT and worker is not None and len(frames) == 3:
            worker.expiry = now + self.worker_timeout
            return []
        if command == READY and worker is None and len(frames) == 4:
            return self._ready(sender, as_bytes(frames[3]), now)
        if command == DISCONNECT:
            if worker is None:
                return []
            return self._remove(worker, "disconnected", now)
        return self._reject(sender, worker, _why_rejected(command, worker), now)

    def _ready(self, sender: bytes, name: bytes, now: float) -> list[Outgoing]:
        if name.startswith(MMI_PREFIX) or not valid_service_name(name):
            return self._reject(sender, None, "READY for a reserved or invalid service", now)
        service = self.services.get(name)
        if service is None:
            service = self.services[name] = Service(name)
        worker = Worker(sender, service, now + self.worker_timeout)
        self.workers[sender] = worker
        service.workers += 1
        self.stats.workers_registered += 1
        self.events.append(Event("worker_ready", sender, name))
        if worker.expiry < self._deadline:
            self._deadline = worker.expiry
        return self._serve(worker)

    def _reply(
        self, sender: bytes, worker: Worker | None, frames: Sequence[Part], now: float
    ) -> list[Outgoing]:
        pending = worker.pending if worker is not None else None
        if (
            worker is None
            or pending is None
            or len(frames) < 6
            or len(frames[4]) != 0
            or as_bytes(frames[3]) != pending.client
        ):
            return self._reject(sender, worker, _why_rejected(REPLY, worker), now)
        worker.pending = None
        worker.expiry = now + self.worker_timeout
        self.stats.replies += 1
        out: list[Outgoing] = [[pending.client, b"", MDPC01, worker.service.name, *frames[5:]]]
        out.extend(self._serve(worker))
        return out

    def _serve(self, worker: Worker) -> list[Outgoing]:
        """``worker`` has just become idle: give it the next request or make it wait."""
        service = worker.service
        pending = service.next_request() if service.queued else None
        if pending is None:
            service.waiting[worker.identity] = worker  # newest at the end: LRU order
            return []
        self.queued -= 1
        return [self._assign(worker, pending)]

    def _assign(self, worker: Worker, pending: Pending) -> Outgoing:
        worker.pending = pending
        return [worker.identity, b"", MDPW01, REQUEST, pending.client, b"", *pending.body]

    def _reject(self, sender: bytes, worker: Worker | None, why: str, now: float) -> list[Outgoing]:
        """Answer an unexpected or invalid command with DISCONNECT and forget the worker."""
        self.stats.disconnects_sent += 1
        self.events.append(Event("worker_rejected", sender, b"", why))
        out: list[Outgoing] = [[sender, b"", MDPW01, DISCONNECT]]
        if worker is not None:
            out.extend(self._remove(worker, "protocol error", now))
        return out

    def _remove(self, worker: Worker, why: str, now: float) -> list[Outgoing]:
        """Forget ``worker``; give its request back once, or answer it 503."""
        service = worker.service
        del self.workers[worker.identity]
        service.waiting.pop(worker.identity, None)
        service.workers -= 1
        self.stats.workers_removed += 1
        self.events.append(Event("worker_removed", worker.identity, service.name, why))
        pending, worker.pending = worker.pending, None
        out: list[Outgoing] = []
        if pending is not None:
            if pending.retried:
                self.stats.lost += 1
                self.events.append(Event("request_lost", pending.client, service.name, why))
                out.append(_error(pending, service.name, UNAVAILABLE, b"worker lost"))
            else:
                self.stats.requeued += 1
                self.events.append(Event("request_requeued", pending.client, service.name, why))
                out.extend(self._requeue(service, pending, now))
        self._forget_if_unused(service)
        return out

    def _requeue(self, service: Service, pending: Pending, now: float) -> list[Outgoing]:
        pending.retried = True
        if service.waiting:
            _, worker = service.waiting.popitem(last=False)
            return [self._assign(worker, pending)]
        # Already admitted once, so it may exceed the queue bounds by the workers lost.
        pending.deadline = now + self.request_expiry
        service.retry.append(pending)
        self.queued += 1
        self._deadline = min(self._deadline, pending.deadline)
        return []

    # -- housekeeping ------------------------------------------------------------------

    def _malformed(self, sender: bytes, why: str) -> list[Outgoing]:
        self.stats.malformed += 1
        self.events.append(Event("malformed", sender, b"", why))
        return []

    def _forget_if_unused(self, service: Service) -> None:
        # Unknown names cost memory only while requests for them wait.
        if service.unused():
            self.services.pop(service.name, None)

    def _compute_deadline(self) -> float:
        deadline = self._heartbeat_at
        for worker in self.workers.values():
            deadline = min(deadline, worker.expiry)
        for service in self.services.values():
            for queue in (service.retry, service.queue):
                if queue:
                    deadline = min(deadline, queue[0].deadline)
        return deadline


def _error(pending: Pending, service: bytes, status: bytes, reason: bytes) -> Outgoing:
    return [pending.client, b"", MDPC01, service, status, reason, pending.echo]


def _why_rejected(command: bytes, worker: Worker | None) -> str:
    name = COMMAND_NAMES.get(command)
    if name is None:
        return "unknown command"
    if command == REQUEST:
        return "REQUEST is a broker command"
    if command == READY:
        return "malformed READY" if worker is None else "READY from a registered worker"
    if worker is None:
        return f"{name} from an unregistered worker"
    if command == REPLY and worker.pending is None:
        return "REPLY without a request"
    return f"malformed {name}"


__all__ = ["Broker", "Event", "Outgoing", "Stats"]
