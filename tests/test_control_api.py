"""The control API: a real server on a real Unix socket, a fake master behind it.

The server runs on its own event loop (uvloop, as in the master) in a
background thread; the tests talk to it from the test thread with the real
client or raw bytes. Every answer that goes through `call` is validated
against `docs/openapi.json`, so the document cannot drift from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from poolwarden.config import ConfigError, ConfigIssue, load_config
from poolwarden.control_client import (
    ControlClient,
    ControlConnectionError,
    ControlError,
    ControlResponse,
    ServerNotRunning,
)
from poolwarden.master.control import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    ROUTES,
    SOCKET_MODE,
    ControlServer,
    ControlSocketError,
    ControlSocketInUse,
    socket_path,
    start_control_server,
)
from poolwarden.master.health import PoolFacts, judge
from poolwarden.master.pool import PoolState

REPO = Path(__file__).resolve().parent.parent
OPENAPI = json.loads((REPO / "docs" / "openapi.json").read_text())
DEADLINE = 10.0


# --- the fake master ---------------------------------------------------------------


def pool_dict(name: str, state: str = "started", reason: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "reason": reason,
        "app": f"examples.{name}:app",
        "workers": 2 if state == "started" else 0,
        "queue": 0,
        "requests_served": 1234,
        "last_event": None if state == "started" else "5002 pool disabled by rapid-fail protection",
    }


def worker_stack_dict(pid: int, pool: str) -> dict[str, Any]:
    """A WSGI worker's answer to `/v1/workers/{pid}/stack`: one thread serving a request."""
    frame = {"filename": "/srv/app.py", "lineno": 12, "name": "view", "line": "db.query()"}
    return {
        "pid": pid,
        "pool": pool,
        "interface": "wsgi",
        "via": "signal",
        "threads": [
            {
                "ident": 0x7F00AA,
                "current": False,
                "frames": [frame],
                "request": {
                    "method": "GET",
                    "path": "/slow",
                    "client": "127.0.0.1:50000",
                    "elapsed": 7.5,
                    "response_started": False,
                },
            },
            {"ident": 0x7F00BB, "current": True, "frames": [], "request": None},
        ],
        "tasks": None,
        "tasks_note": None,
        "text": "Thread 0x7f00aa serving GET /slow from 127.0.0.1:50000 for 7.5s:\n",
    }


