"""The broker process against raw DEALER sockets playing MDP clients and workers."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

import pytest
import zmq

from common import mdp

from .conftest import BrokerProcess
from .procs import wait_for

pytestmark = pytest.mark.integration

SVC = b"echo"
HEARTBEAT = [b"", b"MDPW01", b"\x04"]
DISCONNECT = [b"", b"MDPW01", b"\x05"]
Dealer = Callable[[str], zmq.Socket[bytes]]


def recv(
    sock: zmq.Socket[bytes], timeout: float = 5.0, skip_heartbeats: bool = True
) -> list[bytes]:
    """The next message; a worker socket answers broker heartbeats while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise AssertionError(f"nothing received within {timeout} s")
        frames = sock.recv_multipart()
        if not (skip_heartbeats and frames == HEARTBEAT):
            return frames
        sock.send_multipart(HEARTBEAT)


def register(dealer: Dealer, broker: BrokerProcess, service: bytes = SVC) -> zmq.Socket[bytes]:
    """A worker socket whose READY the broker has taken (it heartbeats registered workers)."""
    worker = dealer(broker.endpoint)
    worker.send_multipart(mdp.ready(service))
    assert recv(worker, skip_heartbeats=False) == HEARTBEAT
    worker.send_multipart(HEARTBEAT)  # as a live worker does
    return worker


def ask(client: zmq.Socket[bytes], env: bytes, service: bytes = SVC) -> None:
    client.send_multipart(mdp.client_request(service, [env, b"payload"]))


def serve_one(worker: zmq.Socket[bytes]) -> bytes:
    """Take one REQUEST, echo it back; return its envelope."""
    frames = recv(worker)
    assert frames[:3] == [b"", b"MDPW01", b"\x02"] and frames[4] == b""
    worker.send_multipart(mdp.reply(frames[3], frames[5:]))
    return frames[5]


def mmi(client: zmq.Socket[bytes], name: bytes) -> bytes:
    client.send_multipart(mdp.client_request(b"mmi.service", [name]))
    frames = recv(client)
    assert frames[:3] == [b"", b"MDPC01", b"mmi.service"] and len(frames) == 4
    return frames[3]


# -- start and stop ---------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_logs_its_endpoint_first_and_stops_cleanly(
    broker_factory: Callable[..., BrokerProcess], sig: int
) -> None:
    broker = broker_factory()
    assert broker.lines[0]["event"] == "broker.listening"
    assert broker.endpoint.startswith("tcp://127.0.0.1:")
    assert int(broker.endpoint.rsplit(":", 1)[1]) > 0
    assert broker.stop(sig) == 0
    assert broker.events("broker.stopped")


def test_stop_sends_goodbyes(dealer: Dealer, broker: BrokerProcess) -> None:
    worker = register(dealer, broker)
    broker.stop()
    assert recv(worker) == DISCONNECT


# -- routing ----------------------------------------------------------------------------


def test_lru_order(dealer: Dealer, broker: BrokerProcess) -> None:
    workers = [register(dealer, broker) for _ in range(3)]
    client = dealer(broker.endpoint)
    held: dict[int, list[bytes]] = {}
    poller = zmq.Poller()
    for worker in workers:
        poller.register(worker, zmq.POLLIN)
    for i in range(3):  # one request each: every worker is busy
        ask(client, b"a%d" % i)
    while len(held) < 3:
        ready = poller.poll(5000)
        assert ready, "requests not dispatched"
        for sock, _ in ready:
            frames = sock.recv_multipart()
            if frames != HEARTBEAT:
                held[workers.index(sock)] = frames
    for i in (2, 0, 1):  # each reply is back at the client before the next one goes
        workers[i].send_multipart(mdp.reply(held[i][3], held[i][5:]))
        assert recv(client) == [b"", b"MDPC01", SVC, held[i][5], b"payload"]
    for env, i in ((b"b0", 2), (b"b1", 0), (b"b2", 1)):  # least recently used first
        ask(client, env)
        assert serve_one(workers[i]) == env
        assert recv(client)[3] == env


