"""A pool's capacity: connections a worker has in use, counted from dispatch.

Real `poolwarden serve` masters with real workers, HTTP over loopback. A
connection counts against its worker from the moment it is handed over, not
from when its request starts, so a burst cannot overfill a worker, and what
does not fit waits in the pool's queue or gets `503 queue_full`.
"""

from __future__ import annotations

import http.client
import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from poolwarden.control_client import ControlClient
from tests.conftest import Server, one_pool_config, wait_until


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, str, bytes]:
    """One request on its own connection: (status, 503 reason, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("X-Poolwarden-Reason") or "", response.read()
    finally:
        connection.close()


def hold(tmp_path: Path, name: str) -> tuple[str, Path, Path]:
    """A `/hold` path that blocks until `until` exists, touching `started` first."""
    started, until = tmp_path / f"{name}-started", tmp_path / f"{name}-until"
    return f"/hold?started={started}&until={until}", started, until


BOUNDED_WSGI = one_pool_config(
    "bounded",
    "tests.apps.pool_apps:wsgi",
    'threads = 1\nmax_processes = 1\nqueue_length = 1\nstart_mode = "always_running"',
)


def burst_of_four(server: Server, tmp_path: Path, trial: int) -> None:
    """Four concurrent requests to a one-thread worker with a queue of one:
    one is served, one waits in the queue, two get 503 queue_full at once."""
    control = ControlClient(str(server.state_dir))
    paths = [hold(tmp_path, f"t{trial}-r{index}") for index in range(4)]
    with ThreadPoolExecutor(4) as pool:
        futures: list[Future[tuple[int, str, bytes]]] = [
            pool.submit(get, server.port, path) for path, _, _ in paths
        ]
        refused = wait_until(
            lambda: (
                [f.result() for f in futures if f.done()]
                if sum(f.done() for f in futures) >= 2
                else None
            ),
            what="two answers at once",
        )
        assert [(status, reason) for status, reason, _ in refused] == [
            (503, "queue_full"),
            (503, "queue_full"),
        ]
        # Exactly one request is in the app and one waits in the master's queue.
        assert control.get("/v1/pools/bounded")["queue"] == 1
        started = [index for index, (_, flag, _) in enumerate(paths) if flag.exists()]
        assert len(started) == 1
        waiting = [f for f in futures if not f.done()]
        assert len(waiting) == 2
        (first,) = started
        paths[first][2].touch()
        assert futures[first].result(10)[0] == 200
        # The queued one is served next, by the same worker.
        (second,) = wait_until(
            lambda: [i for i, (_, flag, _) in enumerate(paths) if i != first and flag.exists()],
            what="the queued request to start",
        )
        paths[second][2].touch()
        assert futures[second].result(10)[0] == 200


def test_the_queue_bound_holds_for_a_burst_on_a_wsgi_worker(
    start_serve: Any, tmp_path: Path
) -> None:
    server = start_serve(BOUNDED_WSGI)
    server.wait_for_workers(1)
    for trial in range(4):
        burst_of_four(server, tmp_path, trial)
    log = (server.state_dir / "frontend.log").read_text()
    assert log.count(" 503 queue_full bounded") == 8


BOUNDED_ASGI = one_pool_config(
    "bounded",
    "tests.apps.pool_apps:asgi",
    'max_concurrency = 2\nmax_processes = 1\nqueue_length = 1\nstart_mode = "always_running"',
)


def asgi_burst(server: Server, tmp_path: Path, trial: int, pool_name: str = "bounded") -> None:
    """Four concurrent requests to an ASGI worker with `max_concurrency = 2`
    and a queue of one: two run, one waits in the queue, one gets 503 at once."""
    control = ControlClient(str(server.state_dir))
    paths = [hold(tmp_path, f"t{trial}-r{index}") for index in range(4)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(get, server.port, path) for path, _, _ in paths]
        refused = wait_until(
            lambda: next((f.result() for f in futures if f.done()), None),
            what="one answer at once",
        )
        assert refused[:2] == (503, "queue_full")
        assert control.get(f"/v1/pools/{pool_name}")["queue"] == 1
        started = wait_until(
            lambda: (
                [i for i, (_, flag, _) in enumerate(paths) if flag.exists()]
                if sum(flag.exists() for _, flag, _ in paths) >= 2
                else None
            ),
            what="two requests in the app",
        )
        assert sum(f.done() for f in futures) == 1
        for index in started:
            paths[index][2].touch()
        for index in started:
            assert futures[index].result(10)[0] == 200
        # The queued one is served next.
        (queued,) = [i for i, f in enumerate(futures) if i not in started and not f.done()]
        wait_until(paths[queued][1].exists, what="the queued request to start")
        paths[queued][2].touch()
        assert futures[queued].result(10)[0] == 200


def test_max_concurrency_bounds_an_asgi_worker(start_serve: Any, tmp_path: Path) -> None:
    """Past `max_concurrency` connections in use, an ASGI worker takes no more:
    the next waits in the queue, the one after gets 503 queue_full at once."""
    server = start_serve(BOUNDED_ASGI)
    server.wait_for_workers(1)
    for trial in range(3):
        asgi_burst(server, tmp_path, trial)
    log = (server.state_dir / "frontend.log").read_text()
    assert log.count(" 503 queue_full bounded") == 3


def test_run_takes_max_concurrency_as_an_option(start_server: Any, tmp_path: Path) -> None:
    server = start_server(
        "tests.apps.pool_apps:asgi", "--max-concurrency", "2", "--queue-length", "1"
    )
    asgi_burst(server, tmp_path, 0, pool_name="default")


GARDEN = one_pool_config(
    "garden", "tests.apps.pool_apps:wsgi", "threads = 4\nmax_processes = 2\nqueue_length = 10"
)


def test_a_burst_grows_the_web_garden_and_waits_in_the_queue_not_in_a_worker(
    start_serve: Any, tmp_path: Path
) -> None:
    """Nine requests for two workers of four threads: the second worker starts
    on demand, each runs four, and the ninth waits in the master's queue
    (no request waits inside a worker whose threads are all busy)."""
    server = start_serve(GARDEN)
    assert get(server.port, "/")[0] == 200  # on demand: the first worker
    control = ControlClient(str(server.state_dir))
    paths = [hold(tmp_path, f"r{index}") for index in range(9)]
    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(get, server.port, path) for path, _, _ in paths]
        started = wait_until(
            lambda: (
                [flag for _, flag, _ in paths if flag.exists()]
                if sum(flag.exists() for _, flag, _ in paths) >= 8
                else None
            ),
            what="eight requests in the app",
        )
        wait_until(lambda: control.get("/v1/pools/garden")["queue"] == 1, what="one queued")
        assert len(started) == 8
        pids = [int(flag.read_text()) for flag in started]
        assert sorted(pids.count(pid) for pid in set(pids)) == [4, 4]
        assert len(server.worker_pids()) == 2
        rows = control.get("/v1/workers?pool=garden")["workers"]
        assert sorted((row["connections_in_use"], row["capacity"]) for row in rows) == [
            (4, 4),
            (4, 4),
        ]
        for _, _, until in paths:
            until.touch()
        answers = [future.result(20) for future in futures]
    assert [status for status, _, _ in answers] == [200] * 9
    assert {json.loads(body)["pid"] for _, _, body in answers} == set(pids)


def blocked_loop_config(keys: str) -> str:
    return one_pool_config(
        "api",
        "tests.apps.loop_apps:app",
        f"""{keys}
