"""`poolwarden debug` with real masters and workers: start-up debugging over
the pdb socket, post-mortem on an import error, attach, and the armed state."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from poolwarden.events import catalog
from tests.conftest import POOLWARDEN, Server, events_of, one_pool_config, wait_until


def _cli(server: Server, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLWARDEN, *args, "--state-dir", str(server.state_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(server: Server) -> dict[str, Any]:
    result = _cli(server, "debug", "status", "--json")
    assert result.returncode == 0, result.stderr
    pools = json.loads(result.stdout)["pools"]
    return {pool["pool"]: pool for pool in pools}


def _waiting(server: Server, pool: str) -> dict[str, Any] | None:
    for worker in _status(server)[pool]["workers"]:
        if worker["address"]:
            return dict(worker)
    return None


def test_the_next_worker_waits_for_pdb_before_it_loads_the_app(start_serve: Any) -> None:
    server = start_serve(
        one_pool_config(
            "web",
            "tests.apps.debug_app:app",
            'start_mode = "always_running"\n[pools.web.process_model]\n'
            'startup_time_limit = "2s"\nping_interval = "200ms"\nping_response_time = "1s"\n',
        )
    )
    [old] = server.wait_for_workers(1)
    armed = _cli(server, "debug", "startup", "web")
    assert armed.returncode == 0, armed.stderr
    assert "debug connect web" in armed.stdout
    waiting = wait_until(lambda: _waiting(server, "web"), what="a worker waiting for pdb")
    assert isinstance(waiting, dict)
    socket_path = waiting["address"]
    assert socket_path.endswith(f"web-{waiting['pid']}.pdb.sock")
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    # One worker only: the armed state switched itself off.
    assert _status(server)["web"]["armed"] is None
    # The old worker keeps serving while the new one waits past its start-up
    # time limit (suspended for a debugged worker).
    for _ in range(3):
        assert server.get("/")[0] == 200
    session = _cli(server, "debug", "connect", "web", stdin="step\nwhere\np __name__\ncontinue\n")
    assert session.returncode == 0, session.stderr
    # `step` goes through the app's packages (`tests`, `tests.apps`) to its module.
    assert "tests/apps/debug_app.py(" in session.stdout
    assert "tests/__init__.py" not in session.stdout
    assert "load_app()" in session.stdout  # `where`: the import, from the loader
    assert "'tests.apps.debug_app'" in session.stdout
    assert "The app is loaded" in session.stdout
    # Then it loads the app, becomes ready and replaces the old worker.
    wait_until(lambda: old not in server.worker_pids(), what="the old worker to be replaced")
    status, _, body = server.get("/")
    assert status == 200 and body.startswith(b"hello from the debugged worker")
    assert events_of(server, catalog.WORKER_STARTUP_TIME_LIMIT) == []


def test_post_mortem_on_an_import_error_and_no_rapid_fail_count(start_serve: Any) -> None:
    server = start_serve(
        one_pool_config("broken", "tests.apps.broken_import:app", 'start_mode = "on_demand"')
    )
    armed = _cli(server, "debug", "startup", "broken")
    assert armed.returncode == 0, armed.stderr
    # An on-demand pool starts the worker with the next request, which waits.
    answers: list[int] = []
    client = threading.Thread(target=lambda: answers.append(server.get("/", timeout=60)[0]))
    client.start()
    wait_until(lambda: _waiting(server, "broken"), what="the worker to wait for pdb")
    session = _cli(server, "debug", "connect", "broken", stdin="continue\np settings\ncontinue\n")
    assert session.returncode == 0, session.stderr
    assert "KeyError: 'DATABASE_URL is not set'" in session.stdout
    assert "check_settings" in session.stdout
    assert "{'database': ''}" in session.stdout  # a local of the frame that raised
    client.join(60)
    assert answers == [503]
    [failed] = wait_until(lambda: events_of(server, catalog.WORKER_STARTUP_FAILED))  # type: ignore[misc]
    assert "failure 1 of" not in failed.message  # a debugged worker does not count


def test_attach_breaks_into_one_worker_while_another_serves(start_serve: Any) -> None:
    server = start_serve(
        one_pool_config(
            "web",
            "tests.apps.debug_app:app",
            'start_mode = "always_running"\nmax_processes = 2\n'
            '[pools.web.process_model]\nping_interval = "200ms"\nping_response_time = "1s"\n',
        )
    )
    first, second = server.wait_for_workers(2)
    attach = subprocess.Popen(
        [*POOLWARDEN, "debug", "attach", str(first), "--state-dir", str(server.state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _waiting(server, "web"), what="the attached worker to listen")
        # The other worker answers while the first is held (and not declared hung).
        for _ in range(10):
            status, _, body = server.get("/")
            assert status == 200
        assert str(second).encode() in body
        output, errors = attach.communicate("where\ndetach\n", timeout=30)
    finally:
        if attach.poll() is None:
            attach.kill()
    assert attach.returncode == 0, errors
    assert "(Pdb)" in output
    assert first in server.worker_pids()
    assert events_of(server, catalog.WORKER_PING_FAILED) == []


def test_debug_off_and_a_disabled_pool_needs_start(start_serve: Any) -> None:
    server = start_serve(one_pool_config("web", "tests.apps.debug_app:app"))
    assert _cli(server, "debug", "startup", "web", "--keep").returncode == 0
    assert _status(server)["web"]["armed"]["keep"] is True
    assert _cli(server, "debug", "off", "web").returncode == 0
    assert _status(server)["web"]["armed"] is None
    unknown = _cli(server, "debug", "startup", "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr


def test_the_debug_socket_directory_is_private(start_serve: Any, tmp_path: Path) -> None:
    server = start_serve(one_pool_config("web", "tests.apps.debug_app:app"))
    assert _cli(server, "debug", "startup", "web").returncode == 0
    client = threading.Thread(target=lambda: server.get("/", timeout=60), daemon=True)
    client.start()
    waiting = wait_until(lambda: _waiting(server, "web"))
    assert isinstance(waiting, dict)
    directory = os.path.dirname(waiting["address"])
    assert stat.S_IMODE(os.stat(directory).st_mode) & 0o077 == 0
    session = _cli(server, "debug", "connect", "web", stdin="continue\n")
    assert session.returncode == 0
    client.join(30)


def test_a_wrapper_starts_the_next_worker_under_it_and_switches_itself_off(
    start_serve: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "wrapper.argv"
    script = tmp_path / "trace-it.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{marker}"\nshift\n"$@"\nexit $?\n')
    script.chmod(0o755)
    server = start_serve(
        one_pool_config(
            "web",
            "tests.apps.dump_apps:app",
            'start_mode = "always_running"\n[pools.web.process_model]\n'
            'startup_time_limit = "5s"\nping_interval = "200ms"\nping_response_time = "1s"\n',
        )
    )
    [old] = server.wait_for_workers(1)
    missing = _cli(server, "debug", "startup", "web", "--wrapper", "no-such-debugger --flag")
    assert missing.returncode == 1
    assert "'no-such-debugger' is not found on PATH" in missing.stderr
    assert _status(server)["web"]["armed"] is None

    armed = _cli(server, "debug", "startup", "web", "--wrapper", f"{script} --verbose")
    assert armed.returncode == 0, armed.stderr
    assert f"starts under `{script} --verbose`" in armed.stdout
    assert "debug connect" not in armed.stdout  # no debug server without --adapter
    wait_until(lambda: old not in server.worker_pids(), what="the old worker to be replaced")
    [wrapper_pid] = server.worker_pids()
    argv = marker.read_text().splitlines()
    assert argv[0] == "--verbose"
    assert argv[2:4] == ["-m", "poolwarden.worker"]
    status, _, body = server.get("/")
    assert status == 200
    assert json.loads(body)["ppid"] == wrapper_pid  # the worker runs under the wrapper
    pool = _status(server)["web"]
    assert pool["armed"] is None  # one worker, then it switched itself off
    [worker] = pool["workers"]
    assert (worker["pid"], worker["adapter"]) == (wrapper_pid, "wrapper")
    assert worker["wrapper"] == [str(script), "--verbose"]
    shown = _cli(server, "debug", "status")
    assert f"worker {wrapper_pid} (ready) started under `{script} --verbose`" in shown.stdout


def _dap(sock: socket.socket, seq: int, command: str, **arguments: Any) -> None:
    body = json.dumps({"seq": seq, "type": "request", "command": command, "arguments": arguments})
    sock.sendall(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())


def _dap_messages(sock: socket.socket, buffer: bytearray) -> list[dict[str, Any]]:
    """The whole DAP messages received so far (reads once if there are none)."""
    if b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    messages = []
    while b"\r\n\r\n" in buffer:
        head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        length = int(head.decode().split(":")[1])
        if len(rest) < length:
            buffer += sock.recv(65536)
            continue
        messages.append(json.loads(rest[:length]))
        del buffer[: len(head) + 4 + length]
    return messages


def test_debugpy_listens_on_loopback_and_the_app_loads_once_an_editor_attaches(
    start_serve: Any,
) -> None:
    pytest.importorskip("debugpy", reason="the debugpy adapter needs debugpy installed")
    server = start_serve(
        one_pool_config("web", "tests.apps.debug_app:app", 'start_mode = "always_running"')
    )
    [old] = server.wait_for_workers(1)
    armed = _cli(server, "debug", "startup", "web", "--adapter", "debugpy")
    assert armed.returncode == 0, armed.stderr
    printed = re.search(r"waits for a debugpy client on (127\.0\.0\.1):(\d+)", armed.stdout)
    assert printed, armed.stdout
    port = int(printed.group(2))
    connect = _cli(server, "debug", "connect", "web")
    assert connect.returncode == 0, connect.stderr
    assert f"127.0.0.1:{port}" in connect.stdout
    [waiting] = _status(server)["web"]["workers"]
    assert (waiting["adapter"], waiting["state"]) == ("debugpy", "starting")
    assert waiting["address"] == f"127.0.0.1:{port}"
    assert old in server.worker_pids()  # the old worker serves while the new one waits
    # An editor's session, over the Debug Adapter Protocol.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as editor:
        buffer = bytearray()
        _dap(editor, 1, "initialize", adapterID="python", clientID="poolwarden-test")
        _dap(editor, 2, "attach", justMyCode=True)
        _dap(editor, 3, "configurationDone")
        done = wait_until(
            lambda: any(
                message.get("command") == "configurationDone"
                for message in _dap_messages(editor, buffer)
            ),
            what="debugpy to accept the editor's configuration",
        )
        assert done
        wait_until(lambda: old not in server.worker_pids(), what="the debugged worker to serve")
        status, _, body = server.get("/")
        assert status == 200 and body.startswith(b"hello from the debugged worker")
        _dap(editor, 4, "disconnect")
