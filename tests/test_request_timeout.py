"""Request time-outs (real processes): 504 from the master, the stack in the
event, and what happens to the worker by `request_timeout_action`."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from poolwarden.events import catalog
from tests.conftest import POOLWARDEN, Server, events_of, one_pool_config, wait_until

WSGI = "tests.apps.slow_apps:app"
ASGI = "tests.apps.slow_apps:asgi_app"


def _config(app: str, action: str) -> str:
    return one_pool_config(
        "slow",
        app,
        f"""start_mode = "always_running"
threads = 2
[pools.slow.process_model]
request_timeout = "1s"
request_timeout_action = "{action}"
""",
    )


def _serving_pid(server: Server) -> int:
    status, _, body = server.get("/")
    assert status == 200
    return int(body)


@pytest.mark.parametrize(
    ("app", "function"), [(WSGI, "wait_for_the_database"), (ASGI, "wait_for_the_queue")]
)
def test_a_request_past_the_limit_gets_504_and_its_stack_is_logged(
    start_serve, app: str, function: str
) -> None:
    server = start_serve(_config(app, "log"))
    pid = _serving_pid(server)
    started = time.monotonic()
    status, headers, body = server.get("/stuck", timeout=30)
    waited = time.monotonic() - started
    assert status == 504, body
    assert headers["x-poolwarden-reason"] == "request_timeout"
    assert 1.0 <= waited < 5.0
    seq = int(headers["x-poolwarden-event"])
    [event] = events_of(server, catalog.REQUEST_TIMEOUT)
    assert event.seq == seq
    assert event.pid == pid
    assert function in event.message
    assert event.details["path"] == "/stuck"
    assert event.details["action"] == "log"
    assert function in event.details["stack"]
    assert "slow_apps.py" in event.details["stack"]
    # log: the worker keeps serving.
    assert _serving_pid(server) == pid


def test_a_request_stuck_in_c_holding_the_gil_still_gets_its_stack(start_serve) -> None:
    server = start_serve(_config(WSGI, "kill"))
    pid = _serving_pid(server)
    status, _, _ = server.get("/spin", timeout=30)
    assert status == 504
    [event] = [e for e in events_of(server, catalog.REQUEST_TIMEOUT) if e.details.get("path")]
    assert "spin_in_c_holding_the_gil" in event.details["stack"]
    # kill: the worker is ended at once and replaced; the end is an event too.
    wait_until(lambda: len(events_of(server, catalog.REQUEST_TIMEOUT)) == 2, what="kill event")
    ended = [e for e in events_of(server, catalog.REQUEST_TIMEOUT) if e.pid == pid]
    assert any("was killed because a request ran past" in e.message for e in ended)
    assert wait_until(lambda: _serving_pid(server) != pid, what="a new worker")


def test_recycle_action_replaces_the_worker_with_overlap(start_serve) -> None:
    server = start_serve(_config(WSGI, "recycle"))
    pid = _serving_pid(server)
    status, _, _ = server.get("/stuck", timeout=30)
    assert status == 504
    # The replacement serves; the old worker drains (its stuck thread holds
    # it until the shut-down time limit) while requests keep succeeding.
    wait_until(lambda: _serving_pid(server) != pid, what="the replacement to serve")
    for _ in range(20):
        assert server.get("/")[0] == 200


def test_a_fast_request_is_not_touched(start_serve) -> None:
    server = start_serve(_config(WSGI, "kill"))
    pid = _serving_pid(server)
    status, _, body = server.get("/slow?0.3")
    assert status == 200 and int(body) == pid
    assert events_of(server, catalog.REQUEST_TIMEOUT) == []


def test_a_request_waits_in_the_queue_no_longer_than_the_start_up_time_limit(
    start_serve,
) -> None:
    server = start_serve(
        one_pool_config(
            "slow",
            WSGI,
            'start_mode = "always_running"\nthreads = 1\n'
            '[pools.slow.process_model]\nstartup_time_limit = "1s"\n',
        )
    )
    pid = _serving_pid(server)
    holder = threading.Thread(target=_hold, args=(server,), daemon=True)
    holder.start()
    wait_until(lambda: _busy(server), what="the only thread to be busy")
    started = time.monotonic()
    status, headers, body = server.get("/", timeout=30)
    assert status == 503, body
    assert headers["x-poolwarden-reason"] == "queue_timeout"
    assert 1.0 <= time.monotonic() - started < 5.0
    assert b"stayed busy for 1s" in body
    assert server.worker_pids() == [pid]


def _hold(server: Server) -> None:
    """Keep the only thread busy until the server stops at teardown."""
    try:
        server.get("/stuck", timeout=30)
    except OSError:
        pass


def _busy(server: Server) -> bool:
    result = subprocess.run(
        [*POOLWARDEN, "requests", "--json", "--state-dir", str(server.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return '"/stuck"' in result.stdout
