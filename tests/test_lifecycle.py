"""The master's supervision of its workers, with real processes and signals.

Requests are held in flight by tests/apps/lifecycle_apps.py: `/block/NAME`
waits in the app until the test creates a release file, so every step below
happens while a request is provably inside the app.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from poolwarden import channel as ch
from poolwarden.master.pool import Pool
from poolwarden.master.server import Master
from poolwarden.master.worker_process import WorkerState
from poolwarden.scoreboard import Phase
from poolwarden.settings import PoolSettings, ServerSettings
from tests.conftest import REPO, Server, ServerFactory, read_until_closed, wait_until

T = TypeVar("T")
APP = "tests.apps.lifecycle_apps:app"
BROKEN = "tests.apps.broken_import"


@pytest.fixture
def lifecycle_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "lifecycle"
    directory.mkdir()
    return directory


@pytest.fixture
def start(start_server: ServerFactory, lifecycle_dir: Path) -> ServerFactory:
    """`start_server` for the lifecycle app, with its directory in the env."""

    def start_lifecycle(*args: str, **kwargs: object) -> Server:
        env = {"LIFECYCLE_DIR": str(lifecycle_dir), **kwargs.pop("env", {})}  # type: ignore[dict-item]
        return start_server(APP, *args, env=env, **kwargs)

    return start_lifecycle


class Blocked:
    """A request held in the app until `release()`; its socket stays with the test."""

    def __init__(self, server: Server, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.sock = server.connect(timeout=15)
        self.sock.sendall(
            f"GET /block/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        started = directory / f"{name}.started"
        wait_until(started.exists, what=f"request {name} to reach the app")
        self.pid = int(started.read_text())

    def release(self) -> None:
        (self.directory / f"{self.name}.release").touch()

    def response(self) -> bytes:
        try:
            return read_until_closed(self.sock)
        finally:
            self.sock.close()


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def tagged_processes(tag: str) -> list[int]:
    """Pids of live processes whose environment carries `tag` (ours, nobody else's)."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.environ().get("LIFECYCLE_TAG") == tag
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, response[:200]
    return int(match.group(1))


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def get_pid(server: Server) -> int:
    status, _, body = server.get("/")
    assert status == 200
    return int(body)


# custody: a worker that dies with a request in the app


def test_worker_killed_mid_request_gives_502_and_is_replaced(
    start: ServerFactory, lifecycle_dir: Path
) -> None:
    server = start()
    [old_pid] = server.wait_for_workers(1)
    # An idle keep-alive connection on the same worker: it is closed, not answered.
    idle = server.connect()
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 200 ")
    blocked = Blocked(server, lifecycle_dir, "victim")
    assert blocked.pid == old_pid
    os.kill(old_pid, signal.SIGKILL)
    response = blocked.response()
    assert status_of(response) == 502
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert b"x-poolwarden-reason: worker_died" in head
    seq = int(head.split(b"x-poolwarden-event: ", 1)[1].split(b"\r\n", 1)[0])
    assert body_of(response) == (
        b"Bad Gateway: the worker serving this request ended before it answered "
        b"(killed by SIGKILL (signal 9)). See `poolwarden events show %d`.\n" % seq
    )
    assert read_until_closed(idle) == b""
    idle.close()
    assert server.process.poll() is None
    server.wait_for_stderr(rf"worker {old_pid} killed by SIGKILL \(signal 9\) unexpectedly")
    [new_pid] = server.wait_for_workers(1, exclude={old_pid})
    assert new_pid != old_pid
    assert get_pid(server) == new_pid


def test_segfault_leaves_a_crash_file_and_the_server_goes_on(start: ServerFactory) -> None:
    server = start()
    [old_pid] = server.wait_for_workers(1)
    status, headers, body = server.get("/segv")
    assert status == 502
    assert headers["x-poolwarden-reason"] == "worker_died"
    assert b"killed by SIGSEGV (signal 11)" in body
    crash_file = server.state_dir / "crash" / f"default-{old_pid}.txt"
    dump = crash_file.read_text()
    assert "Fatal Python error: Segmentation fault" in dump
    assert "in crash_here_on_purpose" in dump
    assert "lifecycle_apps.py" in dump
    assert server.process.poll() is None
    [new_pid] = server.wait_for_workers(1, exclude={old_pid})
    assert get_pid(server) == new_pid
    # The running worker's crash file is empty until it crashes.
    files = {p.name: p.read_text() for p in crash_file.parent.iterdir()}
    assert files == {crash_file.name: dump, f"default-{new_pid}.txt": ""}


# the scoreboard, read by a real Pool in this process


def test_the_master_sees_an_in_flight_request(tmp_path: Path, lifecycle_dir: Path) -> None:
    loop = asyncio.new_event_loop()
    devnull = os.open(os.devnull, os.O_WRONLY)
    stopped: list[Pool] = []
    failures: list[ch.StartupFailure] = []
    pool = Pool(
        loop,
        PoolSettings(
            name="board",
            app=APP,
            env={"LIFECYCLE_DIR": str(lifecycle_dir)},
            working_dir=str(REPO),
            access_log=False,
        ),
        ServerSettings(binds=[], state_dir=str(tmp_path / "state")),
        access_log_fd=devnull,
        on_startup_failure=lambda pool, failure: failures.append(failure),
        on_stopped=stopped.append,
    )
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=10)

    def run_until(condition: Callable[[], T], what: str) -> T:
        """Run the pool's loop until `condition()` is truthy (with a deadline)."""

        async def poll() -> T:
            deadline = time.monotonic() + 20
            while not (result := condition()):
                assert not failures, failures
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.01)
            return result

        return loop.run_until_complete(poll())

    try:
        pool.start()
        run_until(lambda: pool.workers and pool.workers[0].state is WorkerState.READY, "Ready")
        worker = pool.workers[0]
        assert worker.scoreboard.busy() == []
        client.sendall(b"POST /block/board?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        conn, peer = listener.accept()
        message = ch.Dispatch(
            conn_id=41,
            peer_host=peer[0],
            peer_port=peer[1],
            server_host="127.0.0.1",
            server_port=listener.getsockname()[1],
            scheme="http",
            script_name="",
            buffered=b"",
        )
        started = time.time()
        pool.dispatch(conn, message)  # the pool keeps `conn` in custody, as the master does
        [slot] = run_until(worker.scoreboard.busy, "the request in the scoreboard")
        assert (slot.phase, slot.method, slot.path) == (Phase.APP, "POST", "/block/board?x=1")
        assert slot.client == f"127.0.0.1:{client.getsockname()[1]}"
        assert (slot.conn_id, slot.status, slot.served) == (41, 0, 0)
        assert started - 1 < slot.started < time.time() + 1
        assert worker.load == 1
        (lifecycle_dir / "board.release").touch()
        client.settimeout(10)
        reply = client.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"released board\n")
        run_until(lambda: not worker.scoreboard.busy(), "the slot to be idle")
        assert worker.scoreboard.served() == 1
        client.close()
        run_until(lambda: worker.load == 0, "the worker to report the connection closed")
        assert conn.fileno() == -1  # the master closed its copy when told
    finally:
        client.close()
        listener.close()
        pool.kill()
        try:
            run_until(lambda: stopped, "the pool to stop")
        finally:
            loop.close()
            os.close(devnull)
    assert not failures


