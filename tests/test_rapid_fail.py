"""Rapid-fail protection and restart back-off, without processes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poolwarden.activation.rapid_fail import (
    BACKOFF_MAX,
    FailureWindow,
    RapidFailPolicy,
    record_failure,
    restart_delay,
    standing,
)

DEFAULT = RapidFailPolicy()


def run(times: list[float], policy: RapidFailPolicy = DEFAULT) -> list[bool]:
    window = FailureWindow()
    verdicts = []
    for now in times:
        verdict = record_failure(window, policy, now)
        window = verdict.window
        verdicts.append(verdict.disable)
    return verdicts


def test_five_failures_in_five_minutes_disable_the_pool() -> None:
    assert run([0, 10, 20, 30, 40]) == [False, False, False, False, True]


def test_the_same_failures_spread_wider_than_the_interval_do_not() -> None:
    assert run([0, 100, 200, 300, 400, 500]) == [False] * 6


def test_failures_leave_the_window_after_the_interval() -> None:
    verdict = record_failure(FailureWindow((0.0, 1.0, 2.0, 3.0)), DEFAULT, 300.5)
    assert verdict.count == 4  # 0.0 dropped out; 1, 2, 3 and now
    assert not verdict.disable


def test_off_never_disables() -> None:
    assert run([0] * 50, RapidFailPolicy(enabled=False)) == [False] * 50


def test_standing_says_where_the_pool_stands() -> None:
    assert standing(3, DEFAULT) == "failure 3 of 5 within 5m"
    assert standing(1, RapidFailPolicy(max_crashes=2, interval=90)) == "failure 1 of 2 within 90s"


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), max_size=40),
    max_crashes=st.integers(min_value=1, max_value=8),
    interval=st.floats(min_value=1, max_value=600, allow_nan=False),
)
def test_disabled_exactly_when_the_window_holds_max_crashes(
    gaps: list[float], max_crashes: int, interval: float
) -> None:
    policy = RapidFailPolicy(max_crashes=max_crashes, interval=interval)
    window = FailureWindow()
    now = 0.0
    history: list[float] = []
    for gap in gaps:
        now += gap
        history.append(now)
        verdict = record_failure(window, policy, now)
        window = verdict.window
        in_window = [t for t in history if now - t < interval]
        assert verdict.disable == (len(in_window) >= max_crashes)
        assert verdict.count == min(len(in_window), max_crashes)
        assert len(window.times) <= max_crashes


@given(st.integers(min_value=0, max_value=100))
def test_back_off_starts_at_once_then_doubles_up_to_the_cap(failures: int) -> None:
    delay = restart_delay(failures)
    assert 0 <= delay <= BACKOFF_MAX
    if failures <= 1:
        assert delay == 0
    else:
        assert delay >= restart_delay(failures - 1)
    assert [restart_delay(n) for n in range(1, 8)] == [0, 1, 2, 4, 8, 16, 30]
