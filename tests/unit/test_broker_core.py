"""The broker core, rule by rule, on a fake clock (plain floats) and without sockets."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core import Broker
from common import mdp
from common.errors import ConfigError

SVC = b"echo"
W1, W2, W3 = b"\x00w1", b"\x00w2", b"\x00w3"
C1, C2 = b"\x00c1", b"\x00c2"
DISCONNECT = [b"", b"MDPW01", b"\x05"]


def make(**kwargs: Any) -> Broker:
    options: dict[str, Any] = {"heartbeat_interval": 1.0, "heartbeat_liveness": 3}
    options.update(kwargs)
    return Broker(**options)


def ready(b: Broker, worker: bytes, now: float = 0.0, service: bytes = SVC) -> list[list[Any]]:
    return b.handle(worker, mdp.ready(service), now)


def ask(
    b: Broker, client: bytes, env: bytes, now: float = 0.0, service: bytes = SVC
) -> list[list[Any]]:
    return b.handle(client, mdp.client_request(service, [env, b"payload"]), now)


def answer(
    b: Broker, worker: bytes, client: bytes, env: bytes, now: float = 0.0
) -> list[list[Any]]:
    return b.handle(worker, mdp.reply(client, [env, b"result"]), now)


def request_to(worker: bytes, client: bytes, env: bytes) -> list[object]:
    return [worker, b"", b"MDPW01", b"\x02", client, b"", env, b"payload"]


def status(
    client: bytes, code: bytes, reason: bytes, env: bytes, service: bytes = SVC
) -> list[object]:
    return [client, b"", b"MDPC01", service, code, reason, env]


def kinds(b: Broker) -> list[str]:
    return [event.kind for event in b.drain_events()]


# -- routing -------------------------------------------------------------------------------


def test_request_goes_to_the_ready_worker_and_the_reply_comes_back() -> None:
    b = make()
    assert ready(b, W1) == []
    assert ask(b, C1, b"r1") == [request_to(W1, C1, b"r1")]
    assert answer(b, W1, C1, b"r1") == [[C1, b"", b"MDPC01", SVC, b"r1", b"result"]]
    assert (b.stats.requests, b.stats.replies) == (1, 1)


def test_least_recently_used_worker_is_chosen() -> None:
    b = make()
    for worker in (W1, W2, W3):
        ready(b, worker)
    assert [ask(b, C1, env)[0][0] for env in (b"a", b"b", b"c")] == [W1, W2, W3]
    answer(b, W3, C1, b"c")
    answer(b, W1, C1, b"a")
    answer(b, W2, C1, b"b")
    # idle since longest: W3, then W1, then W2
    assert [ask(b, C2, env)[0][0] for env in (b"d", b"e", b"f")] == [W3, W1, W2]


def test_many_requests_in_flight_from_many_clients_route_back() -> None:
    b = make()
    ready(b, W1)
    ready(b, W2)
    sent = {(client, f"{client.hex()}-{i}".encode()) for client in (C1, C2) for i in range(5)}
    held: dict[bytes, tuple[bytes, bytes]] = {}
    replies: set[tuple[bytes, bytes]] = set()
    out = [m for client, env in sorted(sent) for m in ask(b, client, env)]
    while out or held:
        for message in out:
            if message[3] == b"\x02":  # a REQUEST to a worker
                held[message[0]] = (message[4], message[6])
            else:
                assert message[2] == b"MDPC01"
                replies.add((message[0], message[4]))
        out = []
        if held:
            worker, (client, env) = held.popitem()
            out = answer(b, worker, client, env)
    assert replies == sent


def test_body_frames_pass_through_as_the_same_objects() -> None:
    b = make()
    ready(b, W1)
    envelope, chunk = zmq.Frame(b"e"), zmq.Frame(b"x" * (1 << 20))
    [to_worker] = b.handle(C1, [b"", b"MDPC01", SVC, envelope, chunk], 0.0)
    assert to_worker[6] is envelope and to_worker[7] is chunk
    [to_client] = b.handle(W1, [b"", b"MDPW01", b"\x03", C1, b"", envelope, chunk], 0.0)
    assert to_client[4] is envelope and to_client[5] is chunk


def test_header_frames_may_be_zmq_frames() -> None:
    b = make()
    b.handle(W1, [zmq.Frame(b""), zmq.Frame(b"MDPW01"), zmq.Frame(b"\x01"), zmq.Frame(SVC)], 0.0)
    assert ask(b, C1, b"r") == [request_to(W1, C1, b"r")]


# -- queueing ------------------------------------------------------------------------------


def test_request_waits_for_a_worker() -> None:
    b = make()
    assert ask(b, C1, b"r1") == []
    assert ready(b, W1) == [request_to(W1, C1, b"r1")]


def test_queue_is_first_come_first_served() -> None:
    b = make()
    ask(b, C1, b"r1")
    ask(b, C2, b"r2")
    assert ready(b, W1) == [request_to(W1, C1, b"r1")]
    assert answer(b, W1, C1, b"r1")[1] == request_to(W1, C2, b"r2")


def test_full_service_queue_answers_503_with_the_envelope() -> None:
    b = make(queue_per_service=2, queue_total=10)
    ask(b, C1, b"r1")
    ask(b, C1, b"r2")
    assert ask(b, C1, b"r3") == [status(C1, b"503", b"queue full", b"r3")]
    assert ask(b, C1, b"o1", service=b"other") == []
    assert b.stats.queue_full == 1
    assert "request_rejected" in kinds(b)


def test_total_queue_bound_spans_services() -> None:
    b = make(queue_per_service=5, queue_total=2)
    ask(b, C1, b"a", service=b"s1")
    ask(b, C1, b"b", service=b"s2")
    assert ask(b, C1, b"c", service=b"s3") == [status(C1, b"503", b"queue full", b"c", b"s3")]
    assert b"s3" not in b.services  # nothing kept for a rejected name


def test_queued_request_expires_with_504() -> None:
    b = make(request_expiry=10.0, heartbeat_interval=100.0)
    b.tick(0.0)
    ask(b, C1, b"r1", now=1.0)
    assert b.next_deadline() == 11.0
    assert b.tick(10.9) == []
    assert b.tick(11.0) == [status(C1, b"504", b"expired in queue", b"r1")]
    assert b.services == {} and b.queued == 0
    assert "request_expired" in kinds(b)


def test_requests_without_body_or_with_bad_service_get_400() -> None:
    b = make()
    assert b.handle(C1, [b"", b"MDPC01", SVC], 0.0) == [
        [C1, b"", b"MDPC01", SVC, b"400", b"empty body", b""]
    ]
    assert ask(b, C1, b"r", service=b"bad name") == [
        status(C1, b"400", b"bad service name", b"r", b"bad name")
    ]
    assert b.services == {}


# -- worker lifecycle ----------------------------------------------------------------------


def test_ready_for_mmi_service_is_refused() -> None:
    b = make()
    assert ready(b, W1, service=b"mmi.service") == [[W1, *DISCONNECT]]
    assert b.workers == {}


def test_second_ready_disconnects_and_drops_the_worker() -> None:
    b = make()
    ready(b, W1)
    assert ready(b, W1) == [[W1, *DISCONNECT]]
    assert W1 not in b.workers


@pytest.mark.parametrize(
    "frames",
    [
        [b"", b"MDPW01", b"\x03", C1, b"", b"body"],  # REPLY from an unknown worker
        [b"", b"MDPW01", b"\x04"],  # HEARTBEAT from an unknown worker
        [b"", b"MDPW01", b"\x02", C1, b"", b"body"],  # REQUEST is the broker's command
        [b"", b"MDPW01", b"\x09"],  # no such command
        [b"", b"MDPW01", b"\x01"],  # READY without a service
    ],
)
def test_unexpected_commands_get_disconnect(frames: list[bytes]) -> None:
    b = make()
    assert b.handle(W1, frames, 0.0) == [[W1, *DISCONNECT]]
    assert kinds(b) == ["worker_rejected"]


def test_disconnect_from_unknown_worker_is_ignored() -> None:
    b = make()
    assert b.handle(W1, mdp.disconnect(), 0.0) == []


def test_reply_without_request_disconnects_the_worker() -> None:
    b = make()
    ready(b, W1)
    assert answer(b, W1, C1, b"r") == [[W1, *DISCONNECT]]
    assert W1 not in b.workers


def test_reply_to_the_wrong_client_disconnects_and_requeues() -> None:
    b = make()
    ready(b, W1)
    ask(b, C1, b"r1")
    assert answer(b, W1, C2, b"r1") == [[W1, *DISCONNECT]]
    assert ready(b, W2) == [request_to(W2, C1, b"r1")]


def test_heartbeats_go_to_every_worker_each_interval() -> None:
    b = make(heartbeat_interval=1.0)
    ready(b, W1)
    ready(b, W2)
    heartbeat = [b"", b"MDPW01", b"\x04"]
    assert sorted(b.tick(0.0)) == [[W1, *heartbeat], [W2, *heartbeat]]
    assert b.tick(0.5) == []
    assert len(b.tick(1.0)) == 2


def test_silent_worker_is_removed_after_liveness_intervals() -> None:
    b = make(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(b, W1, now=0.0)
    ready(b, W2, now=0.0)
    b.handle(W2, mdp.heartbeat(), 2.0)  # W2 is alive, W1 says nothing
    out = b.tick(3.0)
    assert [W1, *DISCONNECT] in out
    assert list(b.workers) == [W2]
    assert b.next_deadline() <= 5.0
    assert [W2, *DISCONNECT] in b.tick(5.0)
    assert b.workers == {}


def test_worker_that_reconnects_registers_again() -> None:
    b = make()
    ready(b, W1)
    b.handle(W1, mdp.disconnect(), 1.0)
    assert b.workers == {}
    ready(b, W1, now=2.0)
    assert ask(b, C1, b"r", now=2.0) == [request_to(W1, C1, b"r")]


# -- lost workers ----------------------------------------------------------------------------


def test_request_of_a_lost_worker_is_retried_once_then_503() -> None:
    b = make()
    ready(b, W1)
    ask(b, C1, b"r1")
    assert b.handle(W1, mdp.disconnect(), 0.0) == []
    assert ready(b, W2) == [request_to(W2, C1, b"r1")]
    assert b.drop_peer(W2, 0.0) == [status(C1, b"503", b"worker lost", b"r1")]
    assert b.stats.requeued == 1 and b.stats.lost == 1


def test_retried_request_goes_ahead_of_the_queue() -> None:
    b = make()
    ready(b, W1)
    ask(b, C1, b"first")
    ask(b, C2, b"second")  # waits: W1 is busy
    b.handle(W1, mdp.disconnect(), 0.0)
    assert ready(b, W2) == [request_to(W2, C1, b"first")]


def test_request_of_an_expired_worker_goes_to_an_idle_one_at_once() -> None:
    b = make(heartbeat_interval=1.0, heartbeat_liveness=3)
    ready(b, W1, now=0.0)
    ask(b, C1, b"r1", now=0.0)
    ready(b, W2, now=2.0)
    out = b.tick(3.0)
    assert [W1, *DISCONNECT] in out
    assert request_to(W2, C1, b"r1") in out


def test_shutdown_says_goodbye_to_everyone() -> None:
    b = make()
    ready(b, W1)
    ask(b, C1, b"busy")
    ask(b, C2, b"queued")
    out = b.shutdown()
    assert [W1, *DISCONNECT] in out
    assert status(C1, b"503", b"stopping", b"busy") in out
    assert status(C2, b"503", b"stopping", b"queued") in out


# -- MMI -----------------------------------------------------------------------------------


def test_mmi_service_answers_200_or_404_and_others_501() -> None:
    b = make()
    mmi = b"mmi.service"
    assert b.handle(C1, [b"", b"MDPC01", mmi, SVC], 0.0) == [[C1, b"", b"MDPC01", mmi, b"404"]]
    ready(b, W1)
    assert b.handle(C1, [b"", b"MDPC01", mmi, SVC], 0.0) == [[C1, b"", b"MDPC01", mmi, b"200"]]
    ask(b, C1, b"r")  # busy workers still count as registered
    assert b.handle(C1, [b"", b"MDPC01", mmi, SVC], 0.0) == [[C1, b"", b"MDPC01", mmi, b"200"]]
    other = b"mmi.nothing"
    assert b.handle(C1, [b"", b"MDPC01", other, b"x"], 0.0) == [[C1, b"", b"MDPC01", other, b"501"]]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames",
    [[], [b""], [b"", b"MDPC01"], [b"x", b"MDPC01", SVC, b"e"], [b"", b"MDPX01", SVC, b"e"]],
)
def test_malformed_messages_are_dropped_with_an_event(frames: list[bytes]) -> None:
    b = make()
    assert b.handle(C1, frames, 0.0) == []
    assert kinds(b) == ["malformed"]
    assert b.stats.malformed == 1


def test_bad_settings_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"broker\.heartbeat_interval"):
        Broker(heartbeat_interval=0.0)


_frame = st.one_of(
    st.sampled_from([b"", b"MDPC01", b"MDPW01", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", SVC]),
    st.sampled_from([W1, C1, b"mmi.service", b"mmi.x"]),
    st.binary(max_size=8),
)
_valid = st.sampled_from(
    [
        mdp.ready(SVC),
        mdp.heartbeat(),
        mdp.disconnect(),
        mdp.reply(C1, [b"e"]),
        mdp.reply(C2, [b"e"]),
        mdp.client_request(SVC, [b"e"]),
        mdp.client_request(b"mmi.service", [SVC]),
    ]
)
_step = st.tuples(
    st.sampled_from([W1, W2, C1, C2]),
    st.one_of(_valid, st.lists(_frame, max_size=8)),
    st.floats(0, 2),
)


@settings(max_examples=300)
@given(st.lists(_step, max_size=40))
def test_any_input_keeps_the_state_consistent(
    steps: list[tuple[bytes, list[bytes], float]],
) -> None:
    b = make(queue_per_service=3, queue_total=4, request_expiry=1.0)
    now = 0.0
    for sender, frames, dt in steps:
        now += dt
        b.handle(sender, frames, now)
        if now >= b.next_deadline():
            b.tick(now)
        for service in b.services.values():
            assert not (service.waiting and service.queued)
            assert service.workers == sum(w.service is service for w in b.workers.values())
        assert b.queued == sum(s.queued for s in b.services.values()) <= 4 + b.stats.requeued
    b.tick(now + 10.0)  # workers expire, their requests are given back ...
    b.tick(now + 20.0)  # ... and expire in turn: nothing is left behind
    assert b.queued == 0 and b.workers == {} and b.services == {}