# start-up failures in run mode

EXIT_NOW = ("--on-startup-failure", "exit-now")
"""The first failure is fatal: these tests are about what it says."""


def test_import_error_exits_3_with_the_apps_traceback(start_server: ServerFactory) -> None:
    server = start_server(f"{BROKEN}:app", *EXIT_NOW, wait_ready=False)
    assert server.wait() == 3
    stderr = server.stderr()
    source = (REPO / "tests" / "apps" / "broken_import.py").read_text().splitlines()
    raise_line = next(n for n, line in enumerate(source, 1) if "raise KeyError" in line)
    call_line = next(n for n, line in enumerate(source, 1) if line == "check_settings(SETTINGS)")
    headline = (
        f"poolwarden: cannot start app '{BROKEN}:app' (import failed in {BROKEN}, "
        f"line {raise_line}): KeyError: 'DATABASE_URL is not set'\n"
    )
    assert headline in stderr
    printed = stderr.split(headline, 1)[1]
    frames = re.findall(r'^  File "([^"]+)", line (\d+), in (\S+)$', printed, re.MULTILINE)
    path = str(REPO / "tests" / "apps" / "broken_import.py")
    assert frames == [(path, str(call_line), "<module>"), (path, str(raise_line), "check_settings")]
    assert printed.startswith("Traceback (most recent call last):\n")
    assert "KeyError: 'DATABASE_URL is not set'\n" in printed
    assert "src/poolwarden" not in printed


