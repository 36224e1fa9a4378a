"""Sites and application pools from a config file: routing, queues, reloads.

Real `poolwarden serve` masters with real workers, HTTP over loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from poolwarden.control_client import ControlClient
from tests.conftest import Server, one_pool_config, wait_until

APPS = """
[pools.web]
app = "tests.apps.pool_apps:wsgi"
working_dir = "{repo}"
env = {{ POOL_LABEL = "web" }}

[pools.api]
app = "tests.apps.pool_apps:asgi"
working_dir = "{repo}"
env = {{ POOL_LABEL = "api" }}

[pools.wild]
app = "tests.apps.pool_apps:wsgi"
working_dir = "{repo}"
env = {{ POOL_LABEL = "wild" }}
"""

SITES = """
[server]
state_dir = "{state_dir}"

[sites.main]
bindings = ["127.0.0.1:0"]
hostnames = ["example.test"]

[[sites.main.applications]]
path = "/"
pool = "web"

[[sites.main.applications]]
path = "/api"
pool = "api"

[sites.wild]
bindings = ["127.0.0.1:0"]
hostnames = ["*.example.test"]

[[sites.wild.applications]]
path = "/"
pool = "wild"

[sites.other]
bindings = ["127.0.0.2:0"]

[[sites.other.applications]]
path = "/only"
pool = "web"
"""


def fetch(
    host: str, port: int, path: str, host_header: str, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host_header})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answer(server: Server, path: str, host: str = "example.test") -> dict[str, Any]:
    status, _, body = fetch("127.0.0.1", server.port, path, host)
    assert status == 200, (status, body)
    result: dict[str, Any] = json.loads(body)
    return result


def test_routing_by_binding_host_and_path(start_serve: Any) -> None:
    server = start_serve(SITES + APPS, listeners=2)
    first, second = server.extra["ports"]
    cases = [
        ("example.test", "/", "web", "", "/"),
        ("EXAMPLE.test:80", "/x/y", "web", "", "/x/y"),
        ("example.test", "/apix", "web", "", "/apix"),
        ("a.example.test", "/api/z", "wild", "", "/api/z"),
        ("b.c.example.test", "/", "wild", "", "/"),
    ]
    for host, path, pool, script_name, path_info in cases:
        got = answer(server, path, host)
        assert (got["pool"], got["script_name"], got["path_info"]) == (pool, script_name, path_info)
    # /api belongs to the ASGI pool: root_path is the mount path, path is whole
    for path in ("/api", "/api/", "/api/v1/items"):
        got = answer(server, path)
        assert (got["pool"], got["root_path"], got["path"]) == ("api", "/api", path)
    # no site for this host on the first binding: the front end answers 404
    status, headers, _ = fetch("127.0.0.1", first, "/", "elsewhere.test")
    assert (status, headers["x-poolwarden-reason"]) == (404, "no_application")
    # the second binding's only site takes any host, but only /only
    status, _, body = fetch("127.0.0.2", second, "/only/here", "elsewhere.test")
    assert status == 200
    assert json.loads(body)["script_name"] == "/only"
    assert json.loads(body)["path_info"] == "/here"
    status, headers, _ = fetch("127.0.0.2", second, "/", "example.test")
    assert (status, headers["x-poolwarden-reason"]) == (404, "no_application")
    log = (server.state_dir / "frontend.log").read_text()
    assert " elsewhere.test GET / 404 no_application " in log


def test_each_pool_has_its_own_processes_and_environment(start_serve: Any) -> None:
    server = start_serve(SITES + APPS, listeners=2)
    web = answer(server, "/")
    wild = answer(server, "/", "a.example.test")
    api = answer(server, "/api")
    assert (web["pool"], wild["pool"], api["pool"]) == ("web", "wild", "api")
    assert len({web["pid"], wild["pid"], api["pid"]}) == 3


def test_on_demand_pool_starts_its_worker_on_the_first_request(start_serve: Any) -> None:
    server = start_serve(SITES + APPS, listeners=2)
    assert server.worker_pids() == []
    pid = answer(server, "/")["pid"]
    assert server.worker_pids() == [pid]


def test_always_running_pool_starts_with_the_server(start_serve: Any) -> None:
    config = (SITES + APPS).replace(
        'env = {{ POOL_LABEL = "web" }}',
        'env = {{ POOL_LABEL = "web" }}\nstart_mode = "always_running"\nmax_processes = 2',
    )
    server = start_serve(config, listeners=2)
    server.wait_for_workers(2)
    pids = {answer(server, "/")["pid"] for _ in range(20)}
    assert pids <= set(server.worker_pids())


QUEUE = one_pool_config(
    "busy",
    "tests.apps.pool_apps:wsgi",
    'threads = 1\nqueue_length = 1\nstart_mode = "always_running"',
)


def test_queue_full_is_answered_503_with_the_reason(start_serve: Any, tmp_path: Path) -> None:
    server = start_serve(QUEUE)
    server.wait_for_workers(1)
    control = ControlClient(str(server.state_dir))
    started, until = tmp_path / "started", tmp_path / "until"
    hold = f"/hold?started={started}&until={until}"
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(server.get, hold)
        wait_until(started.exists, what="the only thread to be busy")
        queued = pool.submit(server.get, "/queued")
        wait_until(lambda: control.get("/v1/pools/busy")["queue"] == 1, what="one queued")
        status, headers, body = server.get("/third")
        assert (status, headers["x-poolwarden-reason"]) == (503, "queue_full")
        assert headers["retry-after"] == "5"
        assert b"queue of pool 'busy' is full" in body
        assert not queued.done()
        until.touch()
        assert busy.result(10)[0] == 200
        assert queued.result(10)[0] == 200
    log = (server.state_dir / "frontend.log").read_text()
    assert " GET /third 503 queue_full busy" in log


def test_stop_answers_503_pool_stopped_at_once_and_start_resumes(start_serve: Any) -> None:
    server = start_serve(QUEUE)
    server.wait_for_workers(1)
    control = ControlClient(str(server.state_dir))
    assert server.get("/")[0] == 200
    control.post("/v1/pools/busy/stop")
    stopped_at = time.monotonic()
    status, headers, body = server.get("/")
    assert time.monotonic() - stopped_at < 1.0
    assert (status, headers["x-poolwarden-reason"]) == (503, "pool_stopped")
    assert b"stopped by an administrator" in body
    wait_until(lambda: control.get("/v1/pools/busy")["state"] == "stopped", what="stopped")
    assert server.worker_pids() == []
    control.post("/v1/pools/busy/start")
    server.wait_for_workers(1, exclude=set())
    assert server.get("/")[0] == 200
    log = (server.state_dir / "frontend.log").read_text()
    assert " GET / 503 pool_stopped busy" in log


def test_recycle_under_load_fails_no_request(start_serve: Any) -> None:
    config = QUEUE.replace("threads = 1", "threads = 4").replace("queue_length = 1", "")
    server = start_serve(config)
    before = server.wait_for_workers(1)
    control = ControlClient(str(server.state_dir))
    failures: list[object] = []
    stop = threading.Event()

    def load() -> int:
        count = 0
        while not stop.is_set() and count < 5000:
            try:
                status, _, _ = server.get("/")
                if status != 200:
                    failures.append(status)
            except OSError as error:
                failures.append(error)
            count += 1
        return count

    with ThreadPoolExecutor(3) as pool:
        loads = [pool.submit(load) for _ in range(3)]
        wait_until(lambda: server.stdout().count('"GET / ') > 20, what="load to be running")
        control.post("/v1/pools/busy/recycle")
        wait_until(
            lambda: (
                {w["pid"] for w in control.get("/v1/workers")["workers"]} - set(before)
                and not set(before) & set(server.worker_pids())
            ),
            what="the old worker to be replaced and gone",
        )
        served_after = server.stdout().count('"GET / ')
        wait_until(lambda: server.stdout().count('"GET / ') > served_after + 20, what="more load")
        stop.set()
        total = sum(future.result(30) for future in loads)
    assert failures == []
    assert total > 40


def test_a_second_server_on_the_same_state_directory_is_refused(start_serve: Any) -> None:
    server = start_serve(QUEUE)
    path: Path = server.extra["config_path"]
    second = subprocess.run(
        [sys.executable, "-m", "poolwarden", "serve", "-c", str(path)],
        cwd=Path.cwd(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "another poolwarden server" in second.stderr
    assert server.get("/")[0] == 200


def reload(server: Server, config: str) -> None:
    path: Path = server.extra["config_path"]
    path.write_text(config.format(state_dir=server.state_dir, repo=Path.cwd()))
    count = server.stderr().count("config reload")
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: server.stderr().count("config reload") > count, what="the reload to be logged"
    )


def test_a_broken_file_is_refused_and_the_server_keeps_serving(start_serve: Any) -> None:
    server = start_serve(SITES + APPS, listeners=2)
    before = answer(server, "/")
    reload(server, (SITES + APPS).replace("threads", "x").replace('pool = "api"', 'pool = "apii"'))
    stderr = server.stderr()
    assert "config reload refused" in stderr
    assert 'sites.main.applications[1].pool: no pool named "apii"' in stderr
    after = answer(server, "/")
    assert after["pid"] == before["pid"]
    assert answer(server, "/api")["pool"] == "api"


def test_reload_changes_adds_and_removes_pools_without_failing_a_request(
    start_serve: Any,
) -> None:
    server = start_serve(SITES + APPS, listeners=2)
    web_before = answer(server, "/")
    wild_before = answer(server, "/", "a.example.test")
    failures: list[object] = []
    stop = threading.Event()

    def load() -> int:
        count = 0
        while not stop.is_set() and count < 5000:
            try:
                status, _, _ = fetch("127.0.0.1", server.port, "/", "example.test")
                if status != 200:
                    failures.append(status)
            except OSError as error:
                failures.append(error)
            count += 1
        return count

    new_config = SITES.replace('pool = "wild"', 'pool = "fresh"') + APPS.replace(
        'POOL_LABEL = "web"', 'POOL_LABEL = "web2"'
    ).replace("[pools.wild]", "[pools.fresh]").replace(
        'POOL_LABEL = "wild"', 'POOL_LABEL = "fresh"'
    )
    with ThreadPoolExecutor(2) as pool:
        loads = [pool.submit(load) for _ in range(2)]
        wait_until(lambda: server.stdout().count('"GET / ') > 20, what="load to be running")
        reload(server, new_config)
        wait_until(
            lambda: answer(server, "/")["pool"] == "web2", what="the recycled pool to answer"
        )
        stop.set()
        total = sum(future.result(30) for future in loads)
    assert failures == []
    assert total > 0
    web_after = answer(server, "/")
    assert web_after["pid"] != web_before["pid"]
    assert answer(server, "/", "a.example.test")["pool"] == "fresh"
    wait_until(
        lambda: (
            not psutil.pid_exists(wild_before["pid"])
            or psutil.Process(wild_before["pid"]).status() == psutil.STATUS_ZOMBIE
        ),
        what="the removed pool's worker to exit",
    )
    assert "config reloaded: pools added ['fresh'], removed ['wild'], changed ['web']" in (
        server.stderr()
    )


def test_keep_alive_requests_for_another_pool_are_handed_back(start_serve: Any) -> None:
    config = (SITES + APPS).replace(
        """[[sites.main.applications]]
