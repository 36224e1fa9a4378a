"""`poolwarden stack` against real servers: a request stuck in Python, a worker
spinning in C holding the GIL, an ASGI worker's tasks and its blocked loop.

The command runs in click's CliRunner and talks to the real master over its
control socket. Requests that never end are sent from daemon threads; the
pools' shut-down time limit is 1 s, so the fixtures stop the servers quickly.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from poolwarden.cli.admin import register
from poolwarden.cli.admin_format import format_native, format_stacks, format_worker_stack
from poolwarden.cli.py_spy import PY_SPY_INSTALL, native_stack
from poolwarden.master.remote_exec import decide, read_facts
from poolwarden.stacks import (
    TASKS_BLOCKED_NOTE,
    RequestInfo,
    StackFrame,
    ThreadStack,
    render_threads,
)
from tests.conftest import Server, one_pool_config, wait_until
from tests.test_control_api import schema_errors

WORKER_STACK = {"$ref": "#/components/schemas/WorkerStack"}
POOL_STACK = {"$ref": "#/components/schemas/PoolStack"}

WSGI = "tests.apps.slow_apps:app"
ASGI = "tests.apps.slow_apps:asgi_app"
CLEAN_ENV = {"POOLWARDEN_CONFIG": None, "POOLWARDEN_STATE_DIR": None, "COLUMNS": "200"}
ANSWER_WITHIN = 3.0
"""The server answers within 2 s; 1 s more for a slow CI machine."""


def _config(app: str) -> str:
    return one_pool_config(
        "slow",
        app,
        """start_mode = "always_running"
