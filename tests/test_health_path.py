"""`server.health_path` with real processes: every binding answers it itself.

A master with two pools, one of which crash-loops until rapid-fail
protection disables it; the health path says 200, then 503 naming that pool,
whatever the Host, before routing, and without any worker seeing it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from poolwarden.control_client import ControlClient
from poolwarden.events import catalog
from tests.conftest import REPO, Server, events_of, one_pool_config, wait_until

TWO_POOLS = """
[server]
state_dir = "{state_dir}"
health_path = "/healthz"

[sites.main]
bindings = ["127.0.0.1:0"]
hostnames = ["app.example.test"]

[[sites.main.applications]]
path = "/"
pool = "web"

[[sites.main.applications]]
path = "/loop"
pool = "loop"

[pools.web]
app = "tests.apps.pool_apps:wsgi"
working_dir = "{repo}"
start_mode = "always_running"
env = {{ POOL_LABEL = "web" }}

[pools.loop]
app = "tests.apps.crash_loop:app"
working_dir = "{repo}"
start_mode = "always_running"
env = {{ CRASH_LOOP_FIXED = "@MARKER@" }}

[pools.loop.rapid_fail]
max_crashes = 2
"""

APP_HOST = {"Host": "app.example.test"}


def probe(
    server: Server, method: str = "GET", host: str = "app.example.test", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    return server.request(method, "/healthz", body=body, headers={"Host": host})


def health_of(server: Server) -> tuple[int, dict[str, Any]]:
    status, headers, body = probe(server)
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    return status, json.loads(body)


def test_the_health_path_is_200_then_503_naming_the_disabled_pool(
    start_serve: Any, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    fixed.touch()
    server = start_serve(TWO_POOLS.replace("@MARKER@", str(fixed)))
    server.wait_for_workers(2)
    control = ControlClient(str(server.state_dir))

    # ready: answered by the front end, although the pool at "/" would take the path
    status, headers, body = probe(server)
    assert (status, json.loads(body)) == (200, {"status": "ok", "not_ready": {}})
    assert headers["x-poolwarden-reason"] == "ready"
    assert headers["connection"] == "close"
    assert json.loads(server.get("/", headers=APP_HOST)[2])["pool"] == "web"
    status, headers, head_body = probe(server, "HEAD")
    assert (status, head_body) == (200, b"")
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"] == "application/json"
    # whatever the Host: a probe may name this host by its address, routed nowhere
    assert server.get("/", headers={"Host": "10.1.2.3"})[0] == 404
    assert health_of(server) == health_of(server) == (200, {"status": "ok", "not_ready": {}})
    assert probe(server, host="10.1.2.3")[0] == 200
    # other methods
    status, headers, body = probe(server, "POST", body=b"{}")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "method_not_allowed"

    # the loop pool breaks: its worker dies, and its replacements cannot start
    fixed.unlink()
    [worker] = control.get("/v1/workers?pool=loop")["workers"]
    os.kill(worker["pid"], signal.SIGKILL)
    wait_until(
        lambda: health_of(server)[1]["not_ready"].get("loop", {}).get("state") == "disabled",
        what="the health path to name the disabled pool",
    )
    [disabled] = events_of(server, catalog.POOL_DISABLED_RAPID_FAIL)
    status, body = health_of(server)
    assert status == 503
    assert body == {
        "status": "degraded",
        "not_ready": {
            "loop": {"state": "disabled", "reason": "pool_disabled", "event": disabled.seq}
        },
    }
    # the same reason and event as the pool's own answers, and the control API agrees
    status, headers, _ = server.get("/loop", headers=APP_HOST)
    assert (status, headers["x-poolwarden-reason"]) == (503, "pool_disabled")
    assert headers["x-poolwarden-event"] == str(disabled.seq)
    api = control.request("GET", "/v1/health")
    assert api.status == 503
    assert api.body["not_ready"] == body["not_ready"]
    assert api.body["pools"] == {"web": "started", "loop": "disabled"}
    status, headers, head_body = probe(server, "HEAD", host="10.1.2.3")
    assert (status, head_body, headers["x-poolwarden-reason"]) == (503, b"", "not_ready")
    # the web pool still serves
    assert json.loads(server.get("/", headers=APP_HOST)[2])["pool"] == "web"

    # in the front-end log with the requests answered there, never in the access log
    server.wait_for_stdout(r'"GET / HTTP/1\.1" 200')
    assert "/healthz" not in server.stdout()
    lines = (server.state_dir / "frontend.log").read_text().splitlines()
    health_lines = [line.split()[-6:] for line in lines if "/healthz" in line]
    # date and time are two fields, as the #Fields line says
    assert lines[0].startswith("#Fields: date time c-ip")
    for line in lines[1:]:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S.*", line), line
    assert ["app.example.test", "GET", "/healthz", "200", "ready", "-"] in health_lines
    assert ["10.1.2.3", "GET", "/healthz", "200", "ready", "-"] in health_lines
    assert ["app.example.test", "POST", "/healthz", "405", "method_not_allowed", "-"] in (
        health_lines
    )
    assert ["10.1.2.3", "HEAD", "/healthz", "503", "not_ready", "-"] in health_lines


TCP_LEVEL = one_pool_config(
    "loop",
    "tests.apps.crash_loop:app",
    'start_mode = "always_running"\nenv = {{ CRASH_LOOP_FIXED = "/nonexistent" }}\n\n'
    '[pools.loop.rapid_fail]\nmax_crashes = 1\nload_balancer_capability = "tcp_level"\n',
).replace("[sites.main]", 'health_path = "/healthz"\n\n[sites.main]')


def test_a_disabled_tcp_level_pool_resets_its_requests_but_the_health_path_answers(
    start_serve: Any,
) -> None:
    server = start_serve(TCP_LEVEL)
    control = ControlClient(str(server.state_dir))
    wait_until(lambda: control.get("/v1/pools/loop")["state"] == "disabled", what="disabled")
    [disabled] = events_of(server, catalog.POOL_DISABLED_RAPID_FAIL)
    status, body = health_of(server)
    assert (status, body) == (
        503,
        {
            "status": "degraded",
            "not_ready": {
                "loop": {
                    "state": "disabled",
                    "reason": "pool_disabled_reset",
                    "event": disabled.seq,
                }
            },
        },
    )
    # the pool's own requests: reset, no HTTP answer
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        server.get("/")


@pytest.mark.parametrize("app", ["tests.apps.pool_apps:wsgi", "tests.apps.pool_apps:asgi"])
def test_a_reload_turns_the_health_path_on_and_off_in_the_front_end_and_the_workers(
    start_serve: Any, app: str
) -> None:
    without = one_pool_config("web", app, 'start_mode = "always_running"')
    server = start_serve(without)
    [pid] = server.wait_for_workers(1)
    control = ControlClient(str(server.state_dir))
    config_path: Path = server.extra["config_path"]

    def reload(text: str) -> None:
        config_path.write_text(text.format(state_dir=server.state_dir, repo=REPO))
        control.post("/v1/config/reload")

    def answers(connection: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, Any]]:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    def app_answer(path: str) -> bool:
        status, _, body = server.get(path)
        return status == 200 and json.loads(body)["pid"] == pid

    # without health_path the path is the app's
    assert app_answer("/healthz")

    reload(without.replace("[sites.main]", 'health_path = "/healthz"\n\n[sites.main]'))
    assert health_of(server) == (200, {"status": "ok", "not_ready": {}})
    # a keep-alive connection the worker holds: it hands the health path back
    connection = server.http()
    try:
        status, first = answers(connection, "/")
        assert (status, first["pid"]) == (200, pid)
        assert answers(connection, "/healthz") == (200, {"status": "ok", "not_ready": {}})
    finally:
        connection.close()
    assert server.worker_pids() == [pid]  # the pool itself was not touched

    reload(without)
    assert app_answer("/healthz")
    connection = server.http()
    try:
        assert answers(connection, "/")[1]["pid"] == pid
        status, second = answers(connection, "/healthz")
        assert (status, second["pid"]) == (200, pid)
    finally:
        connection.close()
