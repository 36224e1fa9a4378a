"""What fail-fast says and decides on each failed start (pure)."""

from __future__ import annotations

from poolwarden import channel as ch
from poolwarden.master.startup_retries import StartupRetries


def failure(
    message: str, traceback: str = "Traceback (most recent call last):\n  ...\n"
) -> ch.StartupFailure:
    return ch.StartupFailure(
        phase="import",
        app="shop:app",
        exception_type="ConnectionRefusedError",
        message=message,
        traceback=traceback,
    )


def test_the_headline_and_traceback_once_then_the_count_until_the_limit() -> None:
    retries = StartupRetries(3)
    first = retries.failure(failure("refused"))
    assert not first.exit
    assert first.lines[0].startswith("poolwarden: cannot start app 'shop:app'")
    assert first.lines[1:] == [
        "Traceback (most recent call last):",
        "  ...",
        "poolwarden: retrying, 2 of 3",
    ]
    second = retries.failure(failure("refused"))
    assert (second.lines, second.exit) == (["poolwarden: retrying, 3 of 3"], False)
    last = retries.failure(failure("refused"))
    assert last.exit
    assert last.lines == [
        f"poolwarden: giving up after 3 failed starts: {failure('refused').headline()}"
    ]


def test_a_different_failure_is_shown_when_it_comes() -> None:
    retries = StartupRetries(5)
    retries.failure(failure("refused"))
    other = retries.failure(failure("a KeyError this time", traceback=""))
    assert other.lines == [
        f"poolwarden: {failure('a KeyError this time').headline()}",
        "poolwarden: retrying, 3 of 5",
    ]


def test_exit_now_is_one_attempt() -> None:
    verdict = StartupRetries(1).failure(failure("refused"))
    assert verdict.exit
    assert verdict.lines == [
        f"poolwarden: {failure('refused').headline()}",
        "Traceback (most recent call last):",
        "  ...",
    ]