class FakeTarget:
    """A master as the control API sees it; tests set its state and read its calls."""

    def __init__(self) -> None:
        self.pid = 4242
        self.pool_table: dict[str, dict[str, Any]] = {
            "web": pool_dict("web"),
            "api": pool_dict("api", "disabled", "rapid_fail"),
        }
        self.draining = False
        self.config_doc: dict[str, Any] | None = load_config(
            REPO / "examples" / "config" / "demo.toml"
        ).to_dict()
        self.reload_error: Exception | None = None
        self.failing: set[str] = set()
        """Method names that raise RuntimeError("boom")."""
        self.calls: list[tuple[Any, ...]] = []
        self.worker_rows = [
            {
                "pid": 101,
                "pool": "web",
                "state": "ready",
                "started_at": 1_700_000_000.0,
                "uptime": 3725.5,
                "requests_served": 600,
                "active_requests": 1,
                "rss": 47_400_000,
                "cpu_percent": 3.25,
            },
            {
                "pid": 102,
                "pool": "web",
                "state": "retiring",
                "started_at": 1_700_000_100.0,
                "uptime": 12.0,
                "requests_served": 0,
                "active_requests": 0,
                "rss": None,
                "cpu_percent": None,
            },
        ]
        self.request_rows = [
            {
                "pid": 101,
                "pool": "web",
                "method": "GET",
                "path": "/slow?x=1",
                "client": "127.0.0.1:50000",
                "elapsed": 7.5,
                "phase": "app",
                "status": None,
            },
            {
                "pid": 101,
                "pool": "web",
                "method": "POST",
                "path": "/upload",
                "client": None,
                "elapsed": 0.25,
                "phase": "responding",
                "status": 200,
            },
        ]

    def _maybe_fail(self, method: str) -> None:
        self.calls.append((method,))
        if method in self.failing:
            raise RuntimeError("boom")

    def server_info(self) -> dict[str, Any]:
        self._maybe_fail("server_info")
        return {
            "pid": self.pid,
            "version": "0.1.0",
            "started_at": 1_700_000_000.5,
            "state_dir": "/srv/state",
            "config_path": None if self.config_doc is None else "/srv/poolwarden.toml",
            "bindings": ["127.0.0.1:8000"],
            "draining": self.draining,
        }

    def health(self) -> dict[str, Any]:
        """The master's own judgement (`master.health.judge`) over the fake pools."""
        self._maybe_fail("health")
        facts = {
            name: PoolFacts(
                PoolState(pool["state"]),
                pool["state"],
                "pool_disabled" if pool["state"] == "disabled" else "",
                7 if pool["state"] == "disabled" else None,
            )
            for name, pool in self.pool_table.items()
        }
        return judge(facts, draining=self.draining).control_body()

    def pools(self) -> list[dict[str, Any]]:
        self._maybe_fail("pools")
        return list(self.pool_table.values())

    def pool(self, name: str) -> dict[str, Any]:
        self._maybe_fail("pool")
        return self.pool_table[name]

    async def pool_action(self, name: str, action: str) -> dict[str, Any]:
        self._maybe_fail("pool_action")
        self.calls.append(("pool_action", name, action))
        pool = self.pool_table[name]
        target = {"start": "started", "stop": "stopped", "recycle": "started"}[action]
        if action == "start" and pool["state"] == "started":
            raise ValueError(f'pool "{name}" is already started')
        if action == "recycle" and pool["state"] != "started":
            raise ValueError(f'pool "{name}" is {pool["state"]}: only a started pool recycles')
        await asyncio.sleep(0)
        self.pool_table[name] = pool_dict(name, target)
        return self.pool_table[name]

    def workers(self, pool: str | None) -> Any:
        self._maybe_fail("workers")
        self.calls.append(("workers", pool))
        if pool is not None and pool not in self.pool_table:
            raise KeyError(pool)
        return [w for w in self.worker_rows if pool is None or w["pool"] == pool]

    def requests(self, pool: str | None, min_elapsed: float) -> Any:
        self._maybe_fail("requests")
        self.calls.append(("requests", pool, min_elapsed))
        return [
            r
            for r in self.request_rows
            if (pool is None or r["pool"] == pool) and r["elapsed"] >= min_elapsed
        ]

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        self._maybe_fail("worker_stack")
        self.calls.append(("worker_stack", pid))
        row = next((w for w in self.worker_rows if w["pid"] == pid), None)
        if row is None:
            raise KeyError(pid)
        return worker_stack_dict(pid, row["pool"])

    async def pool_stack(self, name: str) -> dict[str, Any]:
        self._maybe_fail("pool_stack")
        if name not in self.pool_table:
            raise KeyError(name)
        rows = [w for w in self.worker_rows if w["pool"] == name]
        return {"pool": name, "workers": [worker_stack_dict(w["pid"], name) for w in rows]}

    def config(self) -> dict[str, Any] | None:
        self._maybe_fail("config")
        return self.config_doc

    async def reload_config(self) -> dict[str, Any]:
        self._maybe_fail("reload_config")
        if self.config_doc is None:
            raise ValueError("the server runs without a config file (poolwarden run)")
        if self.reload_error is not None:
            raise self.reload_error
        return {"added": ["api2"], "removed": [], "changed": ["web"], "unchanged": ["api"]}


# --- a server on a loop in a thread -------------------------------------------------


class LoopThread:
    """An event loop running in a daemon thread; `run` executes a coroutine on it."""

    def __init__(self, new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self.loop = new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any, timeout: float = DEADLINE) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start_server(self, path: str, target: Any) -> ControlServer:
        return self.run(start_control_server(self.loop, path, target))  # type: ignore[no-any-return]

    def close_server(self, server: ControlServer) -> None:
        async def close() -> None:
            server.close()
            await server.wait_closed()

        self.run(close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)
        self.loop.close()


@dataclass
class Running:
    loop: LoopThread
    server: ControlServer
    target: FakeTarget
    state_dir: str

    @property
    def path(self) -> str:
        return self.server.path

    def client(self, timeout: float = DEADLINE) -> ControlClient:
        return ControlClient(self.state_dir, timeout=timeout)


