"""client.throttle: the pace of --limit-rate, on a clock the test drives."""

from __future__ import annotations

import pytest

from client.throttle import Throttle, parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def test_chunks_are_paced_to_the_rate_after_the_first() -> None:
    clock = Clock()
    throttle = Throttle(1000, clock, clock.wait)
    for _ in range(5):
        throttle.take(500)  # each half a second's worth
    assert clock.waits == [0.5, 0.5, 0.5, 0.5]
    assert clock.now == pytest.approx(102.0)  # 2 000 bytes in 2 s, the 5th just begun


def test_time_spent_elsewhere_counts_and_no_credit_is_saved_up() -> None:
    clock = Clock()
    throttle = Throttle(1000, clock, clock.wait)
    throttle.take(1000)
    clock.now += 0.4  # the transfer itself took time: only the rest is waited
    throttle.take(1000)
    assert clock.waits == [pytest.approx(0.6)]
    clock.now += 10  # idle for long: no burst of ten seconds' worth afterwards
    throttle.take(1000)
    throttle.take(1000)
    assert clock.waits[1:] == [pytest.approx(1.0)]


def test_no_rate_never_waits() -> None:
    clock = Clock()
    throttle = Throttle(None, clock, clock.wait)
    for _ in range(100):
        throttle.take(1 << 20)
    assert clock.waits == []


@pytest.mark.parametrize(
    ("text", "rate"),
    [("1", 1), ("500k", 500 * 1024), ("2M", 2 << 20), ("1g", 1 << 30), (" 64K ", 64 << 10)],
)
def test_rates_read_with_binary_units(text: str, rate: int) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "0", "k", "-1M", "1.5M", "10T", "1e6", "fast", "\u00b2"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)
