"""The sans-I/O client transport: request table, window, deadlines, retries, reconnects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from broker.core import Broker
from client.transport_core import Failure, Outcome, Reconnect, Reply, Send, TransportCore
from common import mdp
from common.codec import decode_envelope, encode_envelope, new_request_id
from common.errors import (
    BrokerUnavailable,
    LocalProtocolError,
    RefusedError,
    Timeout,
)
from common.messages import PROTOCOL_VERSION, Envelope, Flags, MessageType
from workers.runtime import Connect as WorkerConnect
from workers.runtime import Request as WorkerRequest
from workers.runtime import Send as WorkerSend
from workers.runtime import WorkerCore

SERVICE = "cipherdrop.file"
TIMEOUT = 1.0


def envelope(request_id: bytes | None = None) -> bytes:
    return encode_envelope(
        Envelope(
            version=PROTOCOL_VERSION,
            type=MessageType.LIST_FILES,
            client_id=b"c" * 16,
            key_id=b"k" * 16,
            request_id=request_id or new_request_id(),
            flags=Flags.SESSION,
        )
    )


def make_core(retries: int = 2, window: int = 4) -> TransportCore:
    return TransportCore(timeout=TIMEOUT, retries=retries, window=window, backoff=0.1)


def sends(core: TransportCore) -> list[list[bytes]]:
    return [[bytes(f) for f in c.frames] for c in core.drain() if isinstance(c, Send)]  # type: ignore[arg-type]


def reply_to(request: list[bytes], *body: bytes) -> list[bytes]:
    """What the broker hands the client for a request it saw as ``request``."""
    return [b"", mdp.MDPC01, request[2], *(body or (request[3], b"answer"))]


def status_to(request: list[bytes], status: bytes, reason: bytes = b"why") -> list[bytes]:
    return [b"", mdp.MDPC01, request[2], status, reason, request[3]]


def only(outcomes: list[Outcome]) -> Outcome:
    assert len(outcomes) == 1
    return outcomes[0]


def test_request_goes_out_in_mdp_client_framing_and_reply_is_matched() -> None:
    core = make_core()
    env = envelope()
    key = core.submit(SERVICE, [env, b"payload"], 0.0)
    assert key == decode_envelope(env).request_id
    [request] = sends(core)
    assert request == [b"", b"MDPC01", SERVICE.encode(), env, b"payload"]
    assert core.receive(reply_to(request, env, b"result"), 0.1) is None
    assert only(core.outcomes()) == Reply(key, (env, b"result"))
    assert core.pending == 0


def test_big_reply_frames_are_views_of_the_received_frame_small_ones_bytes() -> None:
    core = make_core()
    env = envelope()
    key = core.submit(SERVICE, [env, b"payload"], 0.0)
    [request] = sends(core)
    chunk = zmq.Frame(bytes(range(256)) * 1024)  # 256 KiB, as received with copy=False
    received: list[Any] = [*reply_to(request, env)[:3], zmq.Frame(env), chunk]
    assert core.receive(received, 0.1) is None
    outcome = only(core.outcomes())
    assert isinstance(outcome, Reply) and outcome.key == key
    small, big = outcome.frames
    assert type(small) is bytes and small == env
    assert isinstance(big, memoryview) and big.obj is chunk  # no copy: the frame itself
    assert big == chunk.bytes


def test_window_bounds_requests_on_the_wire() -> None:
    core = make_core(window=2)
    keys = [core.submit(SERVICE, [envelope(), b"p"], 0.0) for _ in range(5)]
    wire = sends(core)
    assert len(wire) == 2
    assert (core.in_flight, core.pending) == (2, 5)
    core.receive(reply_to(wire[1]), 0.1)
    [third] = sends(core)
    assert decode_envelope(third[3]).request_id == keys[2]
    assert core.in_flight == 2


def test_replies_out_of_order_reach_the_right_request() -> None:
    core = make_core()
    keys = [core.submit(SERVICE, [envelope(), f"p{i}".encode()], 0.0) for i in range(3)]
    wire = sends(core)
    for request in reversed(wire):
        core.receive(reply_to(request, request[3], request[4] + b"!"), 0.1)
    done = {o.key: o for o in core.outcomes()}
    for i, key in enumerate(keys):
        outcome = done[key]
        assert isinstance(outcome, Reply)
        assert outcome.frames[1] == f"p{i}!".encode()


def test_duplicate_reply_is_ignored() -> None:
    core = make_core()
    core.submit(SERVICE, [envelope(), b"p"], 0.0)
    [request] = sends(core)
    assert core.receive(reply_to(request), 0.1) is None
    assert core.receive(reply_to(request), 0.2) is not None
    assert len(core.outcomes()) == 1


def test_timeout_resends_same_request_while_broker_talks() -> None:
    core = make_core(retries=2)
    slow = core.submit(SERVICE, [envelope(), b"slow"], 0.0)
    core.submit(SERVICE, [envelope(), b"fast"], 0.0)
    first_slow, fast = sends(core)
    core.receive(reply_to(fast), 0.5)  # the broker is alive
    core.tick(TIMEOUT)
    commands = core.drain()
    assert not any(isinstance(c, Reconnect) for c in commands)
    assert [[bytes(f) for f in c.frames] for c in commands if isinstance(c, Send)] == [first_slow]  # type: ignore[arg-type]
    core.receive(reply_to(fast), TIMEOUT + 0.5)  # still alive, but only a duplicate
    core.tick(2 * TIMEOUT)
    assert sends(core) == [first_slow]
    core.receive(reply_to(fast), 2 * TIMEOUT + 0.5)
    core.tick(3 * TIMEOUT)
    outcome = only([o for o in core.outcomes() if o.key == slow])
    assert isinstance(outcome, Failure)
    assert type(outcome.error) is Timeout


def test_silent_broker_triggers_reconnect_and_resend_of_everything_in_flight() -> None:
    core = make_core(retries=1)
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    core.submit(SERVICE, [envelope(), b"b"], 0.5)
    first = sends(core)
    core.tick(TIMEOUT)
    commands = core.drain()
    assert isinstance(commands[0], Reconnect)
    resent = [[bytes(f) for f in c.frames] for c in commands[1:] if isinstance(c, Send)]  # type: ignore[arg-type]
    assert sorted(resent) == sorted(first)
    # The broker is back: the replies to the resent requests complete them.
    for request in resent:
        core.receive(reply_to(request), TIMEOUT + 0.1)
    assert all(isinstance(o, Reply) for o in core.outcomes())
    assert core.pending == 0


def test_nothing_heard_at_all_fails_as_broker_unavailable() -> None:
    core = make_core(retries=2)
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    now = 0.0
    while core.pending:
        now = core.next_deadline()
        core.tick(now)
        core.drain()
    outcome = only(core.outcomes())
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, BrokerUnavailable)
    assert now == pytest.approx(3 * TIMEOUT)


def test_broker_lost_mid_session_is_unavailable_for_later_requests() -> None:
    core = make_core(retries=0)
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    core.receive(reply_to(sends(core)[0]), 0.1)
    core.outcomes()
    core.submit(SERVICE, [envelope(), b"b"], 0.2)
    core.tick(0.2 + TIMEOUT)
    outcome = only(core.outcomes())
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, BrokerUnavailable)


def test_worker_lost_status_is_retried_after_backoff() -> None:
    core = make_core(retries=2)
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    [request] = sends(core)
    core.receive(status_to(request, mdp.UNAVAILABLE, b"worker lost"), 0.1)
    assert core.outcomes() == []
    due = core.next_deadline()
    assert 0.1 < due < 0.1 + TIMEOUT
    core.tick(due - 0.001)
    assert sends(core) == []
    core.tick(due)
    assert sends(core) == [request]
    core.receive(reply_to(request), due + 0.1)
    assert isinstance(only(core.outcomes()), Reply)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [(mdp.UNAVAILABLE, RefusedError, "503"), (mdp.EXPIRED, Timeout, None)],
)
def test_retryable_status_fails_once_retries_are_spent(
    status: bytes, error: type[Exception], code: str | None
) -> None:
    core = make_core(retries=2)
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    now = 0.0
    for _ in range(3):
        [request] = sends(core)
        core.receive(status_to(request, status, b"queue full"), now)
        now = core.next_deadline()
        core.tick(now)
    outcome = only(core.outcomes())
    assert isinstance(outcome, Failure)
    assert type(outcome.error) is error
    assert getattr(outcome.error, "code", None) == code


def test_worker_error_status_fails_at_once() -> None:
    core = make_core()
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    [request] = sends(core)
    core.receive(status_to(request, b"500", b"internal error"), 0.1)
    outcome = only(core.outcomes())
    assert isinstance(outcome, Failure)
    assert isinstance(outcome.error, RefusedError)
    assert (outcome.error.code, str(outcome.error)) == ("500", "internal error")
    assert sends(core) == []


def test_reply_from_another_service_is_ignored() -> None:
    core = make_core()
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    [request] = sends(core)
    assert core.receive([b"", mdp.MDPC01, b"other", request[3], b"x"], 0.1) is not None
    assert core.outcomes() == []


def test_submit_refuses_bad_requests() -> None:
    core = make_core()
    env = envelope()
    core.submit(SERVICE, [env, b"a"], 0.0)
    with pytest.raises(LocalProtocolError):
        core.submit(SERVICE, [env, b"again"], 0.0)
    with pytest.raises(LocalProtocolError):
        core.submit(SERVICE, [], 0.0)


@given(st.lists(st.binary(max_size=40), max_size=7))
def test_any_bytes_from_the_broker_are_used_or_ignored(frames: list[bytes]) -> None:
    core = make_core()
    core.submit(SERVICE, [envelope(), b"a"], 0.0)
    reason = core.receive(frames, 0.1)
    assert reason is None or isinstance(reason, str)
    assert core.outcomes() == [] or reason is None


@given(st.lists(st.sampled_from(["submit", "reply", "tick"]), max_size=60))
def test_never_more_than_window_on_the_wire(steps: list[str]) -> None:
    core = make_core(window=3, retries=1)
    wire: dict[bytes, list[bytes]] = {}
    now = 0.0
    for step in steps:
        now += 0.3
        if step == "submit":
            core.submit(SERVICE, [envelope(), b"p"], now)
        elif step == "reply" and wire:
            core.receive(reply_to(wire.pop(next(iter(wire)))), now)
        else:
            core.tick(now)
        for request in sends(core):
            wire[decode_envelope(request[3]).request_id] = request
        for outcome in core.outcomes():
            wire.pop(outcome.key, None)
        assert core.in_flight <= 3
        assert len(wire) <= 3


# -- client, broker and worker cores wired together in memory (no sockets, no clock) ----


class Cluster:
    """The three cores and a simulated network between them (h11's ConnectionPair idea).

    Each socket gets a fresh identity when (re)opened, as a new DEALER would. A worker in
    ``frozen`` neither reads nor answers: it is dead or stuck.
    """

    def __init__(self, workers: int, retries: int = 3) -> None:
        self.now = 0.0
        self.broker = Broker(heartbeat_interval=0.5, heartbeat_liveness=3, request_expiry=5.0)
        self.client = TransportCore(timeout=2.0, retries=retries, window=4, backoff=0.1)
        self.client_id = b"client-0"
        self.workers = {
            n: WorkerCore("echo", heartbeat_interval=0.5, heartbeat_liveness=3)
            for n in range(workers)
        }
        self.worker_ids = {n: b"" for n in self.workers}
        self.frozen: set[int] = set()
        self.handled: list[tuple[int, bytes]] = []
        self.reconnects = 0
        self._sockets = 0

    def _socket(self, kind: str) -> bytes:
        self._sockets += 1
        return f"{kind}-{self._sockets}".encode()

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        self._from_broker(self.broker.tick(self.now))
        self.client.tick(self.now)
        self._from_client()
        for n, worker in self.workers.items():
            if n not in self.frozen:
                worker.tick(self.now)
                self._from_worker(n)

    def run(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        end = self.now + limit
        while not until():
            if self.now > end:
                raise AssertionError("simulated deadline passed")
            self.step()

    def _from_client(self) -> None:
        for command in self.client.drain():
            if isinstance(command, Reconnect):
                self.reconnects += 1
                self.client_id = self._socket("client")
            else:
                self._from_broker(self.broker.handle(self.client_id, command.frames, self.now))

    def _from_worker(self, n: int) -> None:
        for command in self.workers[n].drain():
            if isinstance(command, WorkerConnect):
                self.worker_ids[n] = self._socket(f"worker{n}")
            elif isinstance(command, WorkerSend):
                frames = command.frames
                out = self.broker.handle(self.worker_ids[n], frames, self.now)  # type: ignore[arg-type]
                self._from_broker(out)

    def _from_broker(self, messages: list[list[Any]]) -> None:
        for identity, *frames in messages:
            if identity == self.client_id:
                self.client.receive(frames, self.now)
                self._from_client()
            for n, wid in self.worker_ids.items():
                if wid == identity and n not in self.frozen:
                    event = self.workers[n].receive(frames, self.now)
                    if isinstance(event, WorkerRequest):
                        self.handled.append((n, bytes(event.body[0])))  # type: ignore[arg-type]
                        self.workers[n].reply(list(event.body), self.now)
                    self._from_worker(n)


def started(workers: int, retries: int = 3) -> Cluster:
    cluster = Cluster(workers, retries)
    cluster.run(lambda: len(cluster.broker.workers) == workers)
    return cluster


def wait_outcome(cluster: Cluster) -> Outcome:
    outcomes: list[Outcome] = []

    def finished() -> bool:
        outcomes.extend(cluster.client.outcomes())
        return bool(outcomes)

    cluster.run(finished)
    return only(outcomes)


def test_harness_many_requests_through_broker_and_workers() -> None:
    cluster = started(workers=2)
    bodies = [[envelope(), f"p{i}".encode()] for i in range(12)]
    keys = [cluster.client.submit("echo", body, cluster.now) for body in bodies]
    done: dict[bytes, Outcome] = {}

    def finished() -> bool:
        done.update((o.key, o) for o in cluster.client.outcomes())
        return len(done) == len(keys)

    cluster.run(finished)
    for key, body in zip(keys, bodies, strict=True):
        outcome = done[key]
        assert isinstance(outcome, Reply)
        assert list(outcome.frames) == body
    assert {n for n, _ in cluster.handled} == {0, 1}
    assert cluster.reconnects == 0


def test_harness_request_of_a_dead_worker_is_served_by_another() -> None:
    cluster = started(workers=2, retries=0)
    cluster.frozen.add(0)  # the least recently used worker: it gets the request, silently
    env = envelope()
    key = cluster.client.submit("echo", [env, b"x"], cluster.now)
    outcome = wait_outcome(cluster)
    assert outcome == Reply(key, (env, b"x"))
    assert cluster.handled == [(1, env)]
    assert cluster.broker.stats.requeued == 1


def test_harness_broker_restart_is_survived_by_client_and_workers() -> None:
    cluster = started(workers=1)
    cluster.frozen.add(0)
    env = envelope()
    key = cluster.client.submit("echo", [env, b"x"], cluster.now)
    cluster.step()  # the broker hands it to the worker, which does not get it: it is lost
    assert any(w.pending is not None for w in cluster.broker.workers.values())
    cluster.broker = Broker(heartbeat_interval=0.5, heartbeat_liveness=3, request_expiry=5.0)
    cluster.frozen.clear()
    outcome = wait_outcome(cluster)
    assert outcome == Reply(key, (env, b"x"))
    assert cluster.reconnects >= 1
    assert len(cluster.broker.workers) == 1