@contextlib.contextmanager
def running_server(
    state_dir: str,
    target: FakeTarget | None = None,
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop,
) -> Iterator[Running]:
    loop = LoopThread(new_loop)
    try:
        target = target or FakeTarget()
        server = loop.start_server(socket_path(state_dir), target)
        try:
            yield Running(loop, server, target, state_dir)
        finally:
            loop.close_server(server)
    finally:
        loop.stop()


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A state directory with a short path (Unix socket paths are short)."""
    path = tempfile.mkdtemp(prefix="pw-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(short_dir: str) -> Iterator[Running]:
    with running_server(short_dir) as server:
        yield server


# --- a small validator for the JSON Schema the document uses -------------------------


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = OPENAPI
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(
        value,
        {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}[kind],
    )


def schema_errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What is wrong with `value` under `schema` (type, properties, required,
    additionalProperties, items, enum, minimum, minLength, pattern)."""
    schema = resolve(schema)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is_type(value, kind) for kind in kinds):
            return [f"{where}: {value!r} is not of type {kinds}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        errors.append(f"{where}: {value!r} < {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [
            f"{where}: missing {name!r}" for name in schema.get("required", []) if name not in value
        ]
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], f"{where}.{name}")
            elif extra is False:
                errors.append(f"{where}: unexpected {name!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    return errors


def documented_operation(method: str, path: str) -> tuple[str, dict[str, Any]] | None:
    """The document's (template, operation) for a concrete request path."""
    segments = path.split("?")[0].rstrip("/").split("/")
    for template, operations in OPENAPI["paths"].items():
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            p == s or (p.startswith("{") and s) for p, s in zip(parts, segments, strict=True)
        ):
            operation = operations.get(method.lower())
            if operation is not None:
                return template, operation
    return None


def check_documented(method: str, path: str, response: ControlResponse) -> None:
    """The status is documented for the operation and the body fits its schema."""
    found = documented_operation(method, path)
    if found is None:
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
    else:
        template, operation = found
        documented = operation["responses"]
        assert str(response.status) in documented, (
            f"{method} {template} answered {response.status}, not documented"
        )
        answer = resolve(documented[str(response.status)])
        schema = answer["content"]["application/json"]["schema"]
    errors = schema_errors(response.body, schema)
    assert not errors, f"{method} {path} → {response.status}: {errors}"


def call(running: Running, method: str, path: str) -> ControlResponse:
    """One request with the real client; the answer is checked against the document."""
    response = running.client().request(method, path)
    assert response.headers["content-type"] == "application/json"
    check_documented(method, path, response)
    return response


def raw(path: str, data: bytes, timeout: float = DEADLINE) -> bytes:
    """Send bytes, read until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], Any]]:
    """(status, headers, JSON body) of each response in `data`."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers["content-length"])
        responses.append((int(lines[0].split()[1]), headers, json.loads(rest[:length])))
        data = rest[length:]
    return responses


# --- the document and the route table ----------------------------------------------


def test_openapi_documents_exactly_the_routes() -> None:
    documented = {
        (method.upper(), path)
        for path, operations in OPENAPI["paths"].items()
        for method in operations
    }
    assert documented == {(route.method, route.path) for route in ROUTES}
    assert OPENAPI["openapi"].startswith("3.1")
    for route in ROUTES:
        operation = OPENAPI["paths"][route.path][route.method.lower()]
        assert operation["operationId"] == route.operation
        assert {"200", "400", "403", "500"} <= set(operation["responses"])
        documented_query = {
            resolve(p)["name"]
            for p in operation.get("parameters", [])
            if resolve(p)["in"] == "query"
        }
        assert documented_query == set(route.query), route.path


def test_every_schema_reference_resolves() -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for reference in walk(OPENAPI):
        assert resolve({"$ref": reference})


def test_validator_catches_mistakes() -> None:
    pool = {"$ref": "#/components/schemas/Pool"}
    assert schema_errors(pool_dict("web"), pool) == []
    assert schema_errors({**pool_dict("web"), "workers": "2"}, pool)
    assert schema_errors({**pool_dict("web"), "state": "running"}, pool)
    assert schema_errors({**pool_dict("web"), "workers": True}, pool)
    missing = pool_dict("web")
    del missing["queue"]
    assert schema_errors(missing, pool) == ["$: missing 'queue'"]
    error = {"$ref": "#/components/schemas/Error"}
    assert schema_errors({"error": {"code": "not_found", "message": "x", "more": 1}}, error)


# --- every route ---------------------------------------------------------------------


