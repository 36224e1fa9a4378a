"""Recycles and worker ends that lose no request (real processes).

A worker that gets SIGTERM from outside drains like one the master asked; a
worker asks for its recycle at its request limit; a draining worker hands
its idle keep-alive connections back to the front end; a request a dead
worker never read is answered, never reset.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from poolwarden.events import catalog
from tests.conftest import (
    Server,
    ServerFactory,
    events_of,
    freeze,
    read_until_closed,
    wait_until,
)

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
    ended = wait_until(lambda: ended_events(server, old), what="the end event of the old worker")
    assert isinstance(ended, list)
    [event] = ended
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


LIMIT = 10
REQUESTS = 35
REACTION = 0.3
"""Seconds from the answer that reaches a worker's limit to its
replacement's start, at most: the worker asks at the count and the master
starts the replacement at once (its periodic look, once a second, is what
this replaces)."""


def request_limits(server: Server) -> dict[int, int]:
    """Each live worker's own request limit (the pool's, less its jitter),
    as `poolwarden wp` shows it."""
    from poolwarden.control_client import ControlClient

    rows = ControlClient(server.state_dir).get("/v1/workers")["workers"]
    return {row["pid"]: row["request_limit"] for row in rows}


def test_a_worker_asks_for_its_recycle_at_its_request_limit(start_server: ServerFactory) -> None:
    """35 quick sequential requests with `requests = 10` are served by at
    least four workers, none serving more than its limit + 1.

    The excess a worker may serve is what arrives while its replacement
    starts: it serves on until the replacement is Ready (an overlapped
    recycle). This client sends its requests one after the other, and after
    the answer that reaches a worker's limit it sends nothing until another
    worker is Ready: what arrives meanwhile is nothing. The one request
    allowed over the limit is for a Ready that the log shows a moment
    before the master marks the old worker retiring. The replacement must
    start within `REACTION` of that answer: the worker asked at the count.
    """
    server = start_server(WSGI_APP, "--max-requests", str(LIMIT))
    limits = request_limits(server)
    served: dict[int, int] = {}
    known = set(limits)
    reached_at: dict[int, float] = {}
    for _ in range(REQUESTS):
        status, _, body = server.get("/")
        assert status == 200
        pid = answer_pid(body)
        served[pid] = served.get(pid, 0) + 1
        if served[pid] == limits[pid]:
            reached_at[pid] = time.time()
            known |= set(server.wait_for_workers(1, exclude=known))
            limits.update(request_limits(server))
    assert len(served) >= 4, served
    assert all(count <= limits[pid] + 1 for pid, count in served.items()), (served, limits)
    starts = sorted(event.time for event in events_of(server, catalog.WORKER_STARTED))
    for pid, reached in reached_at.items():
        assert f"recycling worker {pid}: it served {limits[pid]} requests" in server.stderr()
        replacement = next(started for started in starts if started > reached - REACTION)
        assert replacement - reached < REACTION, (pid, replacement - reached)


class KeepAliveClient:
    """Requests in a loop on one keep-alive connection until stopped; every
    fifth is a 1 MiB POST. Any answer but a 200 with the body's size, and
    any reset or empty reply, is a failure."""

    BIG = b"x" * (1 << 20)

    def __init__(self, server: Server) -> None:
        self.server = server
        self.failures: list[object] = []
        self.count = 0
        self.pids: set[int] = set()

    def run(self, stop: threading.Event) -> None:
        connection = self.server.http(timeout=20)
        try:
            while not stop.is_set():
                body = self.BIG if self.count % 5 == 4 else None
                try:
                    connection.request("POST" if body else "GET", "/", body=body)
                    response = connection.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as error:
                    self.failures.append(repr(error))
                    connection.close()
                    continue
                size = len(body) if body else 0
                if response.status != 200 or int(data.split()[1]) != size:
                    self.failures.append((response.status, data[:200]))
                else:
                    self.pids.add(answer_pid(data))
                self.count += 1
        finally:
            connection.close()


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_recycles_lose_no_request_on_keep_alive_connections(
    start_server: ServerFactory, interface: str
) -> None:
    server = start_server(APPS[interface], "--interface", interface)
    from poolwarden.control_client import ControlClient

    control = ControlClient(server.state_dir)
    clients = [KeepAliveClient(server) for _ in range(4)]
    stop = threading.Event()
    with ThreadPoolExecutor(len(clients)) as pool:
        running = [pool.submit(client.run, stop) for client in clients]
        try:
            deadline = time.monotonic() + 5.0
            known = set(server.worker_pids())
            for _ in range(3):
                control.post("/v1/pools/default/recycle")
                known |= set(server.wait_for_workers(1, exclude=known))
            # Let the last old worker drain while the clients go on.
            wait_until(
                lambda: len(server.worker_pids()) == 1 or time.monotonic() > deadline,
                what="the last old worker to end",
            )
        finally:
            stop.set()
            for future in running:
                future.result(60)
    assert [client.failures for client in clients] == [[]] * len(clients)
    assert sum(client.count for client in clients) > 20
    assert len(set().union(*(client.pids for client in clients))) >= 2


def test_a_request_sent_on_an_idle_connection_of_a_worker_that_dies_gets_a_502(
    start_server: ServerFactory,
) -> None:
    """The request waits unread in the socket when the worker dies: it is
    answered 502 with the event, never reset (the worker read this
    connection's earlier request, so nothing proves it read none of this one)."""
    server = start_server(WSGI_APP)
    [pid] = server.worker_pids()
    sock = server.connect()
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and str(pid).encode() in first
        freeze(pid)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        os.kill(pid, signal.SIGKILL)
        answer = read_until_closed(sock)
    finally:
        sock.close()
    # Never a reset: a 502 naming the event, or, when the request had not yet
    # reached the socket as the worker was stopped (the kernel's counts did
    # not move), another worker's answer.
    if answer.startswith(b"HTTP/1.1 502"):
        assert b"x-poolwarden-event: " in answer.lower()
    else:
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert str(pid).encode() not in answer.split(b"\r\n\r\n", 1)[1]


def test_a_connection_a_dead_worker_never_read_goes_to_another_worker(
    start_server: ServerFactory,
) -> None:
    """Dispatched to a worker that died before it read it (stopped, then
    killed): the master holds the head it read and sends it on."""
    server = start_server(WSGI_APP)
    [pid] = server.worker_pids()
    freeze(pid)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(server.get, "/", timeout=20)
        wait_until(
            lambda: _custody_size(server, pid) > 0, what="the dispatch to the stopped worker"
        )
        os.kill(pid, signal.SIGKILL)
        status, _, body = answer.result(30)
    assert status == 200 and answer_pid(body) != pid


def _custody_size(server: Server, pid: int) -> int:
    """Connections the master handed to worker `pid` and holds for it."""
    from poolwarden.control_client import ControlClient

    rows = ControlClient(server.state_dir).get("/v1/workers")["workers"]
    return sum(row["connections"] for row in rows if row["pid"] == pid)
