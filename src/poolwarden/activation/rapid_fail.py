"""Rapid-fail protection: a pool that keeps failing is disabled, as IIS does.

A failure is a worker that exits unexpectedly, fails at start-up, exceeds its
start-up time limit, stops answering pings or breaks its channel (the event
classification says which ends count). When `max_crashes` failures fall
within `interval`, the pool is disabled: no worker is started any more and
every request gets `503 pool_disabled` at once, until an administrator starts
the pool again (which clears the window).

The window is a small value and `record_failure` a function of (window,
policy, now), like OTP's supervisor restart intensity: a burst of failures
trips it, the same number spread wider than the interval does not.

Between failures, before the pool is disabled, restarts back off (as systemd
and PM2 do): the first at once, then 1 s doubling up to 30 s.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class RapidFailPolicy:
    """IIS's defaults: on, 5 failures within 5 minutes."""

    enabled: bool = True
    max_crashes: int = 5
    interval: float = 300.0


@dataclass(frozen=True, slots=True)
class FailureWindow:
    """The times of the failures that still count (within the interval)."""

    times: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one more failure means for the pool."""

    window: FailureWindow
    count: int
    """Failures within the interval, this one included."""
    disable: bool
    """The pool must be disabled now."""


def record_failure(window: FailureWindow, policy: RapidFailPolicy, now: float) -> Verdict:
    """Add a failure at `now`; failures older than the interval drop out."""
    recent = tuple(time for time in window.times if now - time < policy.interval)
    times = (*recent, now)[-max(policy.max_crashes, 1) :]
    count = len(times)
    return Verdict(
        window=FailureWindow(times),
        count=count,
        disable=policy.enabled and count >= policy.max_crashes,
    )


def standing(count: int, policy: RapidFailPolicy) -> str:
    """`failure 3 of 5 within 5m`: where the pool stands, for each failure event."""
    if not policy.enabled:
        return f"failure {count} (rapid-fail protection is off)"
    return f"failure {count} of {policy.max_crashes} within {_duration(policy.interval)}"


def restart_delay(consecutive_failures: int) -> float:
    """Seconds before the next start after `consecutive_failures` failed ones."""
    if consecutive_failures <= 1:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (consecutive_failures - 2)))


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"