@pytest.mark.parametrize("new_loop", [uvloop.new_event_loop, asyncio.new_event_loop])
def test_server_and_pools(
    short_dir: str, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with running_server(short_dir, new_loop=new_loop) as running:
        response = call(running, "GET", "/v1/server")
        assert response.status == 200
        assert response.body["pid"] == 4242
        assert response.headers["connection"] == "keep-alive"
        pools = call(running, "GET", "/v1/pools").body["pools"]
        assert [pool["name"] for pool in pools] == ["web", "api"]
        assert call(running, "GET", "/v1/pools/api").body["reason"] == "rapid_fail"
        assert call(running, "GET", "/v1/pools/w%65b/").body["name"] == "web"


def test_health_is_a_readiness_probe(running: Running) -> None:
    response = call(running, "GET", "/v1/health")
    assert (response.status, response.body["status"]) == (503, "degraded")
    assert response.body["pools"] == {"web": "started", "api": "disabled"}
    assert response.body["not_ready"] == {
        "api": {"state": "disabled", "reason": "pool_disabled", "event": 7}
    }
    running.target.pool_table["api"] = pool_dict("api")
    response = call(running, "GET", "/v1/health")
    assert (response.status, response.body["status"]) == (200, "ok")
    assert response.body["not_ready"] == {}
    running.target.draining = True
    response = call(running, "GET", "/v1/health")
    assert (response.status, response.body["status"]) == (503, "draining")


def test_unknown_pool_is_404(running: Running) -> None:
    for method, path in [
        ("GET", "/v1/pools/nope"),
        ("POST", "/v1/pools/nope/start"),
        ("POST", "/v1/pools/nope/stop"),
        ("POST", "/v1/pools/nope/recycle"),
        ("GET", "/v1/workers?pool=nope"),
    ]:
        response = call(running, method, path)
        assert response.status == 404, path
        assert response.body == {
            "error": {"code": "unknown_pool", "message": 'no pool named "nope"'}
        }


def test_stacks_of_a_worker_and_of_a_pool(running: Running) -> None:
    body = call(running, "GET", "/v1/workers/101/stack").body
    assert (body["pid"], body["pool"], body["via"]) == (101, "web", "signal")
    worker_stack = {"$ref": "#/components/schemas/WorkerStack"}
    assert schema_errors({**body, "via": "remote_exec"}, worker_stack) == []
    assert schema_errors({**body, "via": "ptrace"}, worker_stack)
    assert body["threads"][0]["request"]["path"] == "/slow"
    body = call(running, "GET", "/v1/pools/web/stack").body
    assert [worker["pid"] for worker in body["workers"]] == [101, 102]
    assert call(running, "GET", "/v1/pools/api/stack").body == {"pool": "api", "workers": []}


def test_stack_of_an_unknown_worker_or_pool_is_404(running: Running) -> None:
    response = call(running, "GET", "/v1/workers/999999999/stack")
    assert response.status == 404
    assert response.body["error"] == {
        "code": "unknown_worker",
        "message": "pid 999999999 is not a worker of this server (no such process)",
    }
    response = call(running, "GET", f"/v1/workers/{os.getpid()}/stack")
    assert response.status == 404
    assert response.body["error"]["message"] == (
        f"pid {os.getpid()} is not a worker of this server (see poolwarden wp)"
    )
    response = call(running, "GET", "/v1/pools/nope/stack")
    assert (response.status, response.body["error"]["code"]) == (404, "unknown_pool")
    for bad in ("abc", "0", "-1", "1" * 40):
        response = call(running, "GET", f"/v1/workers/{bad}/stack")
        assert (response.status, response.body["error"]["code"]) == (400, "invalid_parameter")
    assert ("worker_stack", 101) not in running.target.calls


def test_pool_actions(running: Running) -> None:
    response = call(running, "POST", "/v1/pools/web/stop")
    assert (response.status, response.body["state"]) == (200, "stopped")
    response = call(running, "POST", "/v1/pools/web/start")
    assert (response.status, response.body["state"]) == (200, "started")
    assert call(running, "POST", "/v1/pools/web/recycle").status == 200
    assert [c for c in running.target.calls if c[0] == "pool_action" and len(c) == 3] == [
        ("pool_action", "web", "stop"),
        ("pool_action", "web", "start"),
        ("pool_action", "web", "recycle"),
    ]


def test_pool_action_not_allowed_now_is_409(running: Running) -> None:
    response = call(running, "POST", "/v1/pools/web/start")
    assert response.status == 409
    assert response.body["error"] == {
        "code": "invalid_state",
        "message": 'pool "web" is already started',
    }


def test_workers(running: Running) -> None:
    response = call(running, "GET", "/v1/workers")
    assert [w["pid"] for w in response.body["workers"]] == [101, 102]
    assert call(running, "GET", "/v1/workers?pool=web").status == 200
    assert ("workers", None) in running.target.calls
    assert ("workers", "web") in running.target.calls


def test_requests_and_min_elapsed(running: Running) -> None:
    assert len(call(running, "GET", "/v1/requests").body["requests"]) == 2
    body = call(running, "GET", "/v1/requests?pool=web&min_elapsed=2.5").body
    assert [r["path"] for r in body["requests"]] == ["/slow?x=1"]
    assert ("requests", None, 0.0) in running.target.calls
    assert ("requests", "web", 2.5) in running.target.calls


@pytest.mark.parametrize(
    "query",
    ["min_elapsed=abc", "min_elapsed=-1", "min_elapsed=nan", "min_elapsed=inf", "min_elapsed="],
)
def test_requests_bad_number_is_400(running: Running, query: str) -> None:
    response = call(running, "GET", f"/v1/requests?{query}")
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_parameter"
    assert "min_elapsed" in response.body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("/v1/requests?elapsed=5", '"elapsed"'),
        ("/v1/requests?pool=a&pool=b", "twice"),
        ("/v1/workers?pool=", "empty"),
        ("/v1/pools?pool=web", "takes: none"),
    ],
)
def test_bad_query_parameters_are_400(running: Running, path: str, word: str) -> None:
    response = call(running, "GET", path)
    assert response.status == 400
    assert response.body["error"]["code"] == "invalid_parameter"
    assert word in response.body["error"]["message"]