path = "/api"
pool = "api"
""",
        """[[sites.main.applications]]
path = "/api"
pool = "api"

[[sites.main.applications]]
path = "/static"
pool = "web"
""",
    )
    server = start_serve(config, listeners=2)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        seen = []
        first_socket = None
        for method, path, body in [
            ("GET", "/", None),
            ("GET", "/api/a", None),  # WSGI worker hands it to the ASGI pool
            ("POST", "/api/b", b"x" * 100_000),
            ("GET", "/static/c", None),  # ASGI worker hands it back; new mount
            ("GET", "/d", None),  # same pool, the mount path changes back
            ("POST", "/e", b"y" * 1000),
        ]:
            conn.request(method, path, body=body, headers={"Host": "example.test"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            got = json.loads(response.read())
            if first_socket is None:
                first_socket = conn.sock
            assert conn.sock is first_socket, "the client had to reconnect"
            seen.append((got["pool"], got.get("script_name", got.get("root_path"))))
    finally:
        conn.close()
    assert seen == [
        ("web", ""),
        ("api", "/api"),
        ("api", "/api"),
        ("web", "/static"),
        ("web", ""),
        ("web", ""),
    ]


def other_interpreter() -> str | None:
    """A Python of this version other than the one running the tests (the
    system's, say), able to import poolwarden's dependencies from this venv."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for directory in ("/usr/bin", "/usr/local/bin"):
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate) and os.path.realpath(candidate) != os.path.realpath(
            sys.executable
        ):
            return candidate
    return None