def test_many_requests_in_flight_route_back(dealer: Dealer, broker: BrokerProcess) -> None:
    workers = [register(dealer, broker) for _ in range(2)]
    clients = [dealer(broker.endpoint) for _ in range(3)]
    expected = {}
    for n, client in enumerate(clients):
        expected[n] = {b"c%d-%d" % (n, i) for i in range(30)}
        for env in sorted(expected[n]):
            ask(client, env)
    got: dict[int, set[bytes]] = {n: set() for n in expected}
    poller = zmq.Poller()
    for sock in workers + clients:
        poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + 20
    while got != expected:
        assert time.monotonic() < deadline, "replies missing"
        for sock, _ in poller.poll(1000):
            frames = sock.recv_multipart()
            if sock in workers:
                if frames != HEARTBEAT:
                    sock.send_multipart(mdp.reply(frames[3], frames[5:]))
            else:
                n = clients.index(sock)
                assert frames[:3] == [b"", b"MDPC01", SVC] and frames[4] == b"payload"
                assert frames[3] not in got[n]
                got[n].add(frames[3])
    assert got == expected


# -- queueing ---------------------------------------------------------------------------


def test_full_queue_gets_503(dealer: Dealer, broker_factory: Callable[..., BrokerProcess]) -> None:
    broker = broker_factory(queue_per_service=2, queue_total=10)
    client = dealer(broker.endpoint)
    for env in (b"q1", b"q2", b"q3"):
        ask(client, env)
    assert recv(client) == [b"", b"MDPC01", SVC, b"503", b"queue full", b"q3"]