def test_config(running: Running) -> None:
    response = call(running, "GET", "/v1/config")
    assert response.status == 200
    assert set(response.body["pools"]) == {"web", "api", "broken"}


def test_config_in_run_mode(running: Running) -> None:
    running.target.config_doc = None
    response = call(running, "GET", "/v1/config")
    assert (response.status, response.body["error"]["code"]) == (404, "no_config")
    response = call(running, "POST", "/v1/config/reload")
    assert (response.status, response.body["error"]["code"]) == (409, "no_config")
    assert "without a config file" in response.body["error"]["message"]


def test_reload(running: Running) -> None:
    response = call(running, "POST", "/v1/config/reload")
    assert response.status == 200
    assert response.body == {
        "added": ["api2"],
        "removed": [],
        "changed": ["web"],
        "unchanged": ["api"],
    }


def test_reload_of_an_invalid_file_is_422_with_every_issue(running: Running) -> None:
    running.target.reload_error = ConfigError(
        [
            ConfigIssue("pools.web.threads", "expected int >= 1, got 0"),
            ConfigIssue("sites.main.applications[0].pool", 'no pool named "wbe"'),
        ],
        "/srv/poolwarden.toml",
    )
    response = call(running, "POST", "/v1/config/reload")
    assert response.status == 422
    error = response.body["error"]
    assert error["code"] == "invalid_config"
    assert "/srv/poolwarden.toml" in error["message"]
    assert error["issues"] == [
        {"path": "pools.web.threads", "message": "expected int >= 1, got 0"},
        {"path": "sites.main.applications[0].pool", "message": 'no pool named "wbe"'},
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/pools"), ("GET", "/"), ("GET", "/v1/pools/web/extra"), ("GET", "/v1/pools//x")],
)
def test_unknown_route_is_404(running: Running, method: str, path: str) -> None:
    response = call(running, method, path)
    assert response.status == 404
    assert response.body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/v1/pools", "GET"),
        ("DELETE", "/v1/pools/web", "GET"),
        ("GET", "/v1/pools/web/start", "POST"),
        ("GET", "/v1/config/reload", "POST"),
        ("PUT", "/v1/health", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    running: Running, method: str, path: str, allow: str
) -> None:
    response = call(running, method, path)
    assert response.status == 405
    assert response.headers["allow"] == allow
    assert response.body["error"]["code"] == "method_not_allowed"