OTHER_PYTHON = other_interpreter()
SITE_PACKAGES = sysconfig.get_paths()["purelib"]


def interpreter_usable(user: str | None = None) -> bool:
    """Whether OTHER_PYTHON (as `user`) imports poolwarden and its dependencies."""
    if OTHER_PYTHON is None or (user is not None and os.geteuid() != 0):
        return False
    try:
        probe = subprocess.run(
            [OTHER_PYTHON, "-c", "import poolwarden.worker.bootstrap, httptools, msgspec"],
            user=user,
            cwd="/",
            env={"PYTHONPATH": f"{Path.cwd() / 'src'}:{SITE_PACKAGES}"},
            capture_output=True,
            check=False,
        )
    except PermissionError:
        return False
    return probe.returncode == 0


OTHER_POOL = """
[pools.other]
app = "tests.apps.pool_apps:{app}"
working_dir = "{{repo}}"
python = "{python}"
env = {{{{ PYTHONPATH = "{{repo}}/src:{site}" }}}}
start_mode = "always_running"
{extra}
"""


def other_pool_config(app: str, extra: str = "") -> str:
    return QUEUE.replace('pool = "busy"', 'pool = "other"') + OTHER_POOL.format(
        app=app, python=OTHER_PYTHON, site=SITE_PACKAGES, extra=extra
    )


@pytest.mark.skipif(not interpreter_usable(), reason="no second Python of this version")
def test_a_pool_runs_its_own_interpreter(start_serve: Any) -> None:
    server = start_serve(other_pool_config("interpreter"))
    server.wait_for_workers(2)
    status, _, body = server.get("/")
    assert status == 200
    assert json.loads(body)["executable"] == OTHER_PYTHON


@pytest.mark.skipif(
    not interpreter_usable("nobody"), reason="needs root, and a Python the user nobody can run"
)
def test_workers_run_as_the_pool_user(start_serve: Any) -> None:
    nobody = pwd.getpwnam("nobody")
    extra = f'user = "nobody"\ngroup = {nobody.pw_gid}'
    server = start_serve(other_pool_config("whoami", extra))
    server.wait_for_workers(2)
    status, _, body = server.get("/")
    assert status == 200
    assert json.loads(body) == {"uid": nobody.pw_uid, "gid": nobody.pw_gid}