def test_queued_request_expires_with_504(
    dealer: Dealer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(request_expiry=0.3)
    client = dealer(broker.endpoint)
    started = time.monotonic()
    ask(client, b"late")
    assert recv(client) == [b"", b"MDPC01", SVC, b"504", b"expired in queue", b"late"]
    assert 0.25 <= time.monotonic() - started < 3.0


def test_queued_request_is_served_when_a_worker_arrives(
    dealer: Dealer, broker: BrokerProcess
) -> None:
    client = dealer(broker.endpoint)
    ask(client, b"early")
    worker = dealer(broker.endpoint)
    worker.send_multipart(mdp.ready(SVC))
    assert serve_one(worker) == b"early"
    assert recv(client)[3] == b"early"


# -- worker lifecycle -------------------------------------------------------------------


def test_silent_worker_is_removed(
    dealer: Dealer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(heartbeat_interval=0.2)
    register(dealer, broker)  # then never heartbeats
    client = dealer(broker.endpoint)
    assert mmi(client, SVC) == b"200"
    assert wait_for(lambda: mmi(client, SVC) == b"404", 5.0)


def test_hung_worker_request_goes_to_another(
    dealer: Dealer, broker_factory: Callable[..., BrokerProcess]
) -> None:
    broker = broker_factory(heartbeat_interval=0.2)
    hung = register(dealer, broker)
    client = dealer(broker.endpoint)
    ask(client, b"job")
    assert recv(hung)[5] == b"job"  # and then it hangs: no heartbeat, no reply
    healthy = dealer(broker.endpoint)
    healthy.send_multipart(mdp.ready(SVC))
    deadline = time.monotonic() + 5
    while True:  # heartbeat like a live worker until the job comes
        assert time.monotonic() < deadline, "request not handed over"
        frames = recv(healthy, skip_heartbeats=False)
        if frames == HEARTBEAT:
            healthy.send_multipart(HEARTBEAT)
            continue
        healthy.send_multipart(mdp.reply(frames[3], frames[5:]))
        break
    assert recv(client) == [b"", b"MDPC01", SVC, b"job", b"payload"]
    assert recv(hung) == DISCONNECT


def test_request_is_requeued_when_its_worker_disconnects(
    dealer: Dealer, broker: BrokerProcess
) -> None:
    first = register(dealer, broker)
    client = dealer(broker.endpoint)
    ask(client, b"job")
    assert recv(first)[5] == b"job"
    second = register(dealer, broker)
    first.send_multipart(DISCONNECT)
    assert serve_one(second) == b"job"
    assert recv(client)[3] == b"job"


def test_mmi(dealer: Dealer, broker: BrokerProcess) -> None:
    client = dealer(broker.endpoint)
    assert mmi(client, SVC) == b"404"
    register(dealer, broker)
    assert mmi(client, SVC) == b"200"
    client.send_multipart(mdp.client_request(b"mmi.other", [b"x"]))
    assert recv(client) == [b"", b"MDPC01", b"mmi.other", b"501"]


@pytest.mark.parametrize(
    "frames",
    [
        HEARTBEAT,  # from a worker that never said READY
        mdp.ready(b"mmi.service"),
        [b"", b"MDPW01", b"\x09"],
        [b"", b"MDPW01", b"\x02", b"c", b"", b"x"],
        mdp.reply(b"nobody", [b"x"]),
    ],
)
def test_unexpected_worker_commands_get_disconnect(
    dealer: Dealer, broker: BrokerProcess, frames: list[bytes]
) -> None:
    sock = dealer(broker.endpoint)
    sock.send_multipart(frames)
    assert recv(sock) == DISCONNECT


def test_second_ready_gets_disconnect(dealer: Dealer, broker: BrokerProcess) -> None:
    worker = register(dealer, broker)
    worker.send_multipart(mdp.ready(SVC))
    assert recv(worker) == DISCONNECT
    client = dealer(broker.endpoint)
    assert mmi(client, SVC) == b"404"


# -- bad input --------------------------------------------------------------------------


def test_client_that_vanishes_mid_request(dealer: Dealer, broker: BrokerProcess) -> None:
    worker = register(dealer, broker)
    gone = dealer(broker.endpoint)
    ask(gone, b"orphan")
    frames = recv(worker)
    gone.close(linger=0)
    worker.send_multipart(mdp.reply(frames[3], frames[5:]))  # to a client that is gone
    client = dealer(broker.endpoint)
    ask(client, b"after")
    assert serve_one(worker) == b"after"
    assert recv(client)[3] == b"after"
    assert broker.alive()


def _junk(rng: random.Random) -> list[bytes]:
    headers = [b"", b"MDPC01", b"MDPW01", SVC, b"mmi.service", b"\x01", b"\x03", b"\x04", b"\x05"]
    count = rng.randint(0, 9)
    frames = [
        rng.choice(headers) if rng.random() < 0.6 else rng.randbytes(rng.randint(0, 40))
        for _ in range(count)
    ]
    if rng.random() < 0.5 and count >= 1:  # a valid header with junk after it
        frames[:3] = [b"", rng.choice([b"MDPC01", b"MDPW01"]), rng.choice(headers)]
    return frames


def test_fuzz_then_a_normal_request_still_works(dealer: Dealer, broker: BrokerProcess) -> None:
    rng = random.Random(7)
    attackers = [dealer(broker.endpoint) for _ in range(8)]
    for _ in range(5000):
        frames = _junk(rng)
        if frames:
            rng.choice(attackers).send_multipart(frames)
        else:
            rng.choice(attackers).send(b"")
    big = dealer(broker.endpoint)
    big.send_multipart([b"", b"MDPC01", SVC, b"x" * (17 << 20)])  # above MAXMSGSIZE
    for sock in attackers:
        sock.close(linger=0)
    worker = dealer(broker.endpoint)
    worker.send_multipart(mdp.ready(SVC))
    client = dealer(broker.endpoint)
    ask(client, b"normal")
    deadline = time.monotonic() + 10
    while True:  # requests queued by the fuzz may come first: answer them too
        assert time.monotonic() < deadline
        frames = recv(worker)
        worker.send_multipart(mdp.reply(frames[3], frames[5:]))
        if frames[5] == b"normal":
            break
    assert recv(client) == [b"", b"MDPC01", SVC, b"normal", b"payload"]
    assert broker.alive()
    assert len(broker.lines) < 1000, "bad input must not flood the log"