def test_a_failing_target_is_500_and_the_server_lives_on(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.target.failing = {"pools", "pool_action", "reload_config"}
    for method, path in [
        ("GET", "/v1/pools"),
        ("POST", "/v1/pools/web/stop"),
        ("POST", "/v1/config/reload"),
    ]:
        response = call(running, method, path)
        assert response.status == 500
        assert response.body == {
            "error": {"code": "internal_error", "message": "RuntimeError: boom"}
        }
    assert "GET /v1/pools failed" in caplog.text
    running.target.failing = set()
    assert call(running, "GET", "/v1/pools").status == 200


def test_an_answer_that_cannot_be_encoded_is_500(running: Running) -> None:
    running.target.worker_rows = [{"pid": object()}]
    response = call(running, "GET", "/v1/workers")
    assert response.status == 500
    assert response.body["error"]["code"] == "internal_error"


# --- HTTP ----------------------------------------------------------------------------


def test_keep_alive_and_pipelining(running: Running) -> None:
    request = b"GET /v1/pools/web HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /v1/server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    responses = split_responses(raw(running.path, request + request + last))
    assert [status for status, _, _ in responses] == [200, 200, 200]
    assert responses[0][2]["name"] == "web"
    assert responses[2][2]["pid"] == 4242
    assert [headers["connection"] for _, headers, _ in responses] == [
        "keep-alive",
        "keep-alive",
        "close",
    ]


def test_http_1_0_closes(running: Running) -> None:
    [(status, headers, _)] = split_responses(raw(running.path, b"GET /v1/health HTTP/1.0\r\n\r\n"))
    assert status == 503
    assert headers["connection"] == "close"


def test_post_with_a_small_body_is_fine(running: Running) -> None:
    data = (
        b"POST /v1/pools/web/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}"
    )
    [(status, _, body)] = split_responses(raw(running.path, data))
    assert (status, body["state"]) == (200, "stopped")


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/pools HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400, "bad_request"),
        (
            b"GET /v1/pools HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET /v1/pools HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n",
            431,
            "head_too_large",
        ),
        (
            b"POST /v1/config/reload HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + str(MAX_BODY_BYTES + 1).encode()
            + b"\r\n\r\n"
            + b"x" * (MAX_BODY_BYTES + 1),
            413,
            "body_too_large",
        ),
    ],
)
def test_malformed_requests_are_answered_and_closed(
    running: Running, data: bytes, status: int, code: str
) -> None:
    responses = split_responses(raw(running.path, data))
    assert [(s, body["error"]["code"]) for s, _, body in responses] == [(status, code)]
    assert responses[0][1]["connection"] == "close"
    check_documented("GET", "/no-route", ControlResponse(status, responses[0][2]))


def test_path_that_is_not_utf8_is_400(running: Running) -> None:
    response = call(running, "GET", "/v1/pools/%ff")
    assert (response.status, response.body["error"]["code"]) == (400, "bad_request")


def test_idle_client_does_not_block_others(running: Running) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(running.path)
        idle.sendall(b"GET /v1/po")
        assert call(running, "GET", "/v1/pools").status == 200


# --- the socket ----------------------------------------------------------------------


def test_socket_is_0600_and_removed_at_close(short_dir: str) -> None:
    path = socket_path(short_dir)
    with running_server(short_dir):
        info = os.lstat(path)
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == SOCKET_MODE
        assert os.listdir(short_dir) == ["control.sock"]  # no temporary left behind
    assert not os.path.exists(path)


def test_close_leaves_a_newer_servers_socket(short_dir: str) -> None:
    path = socket_path(short_dir)
    with running_server(short_dir) as running:
        os.unlink(path)
        replacement = socket.socket(socket.AF_UNIX)
        replacement.bind(path)
        running.server.close()
    assert os.path.exists(path)
    replacement.close()


def test_stale_socket_is_replaced(short_dir: str) -> None:
    path = socket_path(short_dir)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a server that died
    with pytest.raises(ServerNotRunning, match="connection refused: the server is gone"):
        ControlClient(short_dir).get("/v1/server")
    with running_server(short_dir) as running:
        assert stat.S_IMODE(os.lstat(path).st_mode) == SOCKET_MODE
        assert call(running, "GET", "/v1/server").status == 200


def test_live_socket_is_in_use(short_dir: str) -> None:
    with running_server(short_dir) as running:
        before = os.lstat(running.path).st_ino
        other = LoopThread(uvloop.new_event_loop)
        try:
            with pytest.raises(ControlSocketInUse) as caught:
                other.start_server(running.path, FakeTarget())
        finally:
            other.stop()
        assert caught.value.pid == 4242
        assert "another poolwarden server (pid 4242) is running in" in str(caught.value)
        assert os.lstat(running.path).st_ino == before
        assert call(running, "GET", "/v1/server").status == 200


