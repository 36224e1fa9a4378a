"""The WSGI worker's threads: a request stuck in the app does not hold up others.

One thread serves ready connections itself; when it is stuck in a request,
another takes over. These tests block requests in the app on purpose and
check that other connections are still served by the same worker.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import ServerFactory, wait_until


def test_a_blocked_request_does_not_hold_up_another_connection(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("tests.apps.wsgi_threads:app", "--threads", "4")
    started, until = tmp_path / "started", tmp_path / "until"
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(server.get, f"/hold?started={started}&until={until}")
        wait_until(started.exists, what="the first request to enter the app")
        # Served while the first request is still in the app, by the same worker:
        status, _, body = server.get(f"/touch?path={until}", timeout=5.0)
        assert (status, body) == (200, b"touched")
        assert held.result(timeout=10)[0::2] == (200, b"released")
    assert len(server.worker_pids()) == 1


def test_as_many_requests_run_at_once_as_there_are_threads(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server("tests.apps.wsgi_threads:app", "--threads", "4")
    until = tmp_path / "until"
    started = [tmp_path / f"started{index}" for index in range(4)]
    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(server.get, f"/hold?started={s}&until={until}") for s in started]
        wait_until(
            lambda: all(s.exists() for s in started), what="four requests in the app at once"
        )
        until.touch()
        assert [future.result(timeout=10)[2] for future in held] == [b"released"] * 4
