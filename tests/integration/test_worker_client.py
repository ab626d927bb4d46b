"""Worker runtime and client transport against the real broker, all as real processes.

Heartbeats are fast here (0.2 s, liveness 3) so that losses are noticed in well under a
second; every wait has a deadline (see ``procs``), and nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from client.async_transport import AsyncTransport
from client.transport import Transport
from common.codec import encode_envelope, new_request_id
from common.errors import RefusedError
from common.messages import PROTOCOL_VERSION, Envelope, Flags, MessageType

from .procs import Broker, Proc, start_worker, wait_for_service

pytestmark = pytest.mark.integration

HEARTBEAT = ["--heartbeat-interval", "0.2", "--heartbeat-liveness", "3"]
WORKER = [*HEARTBEAT, "--reconnect-min", "0.05", "--reconnect-max", "0.5"]


def envelope() -> bytes:
    return encode_envelope(
        Envelope(
            version=PROTOCOL_VERSION,
            type=MessageType.LIST_FILES,
            client_id=b"c" * 16,
            key_id=b"k" * 16,
            request_id=new_request_id(),
            flags=Flags.SESSION,
        )
    )


class Cluster:
    """The processes of one test; all of them are stopped when it ends."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.broker: Broker | None = None

    def start_broker(self, endpoint: str = "tcp://127.0.0.1:*", *flags: str) -> Broker:
        self.broker = Broker(endpoint, *(flags or HEARTBEAT))
        self.procs.append(self.broker)
        return self.broker

    @property
    def endpoint(self) -> str:
        if self.broker is None:
            raise RuntimeError("no broker started")
        return self.broker.endpoint

    def worker(self, service: str = "echo", *options: str) -> Proc:
        proc = start_worker(self.endpoint, service, *WORKER, *options)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
            # Shown by pytest only when the test fails.
            print(f"--- {proc.name} {proc.pid} ---\n{proc.tail(40)}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    running = Cluster()
    try:
        yield running
    finally:
        running.stop()


def test_many_clients_with_many_requests_in_flight_all_get_their_replies(
    cluster: Cluster,
) -> None:
    cluster.start_broker()
    for _ in range(3):
        cluster.worker()
    wait_for_service(cluster.endpoint, "echo")
    sent = {
        n: [[envelope(), f"client {n} request {i}".encode()] for i in range(150)] for n in range(4)
    }
    received: dict[int, list[list[bytes]]] = {}
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            with Transport(cluster.endpoint, timeout=5.0, retries=2, window=8) as transport:
                received[number] = list(transport.map("echo", sent[number]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for number, requests in sent.items():
        assert sorted(received[number]) == sorted(requests)


def test_async_transport_pipelines_concurrent_callers(cluster: Cluster) -> None:
    cluster.start_broker()
    for _ in range(2):
        cluster.worker()
    wait_for_service(cluster.endpoint, "echo")
    single = [[envelope(), f"single {i}".encode()] for i in range(20)]
    mapped = [[envelope(), f"mapped {i}".encode()] for i in range(100)]

    async def main() -> tuple[list[list[bytes]], list[list[bytes]]]:
        async with AsyncTransport(cluster.endpoint, timeout=5.0, retries=2, window=8) as t:
            calls = asyncio.gather(*(t.request("echo", body) for body in single))
            streamed = [reply async for reply in t.map("echo", mapped)]
            return list(await calls), streamed

    answers, streamed = asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert answers == single
    assert sorted(streamed) == sorted(mapped)


def test_handler_error_is_answered_and_the_worker_carries_on(cluster: Cluster) -> None:
    cluster.start_broker()
    cluster.worker()
    with Transport(cluster.endpoint, timeout=5.0, retries=0) as transport:
        with pytest.raises(RefusedError) as caught:
            transport.request("echo", [envelope(), b"raise"])
        assert caught.value.code == "500"
        env = envelope()
        assert transport.request("echo", [env, b"fine"]) == [env, b"fine"]


def test_worker_killed_while_holding_a_request_is_replaced(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Slow heartbeats on both sides (they must agree): the request must come back because
    # the worker died, not because it went quiet; retries=0, so the client never resends.
    slow = ["--heartbeat-interval", "1", "--heartbeat-liveness", "5"]
    cluster.start_broker("tcp://127.0.0.1:*", *slow)
    delay = tmp_path / "delay"
    delay.write_text("60")
    holder = cluster.worker("echo", *slow, "--announce", "--delay-file", str(delay))
    wait_for_service(cluster.endpoint, "echo")
    env = envelope()
    with Transport(cluster.endpoint, timeout=15.0, retries=0) as transport:
        key = transport.submit("echo", [env, b"survive"])
        holder.expect(holder.stdout, lambda line: line == f"request {env.hex()}")
        rescuer = cluster.worker("echo", *slow, "--announce")
        holder.kill()
        assert transport.result(key) == [env, b"survive"]
    rescuer.expect(rescuer.stdout, lambda line: line == f"request {env.hex()}")


def registered(broker: Broker) -> None:
    """Wait for the broker's log to show one more worker registering."""
    broker.expect(broker.stderr, lambda line: '"broker.worker_ready"' in line)


def test_broker_restart_workers_register_again_and_client_retries_succeed(
    cluster: Cluster, tmp_path: Path
) -> None:
    first = cluster.start_broker()
    delay = tmp_path / "delay"
    delay.write_text("60")
    holder = cluster.worker("echo", "--announce", "--delay-file", str(delay))
    registered(first)
    with capture_logs() as logs, Transport(first.endpoint, timeout=1.0, retries=8) as transport:
        env = envelope()
        key = transport.submit("echo", [env, b"across the restart"])
        # The broker dies while the only other worker is busy with the request, so the
        # request dies with it: only the client's resend on a fresh socket can succeed.
        holder.expect(holder.stdout, lambda line: line == f"request {env.hex()}")
        cluster.worker()
        registered(first)
        first.kill()
        second = cluster.start_broker(first.endpoint)
        assert second.endpoint == first.endpoint
        assert transport.result(key) == [env, b"across the restart"]
        assert "transport.reconnect" in [entry["event"] for entry in logs]
        registered(second)
        many = [[envelope(), f"after {i}".encode()] for i in range(40)]
        assert sorted(transport.map("echo", many)) == sorted(many)


def test_hung_worker_is_dropped_by_the_broker(cluster: Cluster) -> None:
    cluster.start_broker()
    stuck = cluster.worker("stuck", "--hang", "--announce")
    wait_for_service(cluster.endpoint, "stuck", b"200")
    env = envelope()
    with Transport(cluster.endpoint, timeout=30.0, retries=0) as transport:
        transport.submit("stuck", [env, b"never answered"])
        stuck.expect(stuck.stdout, lambda line: line == f"request {env.hex()}")
        wait_for_service(cluster.endpoint, "stuck", b"404", timeout=5.0)
    assert stuck.popen.poll() is None  # still alive, only silent


def test_request_held_by_a_hung_worker_goes_to_another(cluster: Cluster) -> None:
    cluster.start_broker()
    stuck = cluster.worker("echo", "--hang", "--announce")
    wait_for_service(cluster.endpoint, "echo")
    env = envelope()
    with Transport(cluster.endpoint, timeout=15.0, retries=0) as transport:
        key = transport.submit("echo", [env, b"rescued"])
        stuck.expect(stuck.stdout, lambda line: line == f"request {env.hex()}")
        cluster.worker("echo")
        assert transport.result(key) == [env, b"rescued"]


def test_a_handler_slower_than_the_liveness_window_is_not_dropped(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The handler takes 2 s, more than three times the broker's 0.6 s liveness window; the
    # worker heartbeats while it works, so the broker keeps it and its request: the rescuer
    # never sees the request and the broker neither removes the worker nor requeues.
    broker = cluster.start_broker()
    delay = tmp_path / "delay"
    delay.write_text("2")
    holder = cluster.worker("echo", "--announce", "--delay-file", str(delay))
    wait_for_service(cluster.endpoint, "echo")
    env = envelope()
    with Transport(cluster.endpoint, timeout=15.0, retries=0) as transport:
        key = transport.submit("echo", [env, b"slow but alive"])
        holder.expect(holder.stdout, lambda line: line == f"request {env.hex()}")
        rescuer = cluster.worker("echo", "--announce")
        assert transport.result(key) == [env, b"slow but alive"]
    assert not any(line.startswith("request ") for line in rescuer.transcript)
    events = [line for line in broker.transcript if "worker_removed" in line or "requeued" in line]
    assert events == []


def test_requests_picked_inline_are_answered_by_the_io_thread(cluster: Cluster) -> None:
    cluster.start_broker()
    cluster.worker("echo", "--inline-prefix", "quick")
    wait_for_service(cluster.endpoint, "echo")
    env = envelope()
    with Transport(cluster.endpoint, timeout=10.0, retries=0) as transport:
        for _ in range(2):  # each kind twice: the threads hand the handler back and forth
            quick = transport.request("echo", [env, b"quick thread?"])
            assert quick == [env, b"quick thread?", b"mdp-worker-io-echo"]
            other = transport.request("echo", [env, b"other thread?"])
            assert other == [env, b"other thread?", b"MainThread"]