def test_not_a_socket_is_left_alone(short_dir: str) -> None:
    path = socket_path(short_dir)
    Path(path).write_text("mine")
    loop = LoopThread(uvloop.new_event_loop)
    try:
        with pytest.raises(ControlSocketError, match="exists and is not a socket"):
            loop.start_server(path, FakeTarget())
    finally:
        loop.stop()
    assert Path(path).read_text() == "mine"


def test_missing_directory_is_a_clear_error(short_dir: str) -> None:
    loop = LoopThread(uvloop.new_event_loop)
    try:
        with pytest.raises(ControlSocketError, match="cannot create the control socket"):
            loop.start_server(os.path.join(short_dir, "nope", "control.sock"), FakeTarget())
    finally:
        loop.stop()


@pytest.mark.parametrize("length", [100, 107, 108, 200])
def test_deep_state_directory(short_dir: str, length: int) -> None:
    """A state directory deeper than a socket address holds still works
    (also when only the temporary name bound first is too long)."""
    padding = length - len(socket_path(short_dir)) - 1
    deep = os.path.join(short_dir, "d" * padding)
    os.makedirs(deep)
    assert len(socket_path(deep)) == length
    with running_server(deep) as running:
        assert stat.S_IMODE(os.lstat(socket_path(deep)).st_mode) == SOCKET_MODE
        assert call(running, "GET", "/v1/server").status == 200
        assert os.listdir(deep) == ["control.sock"]
    assert not os.path.exists(socket_path(deep))


# --- the client ----------------------------------------------------------------------


def test_client_without_server(short_dir: str) -> None:
    with pytest.raises(ServerNotRunning) as caught:
        ControlClient(short_dir).get("/v1/pools")
    assert str(caught.value) == (
        f"no poolwarden server is running in {short_dir} "
        f"(no control socket at {short_dir}/control.sock)"
    )
    with pytest.raises(ServerNotRunning, match="no control socket"):
        ControlClient(os.path.join(short_dir, "missing")).get("/v1/pools")


def test_client_raises_control_error(running: Running) -> None:
    with pytest.raises(ControlError) as caught:
        running.client().get("/v1/pools/nope")
    assert (caught.value.status, caught.value.code) == (404, "unknown_pool")
    assert str(caught.value) == 'no pool named "nope"'
    running.target.reload_error = ConfigError([ConfigIssue("pools", "no pools")])
    with pytest.raises(ControlError) as caught:
        running.client().post("/v1/config/reload")
    assert caught.value.issues == [{"path": "pools", "message": "no pools"}]


def test_client_timeout(short_dir: str) -> None:
    path = socket_path(short_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()
        with pytest.raises(ControlConnectionError, match=r"did not answer GET /v1/pools within"):
            ControlClient(short_dir, timeout=0.2).get("/v1/pools")


# --- peer credentials ----------------------------------------------------------------


def request_as(uid: int, path: str, data: bytes) -> bytes:
    """Send `data` to `path` from a child process running as `uid`; its answer."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, ask, report, exit
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write_end, raw(path, data, timeout=5.0))
        except BaseException as error:
            os.write(write_end, f"child failed: {error!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([read_end], [], [], DEADLINE)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError("the unprivileged child did not answer in time")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    return b"".join(chunks)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")
def test_peer_credentials_other_users_get_403(running: Running, caplog: Any) -> None:
    os.chmod(running.state_dir, 0o755)
    os.chmod(running.path, 0o666)  # the file mode no longer protects: the check must
    answer = request_as(65534, running.path, b"GET /v1/server HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not answer.startswith(b"child failed"), answer
    [(status, headers, body)] = split_responses(answer)
    assert status == 403
    assert headers["connection"] == "close"
    assert body["error"]["code"] == "forbidden"
    assert "root and the server's own user" in body["error"]["message"]
    check_documented("GET", "/v1/server", ControlResponse(status, body))
    assert ("server_info",) not in running.target.calls
    assert "refused pid" in caplog.text and "uid 65534" in caplog.text
    # root, the server's user, is served
    assert call(running, "GET", "/v1/server").status == 200


def test_allowed_uids(running: Running) -> None:
    assert running.server.allowed_uids == {0, os.getuid()}
