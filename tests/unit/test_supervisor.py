"""The server's restart schedule and worker sizing, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ConfigError
from workers.children import connect_endpoint
from workers.supervisor import RestartPolicy, RestartSchedule, default_sizing, parse_sizing

POLICY = RestartPolicy(initial=0.5, factor=2.0, maximum=8.0, stable=10.0)


def test_first_exit_waits_the_initial_delay() -> None:
    schedule = RestartSchedule(["file-1"], POLICY)
    schedule.started("file-1", now=100.0)
    assert schedule.exited("file-1", now=100.2) == 0.5
    assert schedule.due(100.6) == []
    assert schedule.due(100.7) == ["file-1"]


def test_fast_failures_double_the_delay_up_to_the_maximum() -> None:
    schedule = RestartSchedule(["broker"], POLICY)
    now = 0.0
    delays = []
    for _ in range(7):
        schedule.started("broker", now)
        now += 0.1  # crashes right away
        delay = schedule.exited("broker", now)
        delays.append(delay)
        now += delay
        assert schedule.due(now) == ["broker"]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_child_that_ran_stably_starts_over_at_the_initial_delay() -> None:
    schedule = RestartSchedule(["key-1"], POLICY)
    schedule.started("key-1", 0.0)
    schedule.exited("key-1", 0.1)
    schedule.started("key-1", 1.0)
    assert schedule.exited("key-1", 1.1) == 1.0  # second fast failure
    schedule.started("key-1", 2.0)
    assert schedule.exited("key-1", 2.0 + POLICY.stable) == POLICY.initial


def test_a_running_child_is_never_due_and_others_are_independent() -> None:
    schedule = RestartSchedule(["a", "b"], POLICY)
    schedule.started("a", 0.0)
    schedule.started("b", 0.0)
    assert schedule.next_due() is None
    schedule.exited("b", 1.0)
    assert schedule.next_due() == 1.5
    assert schedule.due(1000.0) == ["b"]
    schedule.started("b", 1000.0)
    assert schedule.due(2000.0) == []
    assert schedule.failures() == {"a": 0, "b": 1}


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=30))
def test_delay_always_within_policy(run_times: list[float]) -> None:
    schedule = RestartSchedule(["x"], POLICY)
    now = 0.0
    for ran in run_times:
        schedule.started("x", now)
        now += ran
        delay = schedule.exited("x", now)
        assert POLICY.initial <= delay <= POLICY.maximum
        now += delay


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ConfigError):
        RestartPolicy(initial=5.0, maximum=1.0)


def test_sizing_defaults_follow_the_cores() -> None:
    assert default_sizing(4) == {"register": 1, "key": 1, "file": 4}
    assert parse_sizing("", 3) == {"register": 1, "key": 1, "file": 3}
    assert parse_sizing("file=4,key=2, register=1", 2) == {"register": 1, "key": 2, "file": 4}
    assert parse_sizing("key=0", 1) == {"register": 1, "key": 0, "file": 1}


@pytest.mark.parametrize("text", ["file", "files=2", "file=-1", "file=x", "file=9999", "=3"])
def test_bad_sizing_names_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match="--workers"):
        parse_sizing(text, 2)


@pytest.mark.parametrize(
    ("bind", "connect"),
    [
        ("tcp://*:5555", "tcp://127.0.0.1:5555"),
        ("tcp://0.0.0.0:7000", "tcp://127.0.0.1:7000"),
        ("tcp://10.0.0.5:5555", "tcp://10.0.0.5:5555"),
        ("tcp://[::]:5555", "tcp://[::1]:5555"),
        ("ipc:///run/cipherdrop.sock", "ipc:///run/cipherdrop.sock"),
    ],
)
def test_workers_connect_to_a_local_address_of_the_bound_broker(bind: str, connect: str) -> None:
    assert connect_endpoint(bind) == connect
