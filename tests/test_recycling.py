"""Recycling by requests, memory and time, and idle shutdown (real processes).

Each recycle happens under a bounded load, and no request may fail: the
replacement is Ready before the old worker stops taking requests.
"""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from poolwarden.events import catalog
from tests.conftest import (
    POOLWARDEN,
    Server,
    ServerFactory,
    events_of,
    one_pool_config,
    wait_until,
)

APP = "tests.apps.recycle_apps:app"


class Load:
    """Client threads sending requests until stopped (bounded in count)."""

    def __init__(self, server: Server, threads: int = 2, limit: int = 100_000) -> None:
        self.server = server
        self.failures: list[object] = []
        self.pids: set[int] = set()
        self.count = 0
        self._stop = threading.Event()
        self._limit = limit
        self._pool = ThreadPoolExecutor(threads)
        self._futures = [self._pool.submit(self._run) for _ in range(threads)]

    def _run(self) -> None:
        sent = 0
        while not self._stop.is_set() and sent < self._limit:
            sent += 1
            try:
                status, _, body = self.server.get("/")
            except OSError as error:
                self.failures.append(error)
                continue
            if status != 200:
                self.failures.append(status)
            else:
                self.pids.add(int(body))
                self.count += 1

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(60)
        self._pool.shutdown()


def test_recycling_by_requests_fails_no_request(start_server: ServerFactory) -> None:
    server = start_server(APP, "--max-requests", "40", "--threads", "4")
    load = Load(server)
    try:
        wait_until(lambda: len(load.pids) >= 3, timeout=60, what="two recycles by requests")
    finally:
        load.stop()
    assert load.failures == []
    assert "served" in server.stderr() and "recycling worker" in server.stderr()
    exited = events_of(server, catalog.WORKER_EXITED)
    assert exited and all(event.details["ended_by"] == "recycle" for event in exited)


def test_recycling_by_memory_fails_no_request(start_server: ServerFactory) -> None:
    server = start_server(APP, "--memory-limit", "100MiB")
    [first] = server.worker_pids()
    load = Load(server)
    try:
        for _ in range(3):
            assert server.get("/grow")[0] == 200
        event = wait_until(
            lambda: events_of(server, catalog.RECYCLE_MEMORY), what="a recycle by memory"
        )
        wait_until(lambda: first not in server.worker_pids(), what="the big worker to go")
        wait_until(lambda: len(load.pids) >= 2, what="the replacement to serve")
    finally:
        load.stop()
    assert load.failures == []
    assert isinstance(event, list) and event[0].pid == first


CONFIG = one_pool_config("web", "tests.apps.recycle_apps:app")


def test_recycling_by_time_fails_no_request(start_serve: Any) -> None:
    server = start_serve(
        CONFIG + 'start_mode = "always_running"\n\n[pools.web.recycling]\ntime = "2s"\njitter = 0\n'
    )
    server.wait_for_workers(1)
    load = Load(server)
    try:
        wait_until(
            lambda: len(events_of(server, catalog.RECYCLE_TIME)) >= 2,
            timeout=30,
            what="two recycles by time",
        )
        wait_until(lambda: len(load.pids) >= 3, what="three workers to have served")
    finally:
        load.stop()
    assert load.failures == []


def test_an_idle_worker_is_shut_down_and_the_next_request_starts_one(start_serve: Any) -> None:
    server = start_serve(CONFIG + '\n[pools.web.process_model]\nidle_timeout = "1s"\n')
    status, _, body = server.get("/")
    assert status == 200
    first = int(body)
    event = wait_until(
        lambda: events_of(server, catalog.WORKER_IDLE_SHUTDOWN), what="an idle shutdown"
    )
    assert isinstance(event, list) and event[0].pid == first
    wait_until(lambda: server.worker_pids() == [], what="no worker left")
    status, _, body = server.get("/")
    assert status == 200
    assert int(body) != first


def test_recycling_on_schedule_fails_no_request(start_serve: Any) -> None:
    # Two seconds ahead, as "HH:MM:SS" (IIS writes its schedule entries so).
    at = time.strftime("%H:%M:%S", time.localtime(time.time() + 2))
    server = start_serve(
        CONFIG
        + 'start_mode = "always_running"\nmax_processes = 2\n\n[pools.web.recycling]\n'
        + f'schedule = ["{at}"]\nlog_event_on_recycle = ["schedule"]\n'
    )
    status, _, _ = server.get("/")
    assert status == 200
    load = Load(server)
    try:
        recycled = wait_until(
            lambda: events_of(server, catalog.RECYCLE_SCHEDULE), timeout=30, what="a recycle"
        )
        assert isinstance(recycled, list)
        first = recycled[0].pid
        wait_until(lambda: first not in server.worker_pids(), what="the old worker to go")
        wait_until(lambda: load.pids - {first}, what="a replacement to serve")
    finally:
        load.stop()
    assert load.failures == []
    assert at in recycled[0].message
    # Replacements started after the scheduled time: recycled once, not again.
    assert len(events_of(server, catalog.RECYCLE_SCHEDULE)) == len(recycled) <= 2


def test_without_overlap_the_old_worker_exits_before_its_replacement_starts(
    start_serve: Any,
) -> None:
    server = start_serve(
        CONFIG + 'start_mode = "always_running"\n\n[pools.web.recycling]\noverlapping = false\n'
    )
    [first] = server.worker_pids()
    load = Load(server)
    try:
        wait_until(lambda: load.count >= 20, what="load to flow")
        result = subprocess.run(
            [*POOLWARDEN, "pool", "recycle", "web", "--state-dir", str(server.state_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        wait_until(lambda: load.pids - {first}, what="the replacement to serve")
    finally:
        load.stop()
    # Requests waited in the queue while no worker ran; none failed.
    assert load.failures == []
    [exited] = [e for e in events_of(server, catalog.WORKER_EXITED) if e.pid == first]
    started = [e for e in events_of(server, catalog.WORKER_STARTED) if e.pid != first]
    assert started and all(event.seq > exited.seq for event in started)
