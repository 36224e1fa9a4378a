"""Loop lag (event 2041): an ASGI worker's watchdog reports a blocked event
loop with the line that blocked it. The rules first, as a pure function of
the heartbeat and the time; then real servers."""

from __future__ import annotations

import math
import threading

import psutil

from poolwarden import channel as ch
from poolwarden.events import catalog
from poolwarden.worker import loop_watch
from poolwarden.worker.loop_watch import HOLD_LIMIT, REPORT_INTERVAL, Step, WatchState, observe
from tests.conftest import Server, events_of, one_pool_config, wait_until

ASGI = "tests.apps.slow_apps:asgi_app"
THRESHOLD = 0.3

# --- the rules -------------------------------------------------------------------


def _looks(
    looks: list[tuple[float, float]], state: WatchState | None = None
) -> tuple[WatchState, list[Step]]:
    """Feed (now, due) looks through `observe`; the last state and every step."""
    state = state or WatchState()
    steps = []
    for now, due in looks:
        state, step = observe(state, now, due, THRESHOLD)
        steps.append(step)
    return state, steps


def test_a_loop_keeping_time_is_never_reported() -> None:
    looks = [(t / 10, t / 10 + 0.1) for t in range(100)]
    assert set(_looks(looks)[1]) == {Step.NOTHING}


def test_a_lag_below_the_threshold_is_not_a_stall() -> None:
    state, steps = _looks([(10.0 + THRESHOLD - 0.01, 10.0)])
    assert steps == [Step.NOTHING]
    assert state.stall_due is None


def test_a_stall_is_captured_once_and_reported_when_the_loop_runs_again() -> None:
    due = 10.0
    state, steps = _looks(
        [
            (due + THRESHOLD, due),  # seen: the stack is taken now
            (due + 0.5, due),
            (due + 1.0, due),  # still blocked: nothing more
            (due + 1.6, due + 1.6),  # the loop ran: the report leaves
            (due + 1.7, due + 1.6),
        ]
    )
    assert steps == [Step.CAPTURE, Step.NOTHING, Step.NOTHING, Step.REPORT_ENDED, Step.NOTHING]
    assert state.stall_due is None and not state.holding
    assert state.last_capture == due + THRESHOLD


def test_a_stall_that_goes_on_is_reported_after_the_hold_limit_and_only_then() -> None:
    due = 10.0
    seen = due + THRESHOLD
    state, steps = _looks(
        [(seen, due), (seen + HOLD_LIMIT - 0.01, due), (seen + HOLD_LIMIT, due), (seen + 60, due)]
    )
    assert steps == [Step.CAPTURE, Step.NOTHING, Step.REPORT_BLOCKED, Step.NOTHING]
    # Its end says nothing more: one message per stall.
    state, step = observe(state, seen + 61, seen + 61, THRESHOLD)
    assert step is Step.NOTHING and state.stall_due is None


def test_stalls_within_the_report_interval_are_counted_not_reported() -> None:
    first = WatchState(last_capture=100.0)
    # A stall 1 s after the last capture: skipped.
    state, step = observe(first, 101.0, 100.5, THRESHOLD)
    assert step is Step.NOTHING and state.skipped == 1 and not state.holding
    # It ends: nothing to send.
    state, step = observe(state, 102.0, 102.0, THRESHOLD)
    assert step is Step.NOTHING
    # The next one past the interval is captured, and carries the count.
    later = 100.0 + REPORT_INTERVAL
    captured, step = observe(state, later, later - 0.5, THRESHOLD)
    assert step is Step.CAPTURE
    assert state.skipped == 1 and captured.skipped == 0


def test_the_first_stall_is_always_reported() -> None:
    assert WatchState().last_capture == -math.inf
    assert observe(WatchState(), 0.5, 0.0, THRESHOLD)[1] is Step.CAPTURE


def test_the_check_interval_is_a_quarter_of_the_threshold_but_not_below_10ms() -> None:
    assert loop_watch.check_interval(1.0) == 0.25
    assert loop_watch.check_interval(0.001) == loop_watch.MIN_CHECK_INTERVAL


def test_the_stack_of_another_thread_is_read_innermost_first() -> None:
    parked = threading.Event()
    release = threading.Event()

    def parked_here() -> None:
        parked.set()
        release.wait(10)

    thread = threading.Thread(target=parked_here)
    thread.start()
    try:
        assert parked.wait(10)
        assert thread.ident is not None
        frames = loop_watch.stack_of(thread.ident)
    finally:
        release.set()
        thread.join()
    names = [frame.name for frame in frames]
    assert "parked_here" in names
    assert names.index("wait") < names.index("parked_here") < names.index("run")
    assert all(isinstance(frame, ch.Frame) for frame in frames)


# --- real servers -------------------------------------------------------------------


