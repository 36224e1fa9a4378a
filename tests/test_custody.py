"""Recycles and worker ends that lose no request (real processes).

A worker that gets SIGTERM from outside drains like one the master asked; a
worker asks for its recycle at its request limit; a draining worker hands
its idle keep-alive connections back to the front end; a request a dead
worker never read is answered, never reset.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from poolwarden.events import catalog
from tests.conftest import Server, ServerFactory, events_of, wait_until

WSGI_APP = "tests.apps.custody_apps:app"
ASGI_APP = "tests.apps.custody_apps:asgi_app"
APPS = {"wsgi": WSGI_APP, "asgi": ASGI_APP}


def answer_pid(body: bytes) -> int:
    return int(body.split()[0])


def ended_events(server: Server, pid: int) -> list[Any]:
    """The end events (any classification) written for worker `pid`."""
    found = []
    for event_id in (
        catalog.WORKER_EXITED,
        catalog.WORKER_ENDED_UNEXPECTEDLY,
        catalog.WORKER_SHUTDOWN_TIME_LIMIT,
    ):
        found += [event for event in events_of(server, event_id) if event.pid == pid]
    return found


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_sigterm_from_outside_drains_the_worker_and_a_new_one_serves(
    start_server: ServerFactory, interface: str
) -> None:
    server = start_server(APPS[interface], "--interface", interface)
    [old] = server.worker_pids()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(server.get, "/slow?1")
        wait_until(lambda: b"/slow" in _busy_paths(server, old), what="the slow request in the app")
        os.kill(old, signal.SIGTERM)
        status, _, body = in_flight.result(20)
    assert status == 200 and answer_pid(body) == old
    status, _, body = server.get("/")
    assert status == 200 and answer_pid(body) != old
    [event] = wait_until(lambda: ended_events(server, old), what="the end event of the old worker")
    assert event.event_id == catalog.WORKER_EXITED
    assert event.details["ended_by"] == "signal"
    assert "SIGTERM from outside" in event.message
    assert events_of(server, catalog.WORKER_ENDED_UNEXPECTEDLY) == []


def _busy_paths(server: Server, pid: int) -> bytes:
    """The paths worker `pid` is serving now (the control API's requests)."""
    from poolwarden.control_client import ControlClient

    try:
        rows = ControlClient(server.state_dir).get("/v1/requests")["requests"]
    except Exception:
        return b""
    return b" ".join(str(row["path"]).encode() for row in rows if row["pid"] == pid)
