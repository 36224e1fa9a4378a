"""Every way a worker ends, explained by one event (real processes).

Each test makes a real worker end in one way and checks the event's
classification and evidence, and, where a request was in flight, that its
client got a 502 naming the event.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import psutil

from poolwarden.events import catalog
from poolwarden.events.store import Event, EventStore
from tests.conftest import REPO, Server, ServerFactory, events_of, wait_until

APP = "tests.apps.crash_apps:app"


def wait_for_event(server: Server, event_id: int) -> Event:
    found = wait_until(lambda: events_of(server, event_id), what=f"event {event_id}")
    assert isinstance(found, list)
    return found[-1]


def crash_request(server: Server, path: str) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = server.get(path)
    return status, headers, body


def assert_502_names(response: tuple[int, dict[str, str], bytes], event: Event) -> None:
    status, headers, body = response
    assert status == 502
    assert headers["x-poolwarden-reason"] == "worker_died"
    assert headers["x-poolwarden-event"] == str(event.seq)
    assert f"poolwarden events show {event.seq}".encode() in body


def test_start_up_failure_names_the_module_and_the_exception(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        "tests.apps.broken_import:app", "--on-startup-failure", "serve", wait_ready=False
    )
    event = wait_for_event(server, catalog.WORKER_STARTUP_FAILED)
    failure: dict[str, Any] = event.details["startup_failure"]
    assert failure["phase"] == "import"
    assert failure["module"] == "tests.apps.broken_import"
    assert failure["exception_type"] == "KeyError"
    assert "DATABASE_URL" in failure["message"]
    assert "Traceback" in failure["traceback"]
    assert event.fingerprint and "KeyError" in event.fingerprint
    # readable without a server, through the CLI
    server.stop()
    shown = subprocess.run(
        [sys.executable, "-m", "poolwarden", "events", "show", str(event.seq),
         "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "tests.apps.broken_import" in shown.stdout
    assert "DATABASE_URL" in shown.stdout


def test_exit_status_with_the_stderr_tail_and_the_request_in_flight(
    start_server: ServerFactory,
) -> None:
    server = start_server(APP)
    response = crash_request(server, "/exit?code=7")
    event = wait_for_event(server, catalog.WORKER_ENDED_UNEXPECTEDLY)
    assert event.details["exit_code"] == 7
    assert event.details["who"].startswith("the worker")
    assert any("about to leave with os._exit" in line for line in event.details["stderr_tail"])
    assert [r["path"] for r in event.details["in_flight"]] == ["/exit?code=7"]
    assert_502_names(response, event)
    server.wait_for_workers(1, exclude={event.pid or 0})


def test_segfault_names_the_signal_and_the_python_frame_that_crashed(
    start_server: ServerFactory,
) -> None:
    server = start_server(APP)
    response = crash_request(server, "/segv")
    event = wait_for_event(server, catalog.WORKER_ENDED_UNEXPECTEDLY)
    assert event.details["signal"] == "SIGSEGV"
    crash = event.details["crash"]
    assert crash["signal"] == "SIGSEGV"
    assert crash["frame"]["name"] == "crash_in_c"
    assert "Segmentation fault" in crash["dump"]
    assert "crash_in_c" in (event.fingerprint or "")
    assert_502_names(response, event)


def test_sigkill_from_outside_says_so_with_the_last_rss(start_server: ServerFactory) -> None:
    server = start_server(APP)
    [pid] = server.worker_pids()
    os.kill(pid, signal.SIGKILL)
    event = wait_for_event(server, catalog.WORKER_ENDED_UNEXPECTEDLY)
    assert event.pid == pid
    assert event.details["signal"] == "SIGKILL"
    assert "SIGKILL from outside" in event.message
    assert "memory" not in event.message.lower() or event.details["oom_killed"] is True
    assert isinstance(event.details["last_rss"], int) and event.details["last_rss"] > 0


def test_channel_lost_while_the_process_lives_is_5011(start_server: ServerFactory) -> None:
    server = start_server(APP)
    [pid] = server.worker_pids()
    response = server.get("/close-channel")
    event = wait_for_event(server, catalog.WORKER_CHANNEL_BROKEN)
    assert event.pid == pid
    assert event.details["channel_broken_while_alive"] is True
    assert_502_names(response, event)
    wait_until(lambda: not psutil.pid_exists(pid), what="the untrusted worker to be gone")


def test_an_exception_in_an_app_thread_is_a_warning_and_the_worker_lives(
    start_server: ServerFactory,
) -> None:
    server = start_server(APP)
    [pid] = server.worker_pids()
    assert server.get("/thread")[0] == 200
    event = wait_for_event(server, catalog.APP_THREAD_EXCEPTION)
    assert event.level == "warning"
    assert event.details["thread"] == "app-side-thread"
    assert "boom in a thread" in event.details["exception"]["traceback"]
    assert server.worker_pids() == [pid]
    assert server.get("/")[1:] and server.get("/")[2] == str(pid).encode()


def test_an_exception_escaping_into_the_runtime_is_reported_with_its_traceback(
    start_server: ServerFactory,
) -> None:
    server = start_server(APP)
    response = crash_request(server, "/fatal")
    event = wait_for_event(server, catalog.WORKER_ENDED_UNEXPECTEDLY)
    exception = event.details["exception"]
    assert exception["type"].endswith("Fatal")
    assert "the app raised a BaseException" in exception["traceback"]
    assert event.details["exit_code"] == 70
    assert_502_names(response, event)


def test_events_survive_a_master_killed_with_sigkill(start_server: ServerFactory) -> None:
    server = start_server(APP)
    started = wait_for_event(server, catalog.WORKER_READY)
    server.process.kill()
    server.process.wait(10)
    with EventStore.open_reader(server.state_dir) as store:
        assert store.get(started.seq) is not None


def test_a_hung_worker_fails_its_ping_and_its_stack_is_in_the_event(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        "tests.apps.crash_apps:hanging",
        "--threads", "1", "--ping-interval", "0.2", "--ping-response-time", "1",
    )  # fmt: skip
    [pid] = server.worker_pids()
    response = crash_request(server, "/hang")
    event = wait_for_event(server, catalog.WORKER_PING_FAILED)
    assert event.pid == pid
    assert event.details["ended_by"] == "hang"
    assert "SIGABRT" in event.details["signals_sent"]
    assert event.details["crash"]["frame"]["name"] == "stuck_here"
    assert [r["path"] for r in event.details["in_flight"]] == ["/hang"]
    assert_502_names(response, event)
    server.wait_for_workers(1, exclude={pid})