threads = 2
[pools.slow.process_model]
shutdown_time_limit = "1s"
""",
    )


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("poolwarden")
    register(group)
    return group


def stack(
    cli: click.Group, server: Server, *args: str, env: dict[str, Any] | None = None
) -> Result:
    return CliRunner().invoke(
        cli,
        ["stack", *args, "--state-dir", str(server.state_dir)],
        env={**CLEAN_ENV, **(env or {})},
    )


def in_flight(cli: click.Group, server: Server, path: str) -> dict[str, Any]:
    """Wait until `poolwarden requests` shows a request for `path`."""

    def found() -> dict[str, Any] | None:
        result = CliRunner().invoke(
            cli, ["requests", "--json", "--state-dir", str(server.state_dir)], env=CLEAN_ENV
        )
        assert result.exit_code == 0, result.output
        rows = [row for row in json.loads(result.stdout)["requests"] if row["path"] == path]
        return rows[0] if rows else None

    row = wait_until(found, what=f"{path} in flight")
    assert isinstance(row, dict)
    return row


def send_in_background(server: Server, path: str) -> threading.Thread:
    """A request that takes as long as the app lets it (it ends when the server stops)."""

    def send() -> None:
        try:
            server.get(path, timeout=120)
        except OSError:
            pass

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def start(start_serve: Any, app: str) -> tuple[Server, int]:
    server = start_serve(_config(app))
    [pid] = server.wait_for_workers(1)
    return server, pid


# --- WSGI -------------------------------------------------------------------------


def test_a_stuck_request_shows_in_its_threads_stack(start_serve: Any, cli: click.Group) -> None:
    server, pid = start(start_serve, WSGI)
    send_in_background(server, "/stuck")
    request = in_flight(cli, server, "/stuck")
    assert request["pid"] == pid

    result = stack(cli, server, str(pid))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"==> pool slow, worker {pid} (wsgi) <==\n")
    assert "wait_for_the_database" in out
    assert "    _FOREVER.wait(seconds)" in out
    # The thread is titled with its request, and its frames follow oldest first.
    title = next(line for line in out.splitlines() if "serving GET /stuck" in line)
    assert title.startswith("Thread 0x")
    assert f"from {request['client']} for " in title
    block = out.split(title, 1)[1].split("\n\n", 1)[0]
    assert block.index("in app") < block.index("in wait_for_the_database")

    by_pool = stack(cli, server, "slow")
    assert by_pool.exit_code == 0, by_pool.output
    assert f"==> pool slow, worker {pid} (wsgi) <==" in by_pool.stdout
    assert "serving GET /stuck" in by_pool.stdout


def test_json_has_every_thread_and_the_request_it_serves(
    start_serve: Any, cli: click.Group
) -> None:
    server, pid = start(start_serve, WSGI)
    send_in_background(server, "/stuck")
    in_flight(cli, server, "/stuck")

    result = stack(cli, server, str(pid), "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {
        "pid",
        "pool",
        "interface",
        "via",
        "threads",
        "tasks",
        "tasks_note",
        "text",
    }
    assert (body["pid"], body["pool"], body["interface"]) == (pid, "slow", "wsgi")
    # Through sys.remote_exec where this interpreter and the kernel allow it
    # (tests/test_remote_exec.py), else the signal.
    assert body["via"] == ("remote_exec" if decide(read_facts(pid)).usable else "signal")
    assert schema_errors(body, WORKER_STACK) == []
    assert body["tasks"] is None and body["tasks_note"] is None
    assert "wait_for_the_database" in body["text"]
    assert len(body["threads"]) >= 3  # the main thread and two WSGI threads
    for thread in body["threads"]:
        assert (
            {"ident", "current", "frames", "request"}
            <= set(thread)
            <= {
                "ident",
                "name",
                "current",
                "frames",
                "request",
            }
        )
        assert isinstance(thread["ident"], int) and isinstance(thread["current"], bool)
        for frame in thread["frames"]:
            assert set(frame) == {"filename", "lineno", "name", "line"}
    [serving] = [thread for thread in body["threads"] if thread["request"]]
    assert set(serving["request"]) == {"method", "path", "client", "elapsed", "response_started"}
    assert serving["request"]["method"] == "GET"
    assert serving["request"]["path"] == "/stuck"
    assert serving["request"]["response_started"] is False
    innermost = [frame["name"] for frame in serving["frames"]]
    assert innermost.index("wait_for_the_database") < innermost.index("app")  # most recent first
    line = next(f for f in serving["frames"] if f["name"] == "wait_for_the_database")["line"]
    assert line == "_FOREVER.wait(seconds)"

    by_pool = json.loads(stack(cli, server, "slow", "--json").stdout)
    assert schema_errors(by_pool, POOL_STACK) == []
    assert by_pool["pool"] == "slow"
    assert [worker["pid"] for worker in by_pool["workers"]] == [pid]


def test_a_worker_spinning_in_c_holding_the_gil_answers_within_2s(
    start_serve: Any, cli: click.Group
) -> None:
    server, pid = start(start_serve, WSGI)
    send_in_background(server, "/spin")
    in_flight(cli, server, "/spin")

    def spinning() -> str | None:
        started = time.monotonic()
        result = stack(cli, server, str(pid))
        took = time.monotonic() - started
        assert result.exit_code == 0, result.output
        assert took < ANSWER_WITHIN, f"stack took {took:.2f}s"
        return result.stdout if "spin_in_c_holding_the_gil" in result.stdout else None

    out = wait_until(spinning, what="the spinning frame")
    assert isinstance(out, str)
    assert "serving GET /spin" in out


# --- ASGI -------------------------------------------------------------------------


def test_an_asgi_worker_shows_its_pending_tasks(start_serve: Any, cli: click.Group) -> None:
    server, pid = start(start_serve, ASGI)
    send_in_background(server, "/stuck")
    in_flight(cli, server, "/stuck")

    def suspended() -> dict[str, Any] | None:
        result = stack(cli, server, str(pid), "--json")
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout)
        tasks = body["tasks"] or []
        serving = [t for t in tasks if t["request"] and t["request"]["path"] == "/stuck"]
        if serving and any(f["name"] == "wait_for_the_queue" for f in serving[0]["frames"]):
            return body
        return None

    body = wait_until(suspended, what="the task of GET /stuck in wait_for_the_queue")
    assert isinstance(body, dict)
    assert schema_errors(body, WORKER_STACK) == []
    assert body["interface"] == "asgi"
    assert body["tasks_note"] is None
    [task] = [t for t in body["tasks"] if t["request"]]
    assert task["request"]["method"] == "GET"
    assert set(task) == {"name", "frames", "request"}
    assert "serving GET /stuck" in body["text"]
    assert "wait_for_the_queue" in body["text"]

    out = stack(cli, server, str(pid)).stdout
    assert "pending task" in out
    assert "serving GET /stuck" in out


def test_a_blocked_loop_has_no_tasks_and_its_thread_shows_why(
    start_serve: Any, cli: click.Group
) -> None:
    server, pid = start(start_serve, ASGI)
    send_in_background(server, "/block")
    in_flight(cli, server, "/block")
    # The loop is blocked for 1.5 s from a moment after the request shows:
    # taken in that time, the stack has no tasks and the loop's thread is in
    # block_the_loop. (If the loop had not yet entered it, the next look does.)
    started = time.monotonic()
    result = stack(cli, server, str(pid), "--json")
    assert time.monotonic() - started < ANSWER_WITHIN
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    if body["tasks"] is not None:  # pragma: no cover - the request had not reached the app
        body = json.loads(stack(cli, server, str(pid), "--json").stdout)
    assert schema_errors(body, WORKER_STACK) == []
    assert body["tasks"] is None
    assert body["tasks_note"] == TASKS_BLOCKED_NOTE
    names = [frame["name"] for thread in body["threads"] for frame in thread["frames"]]
    assert "block_the_loop" in names
    assert "time.sleep(1.5)" in body["text"]
    assert f"No tasks: {TASKS_BLOCKED_NOTE}." in body["text"]


# --- errors and --native ----------------------------------------------------------


def test_an_unknown_pid_or_pool_is_exit_1_with_a_clear_message(
    start_serve: Any, cli: click.Group
) -> None:
    server, _ = start(start_serve, WSGI)
    result = stack(cli, server, str(os.getpid()))
    assert result.exit_code == 1
    assert result.stderr == (
        f"poolwarden: pid {os.getpid()} is not a worker of this server (see poolwarden wp)\n"
    )
    result = stack(cli, server, "nope")
    assert result.exit_code == 1
    assert result.stderr == 'poolwarden: no pool named "nope"\n'


def test_the_server_not_running_is_exit_1(cli: click.Group, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["stack", "123", "--state-dir", str(tmp_path)], env=CLEAN_ENV)
    assert result.exit_code == 1
    assert "no poolwarden server is running" in result.stderr


def test_native_without_py_spy_says_how_to_get_it(
    start_serve: Any, cli: click.Group, tmp_path: Path
) -> None:
    server, pid = start(start_serve, WSGI)
    empty = tmp_path / "bin"
    empty.mkdir()
    result = stack(cli, server, str(pid), "--native", env={"PATH": str(empty)})
    assert result.exit_code == 0, result.output
    assert f"==> pool slow, worker {pid} (wsgi) <==" in result.stdout
    assert "Thread 0x" in result.stdout
    assert f"`{PY_SPY_INSTALL}`" in result.stdout
    body = json.loads(
        stack(cli, server, "slow", "--native", "--json", env={"PATH": str(empty)}).stdout
    )
    [worker] = body["workers"]
    assert worker["native"]["command"] is None
    assert PY_SPY_INSTALL in worker["native"]["hint"]


def _fake_py_spy(directory: Path, script: str) -> None:
    """An executable `py-spy` in `directory`: a fake that behaves as `script` says."""
    directory.mkdir()
    path = directory / "py-spy"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_native_prints_what_py_spy_printed(
    start_serve: Any, cli: click.Group, tmp_path: Path
) -> None:
    server, pid = start(start_serve, WSGI)
    _fake_py_spy(tmp_path / "bin", 'echo "Thread 1 (idle): MainThread $*"')
    result = stack(cli, server, str(pid), "--native", env={"PATH": str(tmp_path / "bin")})
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Native stacks (py-spy dump --native --pid {pid}):\n" in out
    assert f"Thread 1 (idle): MainThread dump --native --pid {pid}\n" in out
    assert out.index("Thread 0x") < out.index("Native stacks")


def test_native_failure_prints_py_spys_error_and_the_ptrace_hint(
    start_serve: Any, cli: click.Group, tmp_path: Path
) -> None:
    server, pid = start(start_serve, WSGI)
    _fake_py_spy(tmp_path / "bin", "echo 'Permission Denied: Try running again' >&2; exit 1")
    result = stack(cli, server, str(pid), "--native", env={"PATH": str(tmp_path / "bin")})
    assert result.exit_code == 0, result.output
    assert (
        f"Native stacks (py-spy dump --native --pid {pid}) failed: "
        "Permission Denied: Try running again\n"
    ) in result.stdout
    assert "kernel.yama.ptrace_scope" in result.stdout
    assert "Thread 0x" in result.stdout


# --- formatting (pure) ------------------------------------------------------------


def test_format_a_pool_without_workers() -> None:
    assert format_stacks([], "web") == "no worker processes in pool web\n"


def test_format_workers_are_a_blank_line_apart() -> None:
    workers = [
        {"pid": 1, "pool": "web", "interface": "wsgi", "text": "Thread 0x1:\n"},
        {"pid": 2, "pool": "web", "interface": None, "text": "Thread 0x2:\n"},
    ]
    assert format_stacks(workers) == (
        "==> pool web, worker 1 (wsgi) <==\nThread 0x1:\n\n"
        "==> pool web, worker 2 (not ready yet) <==\nThread 0x2:\n"
    )


def test_format_native_dumps() -> None:
    done = {"command": "py-spy dump --native --pid 7", "ok": True, "output": "Thread 7\n"}
    assert format_native(done) == "Native stacks (py-spy dump --native --pid 7):\nThread 7\n"
    failed = {**done, "ok": False, "error": "Permission Denied", "hint": "use root"}
    assert format_native(failed) == (
        "Native stacks (py-spy dump --native --pid 7) failed: Permission Denied\nhint: use root\n"
    )
    worker = {"pid": 7, "pool": "web", "interface": "wsgi", "text": "T\n", "native": done}
    assert format_worker_stack(worker).endswith(
        "T\n\nNative stacks (py-spy dump --native --pid 7):\nThread 7\n"
    )
    # Not installed: said once after every worker, not in each worker's block.
    missing = {**worker, "native": native_stack(None, 7)}
    assert "Native" not in format_worker_stack(missing)


def _thread(ident: int, *names: str, elapsed: float | None = None) -> ThreadStack:
    frames = [StackFrame("/srv/app.py", n, name) for n, name in enumerate(names, 1)]
    request = None
    if elapsed is not None:
        request = RequestInfo("GET", f"/r{ident}", "127.0.0.1:1", elapsed, False)
    return ThreadStack(ident, False, frames, request)


def test_render_puts_serving_threads_first_longest_first() -> None:
    idle, short, long = _thread(1, "wait"), _thread(2, "a", elapsed=1.0), _thread(3, "b", elapsed=9)
    titles = [line for line in render_threads([idle, short, long]).splitlines() if "0x" in line]
    assert titles == [
        "Thread 0x3 serving GET /r3 from 127.0.0.1:1 for 9.0s:",
        "Thread 0x2 serving GET /r2 from 127.0.0.1:1 for 1.0s:",
        "Thread 0x1:",
    ]


def test_render_puts_idle_threads_in_the_apps_code_before_the_others(tmp_path: Path) -> None:
    watchdog = ThreadStack(1, False, [StackFrame(threading.__file__, 320, "wait")])
    loop = ThreadStack(
        2,
        False,
        [StackFrame(str(tmp_path / "views.py"), 9, "block"), StackFrame("/srv/x.py", 1, "main")],
    )
    titles = [line for line in render_threads([watchdog, loop]).splitlines() if "0x" in line]
    assert titles == ["Thread 0x2:", "Thread 0x1:"]


def test_render_groups_idle_threads_with_the_same_stack_and_names_each() -> None:
    waiting = [_thread(ident, "run", "wait") for ident in (0xA, 0xB, 0xC)]
    other = _thread(0xD, "run", "poll")
    busy = _thread(0xE, "run", "wait", elapsed=2.0)  # same frames, but serving: its own block
    text = render_threads([waiting[0], other, waiting[1], busy, waiting[2]])
    blocks = text.strip().split("\n\n")
    assert [block.splitlines()[0] for block in blocks] == [
        "Thread 0xe serving GET /r14 from 127.0.0.1:1 for 2.0s:",
        "Threads 0xa, 0xb, 0xc (3 with the same stack):",
        "Thread 0xd:",
    ]
    assert blocks[1].splitlines()[1:] == [
        '  File "/srv/app.py", line 2, in wait',
        '  File "/srv/app.py", line 1, in run',
    ]