def test_missing_module_exits_3_with_a_clear_message(start_server: ServerFactory) -> None:
    server = start_server("tests.apps.no_such_module:app", *EXIT_NOW, wait_ready=False)
    assert server.wait() == 3
    assert (
        "poolwarden: cannot start app 'tests.apps.no_such_module:app' "
        "(import failed in tests.apps.no_such_module): ModuleNotFoundError: "
        "no module named 'tests.apps.no_such_module' (is the working directory right?)\n"
    ) in server.stderr()


def test_missing_attribute_names_module_and_attribute(start_server: ServerFactory) -> None:
    server = start_server("tests.apps.lifecycle_apps:application", *EXIT_NOW, wait_ready=False)
    assert server.wait() == 3
    assert (
        "poolwarden: cannot start app 'tests.apps.lifecycle_apps:application' "
        "(attribute failed in tests.apps.lifecycle_apps): AttributeError: "
        "module 'tests.apps.lifecycle_apps' has no attribute 'application'\n"
    ) in server.stderr()


def test_factory_that_raises(start_server: ServerFactory) -> None:
    server = start_server(
        "tests.apps.broken_factory:create_app", "--factory", *EXIT_NOW, wait_ready=False
    )
    assert server.wait() == 3
    source = (REPO / "tests" / "apps" / "broken_factory.py").read_text().splitlines()
    raise_line = next(n for n, line in enumerate(source, 1) if "raise ValueError" in line)
    headline = (
        "poolwarden: cannot start app 'tests.apps.broken_factory:create_app' "
        f"(factory failed in tests.apps.broken_factory, line {raise_line}): "
        "ValueError: config file app.toml has no [server] table\n"
    )
    stderr = server.stderr()
    assert headline in stderr
    printed = stderr.split(headline, 1)[1]
    frames = re.findall(r'^  File "[^"]+", line \d+, in (\S+)$', printed, re.MULTILINE)
    assert frames == ["create_app", "load_config"]


def test_worker_that_exits_silently_at_import_is_a_startup_failure(
    start_server: ServerFactory,
) -> None:
    server = start_server("tests.apps.broken_exit:app", *EXIT_NOW, wait_ready=False)
    assert server.wait() == 3
    assert (
        "poolwarden: cannot start app 'tests.apps.broken_exit:app' (boot failed): WorkerDied: "
        "the worker ended before it was ready (exited with status 7)\n"
    ) in server.stderr()


def test_worker_that_crashes_at_import_points_at_its_crash_dump(
    start_server: ServerFactory,
) -> None:
    server = start_server("tests.apps.broken_segfault:app", *EXIT_NOW, wait_ready=False)
    assert server.wait() == 3
    match = re.search(
        r"^poolwarden: cannot start app 'tests\.apps\.broken_segfault:app' \(boot failed\): "
        r"WorkerDied: the worker ended before it was ready \(killed by SIGSEGV \(signal 11\)\); "
        r"its crash dump: (\S+)$",
        server.stderr(),
        re.MULTILINE,
    )
    assert match, server.stderr()
    dump = Path(match.group(1)).read_text()
    assert Path(match.group(1)).parent == server.state_dir / "crash"
    assert "Fatal Python error: Segmentation fault" in dump
    assert "in load_native_library" in dump