[pools.api.process_model]
loop_lag_warning = "300ms"
""",
    )


def test_a_worker_whose_loop_is_blocked_takes_no_connection_until_it_runs_again(
    start_serve: Any,
) -> None:
    """The only worker's loop is blocked: a new request waits in the master's
    queue, not in the worker, and is served once the loop runs again."""
    server = start_serve(blocked_loop_config('start_mode = "always_running"'))
    server.wait_for_workers(1)
    control = ControlClient(str(server.state_dir))
    pid = int(get(server.port, "/")[2])
    with ThreadPoolExecutor(2) as pool:
        blocking = pool.submit(get, server.port, "/hold?4")
        server.wait_for_stderr(rf"worker {pid}: its event loop is blocked")
        waiting = pool.submit(get, server.port, "/")
        wait_until(lambda: control.get("/v1/pools/api")["queue"] == 1, what="one queued")
        assert not blocking.done()
        assert blocking.result(20)[0] == 200
        status, _, body = waiting.result(20)
    assert (status, int(body)) == (200, pid)
    server.wait_for_stderr(rf"worker {pid}: its event loop runs again")


def test_a_blocked_loop_makes_the_web_garden_grow(start_serve: Any) -> None:
    """With room for another worker, a request that comes while the only
    worker's loop is blocked starts a second one, which serves it while the
    first is still blocked."""
    server = start_serve(blocked_loop_config("max_processes = 2"))
    first = int(get(server.port, "/")[2])  # on demand: the first worker
    with ThreadPoolExecutor(1) as pool:
        blocking = pool.submit(get, server.port, "/hold?6")
        server.wait_for_stderr(rf"worker {first}: its event loop is blocked")
        status, _, body = get(server.port, "/")
        assert status == 200 and int(body) != first
        assert not blocking.done()
        assert blocking.result(20)[0] == 200
