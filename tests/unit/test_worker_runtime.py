"""The sans-I/O MDP worker core: registration, heartbeats, liveness, back-off, one request."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import mdp
from common.errors import LocalProtocolError
from workers.runtime import (
    Close,
    Command,
    Connect,
    Disconnected,
    Malformed,
    Request,
    Send,
    State,
    WorkerCore,
)

INTERVAL = 1.0
LIVENESS = 3


def make_core(seed: int = 1, **kwargs: float) -> WorkerCore:
    options: dict[str, float] = {
        "heartbeat_interval": INTERVAL,
        "reconnect_min": 0.5,
        "reconnect_max": 4.0,
    }
    options.update(kwargs)
    return WorkerCore(
        "echo",
        heartbeat_interval=options["heartbeat_interval"],
        heartbeat_liveness=LIVENESS,
        reconnect_min=options["reconnect_min"],
        reconnect_max=options["reconnect_max"],
        rng=random.Random(seed),
    )


def sent(commands: list[Command]) -> list[list[bytes]]:
    return [[bytes(f) for f in c.frames] for c in commands if isinstance(c, Send)]  # type: ignore[arg-type]


def connected(now: float = 0.0) -> WorkerCore:
    core = make_core()
    core.tick(now)
    core.drain()
    return core


def request_frames(client: bytes = b"client-1", *body: bytes) -> list[bytes]:
    return [b"", mdp.MDPW01, mdp.REQUEST, client, b"", *(body or (b"env", b"payload"))]


def test_first_tick_connects_and_sends_ready() -> None:
    core = make_core()
    core.tick(0.0)
    commands = core.drain()
    assert isinstance(commands[0], Connect)
    assert sent(commands) == [[b"", b"MDPW01", b"\x01", b"echo"]]
    assert core.state is State.IDLE


def test_heartbeat_sent_every_interval_while_idle() -> None:
    core = connected()
    core.tick(INTERVAL * 0.9)
    assert core.drain() == []
    core.receive([b"", mdp.MDPW01, mdp.HEARTBEAT], INTERVAL * 0.9)
    core.tick(INTERVAL)
    assert sent(core.drain()) == [[b"", b"MDPW01", b"\x04"]]
    assert core.next_deadline() == pytest.approx(2 * INTERVAL)


def test_silent_broker_is_dropped_after_liveness_intervals() -> None:
    core = connected()
    for step in range(1, LIVENESS):
        core.tick(step * INTERVAL)
        assert not any(isinstance(c, Close) for c in core.drain())
    core.tick(LIVENESS * INTERVAL)
    assert any(isinstance(c, Close) for c in core.drain())
    assert core.state is State.OFFLINE


def test_heartbeats_from_broker_keep_it_alive() -> None:
    core = connected()
    for step in range(1, 10):
        core.receive([b"", mdp.MDPW01, mdp.HEARTBEAT], step * INTERVAL - 0.5)
        core.tick(step * INTERVAL)
        assert not any(isinstance(c, Close) for c in core.drain())
    assert core.state is State.IDLE


def test_reconnect_waits_for_backoff_then_sends_ready_on_new_socket() -> None:
    core = connected()
    core.tick(LIVENESS * INTERVAL)
    core.drain()
    due = core.next_deadline()
    assert due - LIVENESS * INTERVAL == pytest.approx(core.reconnect_min)
    core.tick(due - 0.01)
    assert core.drain() == []
    core.tick(due)
    commands = core.drain()
    assert isinstance(commands[0], Connect)
    assert sent(commands) == [[b"", b"MDPW01", b"\x01", b"echo"]]


def test_backoff_grows_to_the_maximum_and_resets_when_broker_is_heard() -> None:
    core = connected()
    now = 0.0
    delays = []
    for _ in range(8):
        now += LIVENESS * INTERVAL
        core.tick(now)
        core.drain()
        delays.append(core.next_deadline() - now)
        now = core.next_deadline()
        core.tick(now)  # reconnect
        core.drain()
    assert delays[0] == pytest.approx(core.reconnect_min)
    assert all(d <= core.reconnect_max + 1e-9 for d in delays)
    assert delays[-1] >= core.reconnect_max / 2
    # Hearing the broker resets the back-off.
    core.receive([b"", mdp.MDPW01, mdp.HEARTBEAT], now)
    now += LIVENESS * INTERVAL
    core.tick(now)
    core.drain()
    assert core.next_deadline() - now == pytest.approx(core.reconnect_min)


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_jittered_bounds(failures: int, seed: int) -> None:
    core = make_core(seed=seed)
    delay = core.backoff(failures)
    ceiling = min(core.reconnect_max, core.reconnect_min * 2.0 ** min(failures, 60))
    assert max(core.reconnect_min, ceiling / 2) <= delay <= ceiling


def test_backoff_has_jitter() -> None:
    delays = {make_core(seed=seed).backoff(4) for seed in range(20)}
    assert len(delays) > 1


def test_request_is_handled_alone_and_replied_to_its_client() -> None:
    core = connected()
    event = core.receive(request_frames(b"client-7", b"env", b"data"), 0.5)
    assert isinstance(event, Request)
    assert event.client == b"client-7"
    assert [bytes(f) for f in event.body] == [b"env", b"data"]  # type: ignore[arg-type]
    assert core.state is State.BUSY
    second = core.receive(request_frames(b"client-8"), 0.6)
    assert isinstance(second, Malformed)
    core.reply([b"env2", b"answer"], 0.7)
    assert sent(core.drain()) == [[b"", b"MDPW01", b"\x03", b"client-7", b"", b"env2", b"answer"]]
    assert core.state is State.IDLE  # type: ignore[comparison-overlap]


def test_reply_without_request_is_a_local_error() -> None:
    core = connected()
    with pytest.raises(LocalProtocolError):
        core.reply([b"x"], 0.1)


def test_a_busy_worker_keeps_heartbeating_while_the_broker_is_heard() -> None:
    # A handler far slower than the liveness window (a commit syncing a gigabyte) must not
    # make the worker look dead: the loop keeps ticking, the core keeps heartbeating.
    core = connected()
    core.receive(request_frames(), 0.1)
    beats = 0
    for step in range(1, 10 * LIVENESS):
        now = step * INTERVAL
        core.receive([b"", mdp.MDPW01, mdp.HEARTBEAT], now - 0.5)
        assert core.next_deadline() <= now
        core.tick(now)
        commands = core.drain()
        assert not any(isinstance(c, Close) for c in commands)
        beats += sent(commands).count([b"", b"MDPW01", b"\x04"])
    assert beats == 10 * LIVENESS - 1
    assert core.state is State.BUSY
    assert core.reply([b"r"], 10 * LIVENESS * INTERVAL)
    assert sent(core.drain())[0][2] == mdp.REPLY


def test_a_request_held_when_the_broker_goes_silent_is_abandoned() -> None:
    core = connected()
    core.receive(request_frames(), 0.1)
    core.tick(LIVENESS * INTERVAL + 0.1)
    assert any(isinstance(c, Close) for c in core.drain())
    assert core.state is State.OFFLINE
    # No new connection while the handler still runs: it would be handed a second request.
    assert core.next_deadline() == float("inf")
    core.tick(100.0)
    assert core.drain() == []
    assert core.reply([b"late"], 100.0) is False  # dropped, nothing sent
    assert core.drain() == []
    core.tick(100.1)
    assert sent(core.drain()) == [[b"", b"MDPW01", b"\x01", b"echo"]]  # READY again


def test_disconnect_from_broker_reconnects_and_registers_again() -> None:
    core = connected()
    event = core.receive([b"", mdp.MDPW01, mdp.DISCONNECT], 1.0)
    assert isinstance(event, Disconnected)
    assert any(isinstance(c, Close) for c in core.drain())
    core.tick(core.next_deadline())
    assert sent(core.drain()) == [[b"", b"MDPW01", b"\x01", b"echo"]]


def test_messages_for_a_dropped_socket_are_ignored() -> None:
    core = connected()
    core.tick(LIVENESS * INTERVAL)
    core.drain()
    assert core.receive(request_frames(), LIVENESS * INTERVAL + 0.01) is None
    assert core.state is State.OFFLINE


def test_shutdown_says_disconnect() -> None:
    core = connected()
    core.shutdown()
    commands = core.drain()
    assert sent(commands) == [[b"", b"MDPW01", b"\x05"]]
    assert isinstance(commands[-1], Close)
    core.tick(1e9)
    assert core.drain() == []


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"x"],
        [b"", b"MDPC01", mdp.HEARTBEAT],
        [b"", mdp.MDPW01, b"\x09"],
        [b"", mdp.MDPW01, mdp.READY, b"echo"],
        [b"", mdp.MDPW01, mdp.REQUEST, b"client"],
        [b"", mdp.MDPW01, mdp.HEARTBEAT, b"extra"],
    ],
)
def test_malformed_messages_are_reported_not_raised(frames: list[bytes]) -> None:
    core = connected()
    assert isinstance(core.receive(frames, 0.1), Malformed)
    assert core.state is State.IDLE


@given(st.lists(st.binary(max_size=8), max_size=8))
def test_any_frames_give_an_event_or_nothing(frames: list[bytes]) -> None:
    core = connected()
    event = core.receive(frames, 0.1)
    assert event is None or isinstance(event, Request | Disconnected | Malformed)


@pytest.mark.parametrize("service", ["", "mmi.service", "mmi.anything"])
def test_reserved_or_empty_service_names_are_refused(service: str) -> None:
    with pytest.raises(ValueError, match="service"):
        WorkerCore(service)


@pytest.mark.parametrize(
    ("interval", "liveness", "low", "high"),
    [(0.0, 3, 0.1, 1.0), (1.0, 0, 0.1, 1.0), (1.0, 3, 0.0, 1.0), (1.0, 3, 2.0, 1.0)],
)
def test_bad_timing_arguments_are_refused(
    interval: float, liveness: int, low: float, high: float
) -> None:
    with pytest.raises(ValueError):
        WorkerCore(
            "echo",
            heartbeat_interval=interval,
            heartbeat_liveness=liveness,
            reconnect_min=low,
            reconnect_max=high,
        )