@pytest.mark.timeout(30)
def test_a_worker_that_cannot_be_spawned_fails_fast(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The master itself, in this process, with an interpreter that does not exist."""
    python = str(tmp_path / "no-such-python")
    master = Master(
        ServerSettings(
            binds=["127.0.0.1:0"], state_dir=str(tmp_path / "state"), on_startup_failure="exit-now"
        ),
        [PoolSettings(name="default", app=APP, python=python)],
    )
    try:
        assert master.run() == 3
    finally:
        asyncio.set_event_loop(None)  # run() leaves its closed loop set
    assert (
        f"poolwarden: cannot start app '{APP}' (spawn failed): FileNotFoundError: "
        f"cannot start a worker process: [Errno 2] No such file or directory: '{python}'\n"
    ) in capfd.readouterr().err
    assert master.pools["default"].workers == []


def test_dev_mode_shows_the_start_up_traceback_in_the_503_page(
    start_server: ServerFactory,
) -> None:
    server = start_server(
        f"{BROKEN}:app", "--on-startup-failure", "serve", "--dev-mode", wait_ready=False
    )
    server.port = int(server.wait_for_stderr(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
    server.wait_for_stderr(r"cannot start app")

    def page() -> tuple[int, dict[str, str], bytes] | None:
        answer = server.get("/")
        return answer if "x-poolwarden-event" in answer[1] else None

    status, headers, body = wait_until(page, what="a 503 naming the event")  # type: ignore[misc]
    assert status == 503
    assert headers["content-type"].startswith("text/html")
    assert b"KeyError: &#x27;DATABASE_URL is not set&#x27;" in body
    assert b"tests.apps.broken_import" in body
    assert b"Traceback (most recent call last)" in body


def test_serve_mode_answers_503_while_the_app_cannot_start(start_server: ServerFactory) -> None:
    server = start_server(f"{BROKEN}:app", "--on-startup-failure", "serve", wait_ready=False)
    server.port = int(server.wait_for_stderr(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
    server.wait_for_stderr(r"cannot start app")
    for _ in range(2):
        status, headers, body = server.get("/")
        assert status == 503
        assert headers["x-poolwarden-reason"] == "startup_failed"
        assert headers["retry-after"] == "5"
        assert b"DATABASE_URL" not in body  # without dev mode, never the traceback

    def named() -> tuple[int, dict[str, str], bytes] | None:
        answer = server.get("/")
        return answer if "x-poolwarden-event" in answer[1] else None

    _, headers, body = wait_until(named, what="a 503 naming the event")  # type: ignore[misc]
    seq = headers["x-poolwarden-event"]
    assert f"poolwarden events show {seq}".encode() in body
    assert b"DATABASE_URL" not in body
    assert server.process.poll() is None
    assert "poolwarden: cannot start app" not in server.stderr()


def test_taken_port_is_one_clear_line_and_nothing_runs(start_server: ServerFactory) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    tag = f"taken-{os.getpid()}-{port}"
    try:
        server = start_server(
            APP, bind=f"127.0.0.1:{port}", wait_ready=False, env={"LIFECYCLE_TAG": tag}
        )
        assert server.wait() == 1
        assert (
            server.stderr()
            == f"poolwarden: cannot listen on 127.0.0.1:{port}: Address already in use\n"
        )
        assert tagged_processes(tag) == []
    finally:
        holder.close()


def test_unusable_state_dir_is_one_clear_line(start_server: ServerFactory, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    state_dir = blocker / "state"
    server = start_server(APP, "--state-dir", str(state_dir), wait_ready=False)
    assert server.wait() == 1
    assert (
        server.stderr()
        == f"poolwarden: cannot use the state directory {state_dir}: Not a directory\n"
    )


# signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_request_in_flight_then_exits_0(
    start: ServerFactory, lifecycle_dir: Path, signum: int
) -> None:
    server = start()
    [worker] = server.wait_for_workers(1)
    blocked = Blocked(server, lifecycle_dir, "inflight")
    server.signal(signum)
    server.wait_for_stderr(
        rf"received {signal.Signals(signum).name}: finishing the requests in flight"
    )
    # It takes nothing new ...
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    # ... and finishes what it has.
    assert server.process.poll() is None
    blocked.release()
    response = blocked.response()
    assert status_of(response) == 200
    assert b"\r\nconnection: close\r\n" in response.lower()  # draining: no keep-alive
    assert body_of(response) == b"released inflight\n"
    assert server.wait() == 0
    assert gone(worker)


def test_second_sigint_stops_at_once(start: ServerFactory, lifecycle_dir: Path) -> None:
    server = start()
    [worker] = server.wait_for_workers(1)
    blocked = Blocked(server, lifecycle_dir, "stuck")
    server.signal(signal.SIGINT)
    server.wait_for_stderr(r"received SIGINT")
    server.signal(signal.SIGINT)
    started = time.monotonic()
    assert server.wait(timeout=10) == 1
    assert time.monotonic() - started < 5
    assert not (lifecycle_dir / "stuck.release").exists()
    wait_until(lambda: gone(worker), what="the worker to be gone")
    assert "second interrupt: stopping at once" in server.stderr()
    # The request was not answered by the app; the master still tells the client.
    response = blocked.response()
    assert status_of(response) == 502
    assert b"x-poolwarden-reason: worker_died" in response.lower()


def test_workers_die_with_the_master(start: ServerFactory) -> None:
    server = start("--processes", "2")
    workers = server.wait_for_workers(2)
    server.process.kill()
    server.process.wait(10)
    wait_until(lambda: all(gone(pid) for pid in workers), timeout=10, what="workers to exit")


# worker output, processes, binds


def test_worker_output_is_prefixed_whole_lines(start: ServerFactory) -> None:
    server = start()
    [worker] = server.wait_for_workers(1)
    assert server.get("/print")[0] == 200
    prefix = f"[default {worker}] "
    server.wait_for_stderr(re.escape(prefix + "partial then the rest\n"))
    lines = server.stderr().splitlines()
    for text in (
        "first line from the app",
        "second line from the app",
        "an error line from the app",
        "partial then the rest",
    ):
        assert lines.count(prefix + text) == 1, text


def test_two_processes_both_serve(start: ServerFactory) -> None:
    server = start("--processes", "2")
    workers = server.wait_for_workers(2)
    assert len(set(workers)) == 2
    seen = {get_pid(server) for _ in range(20)}
    assert seen == set(workers)


def test_bind_unix_socket(start: ServerFactory, tmp_path: Path) -> None:
    path = tmp_path / "pw.sock"
    server = start(bind=f"unix:{path}")
    assert server.unix_path == str(path)
    [worker] = server.wait_for_workers(1)
    response = server.raw(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert body_of(response) == str(worker).encode()
    server.stop()
    assert server.process.returncode == 0
    assert not path.exists()


# the access log


def test_access_log_combined(start: ServerFactory) -> None:
    server = start()
    status, _, body = server.get(
        "/where?q=1", headers={"User-Agent": "probe/1.0", "Referer": "http://127.0.0.1/from"}
    )
    assert status == 200
    match = server.wait_for_stdout(r".*GET /where.*\n")
    assert re.fullmatch(
        r"127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "
        rf'"GET /where\?q=1 HTTP/1\.1" 200 {len(body)} "http://127\.0\.0\.1/from" "probe/1\.0"\n',
        match.group(0),
    ), match.group(0)


def test_access_log_json(start: ServerFactory) -> None:
    server = start("--access-log-format", "json")
    [worker] = server.wait_for_workers(1)
    status, _, body = server.request("POST", "/j", body=b"x", headers={"User-Agent": "probe/2"})
    assert status == 200
    line = server.wait_for_stdout(r".*\n").group(0)
    entry = json.loads(line)
    assert {k: entry[k] for k in ("client", "method", "target", "version", "status", "size")} == {
        "client": "127.0.0.1",
        "method": "POST",
        "target": "/j",
        "version": "1.1",
        "status": 200,
        "size": len(body),
    }
    assert (entry["user_agent"], entry["referer"], entry["pid"]) == ("probe/2", "", worker)
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0


def test_no_access_log(start: ServerFactory) -> None:
    server = start("--no-access-log")
    assert server.get("/")[0] == 200
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert server.stdout() == ""


# fail-fast with patience: transient start-up failures are retried


def test_a_transient_startup_failure_is_retried_and_recovers(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    """A database that is not up yet: the import fails twice, then works."""
    counter = tmp_path / "attempts"
    server = start_server(
        "tests.apps.flaky_start:app", env={"FLAKY_START_COUNTER": str(counter), "FLAKY_FAILS": "2"}
    )
    status, _, body = server.get("/")
    assert (status, body) == (200, b"started on attempt 3\n")
    stderr = server.stderr()
    headline = (
        "poolwarden: cannot start app 'tests.apps.flaky_start:app' (import failed in "
        "tests.apps.flaky_start, line "
    )
    assert stderr.count(headline) == 1  # the same failure twice: said once
    assert "ConnectionRefusedError: [Errno 111] the config service is not up yet" in stderr
    assert "poolwarden: retrying, 2 of 5\n" in stderr
    assert "poolwarden: retrying, 3 of 5\n" in stderr
    assert "giving up" not in stderr
    assert server.process.poll() is None


def test_a_lasting_startup_failure_exits_3_at_the_rapid_fail_limit(
    start_server: ServerFactory,
) -> None:
    started = time.monotonic()
    server = start_server(f"{BROKEN}:app", wait_ready=False)
    assert server.wait() == 3
    assert time.monotonic() - started < 40  # the back-off: about 15 s in all
    stderr = server.stderr()
    headline = f"poolwarden: cannot start app '{BROKEN}:app' (import failed in {BROKEN}, line "
    assert stderr.count(headline) == 1  # at once; the verdict below names it again
    assert [f"{n} of 5" for n in range(2, 6)] == re.findall(r"retrying, (\d of 5)", stderr)
    assert re.search(
        rf"^poolwarden: giving up after 5 failed starts: cannot start app '{BROKEN}:app'",
        stderr,
        re.MULTILINE,
    )
    assert stderr.count("Traceback (most recent call last):") == 1