def _config(loop_lag_warning: str) -> str:
    return one_pool_config(
        "api",
        ASGI,
        f"""start_mode = "always_running"
[pools.api.process_model]
loop_lag_warning = "{loop_lag_warning}"
""",
    )


def _serving_pid(server: Server) -> int:
    status, _, body = server.get("/")
    assert status == 200
    return int(body)


def _lag_events(server: Server) -> list[object]:
    return events_of(server, catalog.LOOP_LAG)


def test_a_blocked_loop_is_reported_with_the_line_that_blocked_it(start_serve) -> None:
    server = start_serve(_config("300ms"))
    pid = _serving_pid(server)
    status, _, body = server.get("/block", timeout=30)
    assert status == 200 and int(body) == pid
    [event] = wait_until(lambda: _lag_events(server), what="event 2041")
    assert event.pid == pid
    assert event.pool == "api"
    assert event.level == "warning"
    assert "block_the_loop" in event.message
    assert "slow_apps.py" in event.message
    assert "GET /block" in event.message
    details = event.details
    assert details["lag"] >= THRESHOLD
    assert details["ended"] is True
    # time.sleep(1.5): most of it was seen (the stall began up to a beat
    # before the beat it made late).
    assert 1.0 <= details["blocked"] < 10
    assert details["path"] == "/block"
    assert "block_the_loop" in details["stack"]
    assert "time.sleep(1.5)" in details["stack"]
    assert event.fingerprint.startswith("2041 api ")
    assert event.fingerprint.endswith(f"slow_apps.py:{_line_of('time.sleep(1.5)')}")
    server.wait_for_stderr(r"worker \d+: the event loop was blocked for [\d.]+s in block_the_loop")


def _line_of(text: str) -> int:
    from tests.apps import slow_apps

    with open(slow_apps.__file__) as source:
        for number, line in enumerate(source, 1):
            if text in line:
                return number
    raise AssertionError(text)


def test_normal_requests_raise_no_loop_lag(start_serve) -> None:
    server = start_serve(_config("300ms"))
    for _ in range(40):
        assert server.get("/")[0] == 200
    assert _lag_events(server) == []


def test_no_watchdog_when_loop_lag_warning_is_0(start_serve) -> None:
    server = start_serve(_config("0"))
    pid = _serving_pid(server)
    assert server.get("/block", timeout=30)[0] == 200
    worker = psutil.Process(pid)
    # The worker's threads: the loop alone, no watchdog to report anything.
    assert worker.num_threads() == 1
    assert _lag_events(server) == []


def test_the_watchdog_is_a_thread_of_the_asgi_worker(start_serve) -> None:
    server = start_serve(_config("300ms"))
    pid = _serving_pid(server)
    assert psutil.Process(pid).num_threads() == 2


def test_back_to_back_stalls_make_one_report_per_interval(start_serve) -> None:
    server = start_serve(_config("300ms"))
    # The loop blocks again and again; only the first stall, then the first
    # one past the report interval, are reported, the latter counting those
    # left out in between.
    for _ in range(10):
        assert server.get("/block", timeout=30)[0] == 200
        if len(_lag_events(server)) >= 2:
            break
    wait_until(lambda: len(_lag_events(server)) >= 2, what="the second report")
    first, second = _lag_events(server)
    assert first.details["skipped"] == 0
    assert second.details["skipped"] >= 1
    assert "more stall(s) since the last report went unreported" in second.message
    assert second.time - first.time >= REPORT_INTERVAL - 1.0
    assert len(_lag_events(server)) == 2


def test_a_request_timeout_in_a_blocked_loop_shows_the_loop_not_the_watchdog(
    start_serve,
) -> None:
    # The watchdog is one more thread in the worker's stack dump: the 2040
    # event must still show the loop thread's stack.
    server = start_serve(
        one_pool_config(
            "api",
            "tests.apps.loop_apps:app",
            """start_mode = "always_running"
[pools.api.process_model]
loop_lag_warning = "300ms"
request_timeout = "1s"
""",
        )
    )
    assert server.get("/hold?6", timeout=30)[0] == 504
    [timeout] = wait_until(lambda: events_of(server, catalog.REQUEST_TIMEOUT), what="2040")
    assert "hold_the_loop" in timeout.message
    assert "hold_the_loop" in timeout.details["stack"]
    assert "loop_watch" not in timeout.details["stack"]
    # The stall itself is reported too, once the loop runs again.
    [lag] = wait_until(lambda: _lag_events(server), what="event 2041")
    assert "hold_the_loop" in lag.message
    # Still blocked 5 s after it was seen: reported as it stood.
    assert lag.details["ended"] is False
    assert lag.details["blocked"] >= 5.0
    assert "still was when reported" in lag.message
