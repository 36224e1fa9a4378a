"""The servers under test: how to start each one, know it is ready, and stop it.

Every server gets the same app, the same worker count, the same core and the same
environment, so a difference in the figures is a difference between servers. A server
that fails to start raises ``ServerError`` with the tail of its log, so the run can skip
it and go on with the others.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.apps import BODY
from bench.tools import BENCH_BIN, PROJECT_BIN, REPO_ROOT

HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 20


class ServerError(RuntimeError):
    """The server did not come up, or did not answer the hello-world request correctly."""


@dataclass(frozen=True)
class Launch:
    """What a spec needs to build its command line."""

    port: int
    workers: int
    state_dir: Path


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration: a name to report and filter on, and its command line."""

    name: str
    interface: str
    argv: Callable[[Launch], list[str]]


def _poolwarden(interface: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        return [
            str(PROJECT_BIN / "poolwarden"),
            "run",
            f"bench.apps:{interface}_app",
            "--interface",
            interface,
            "--processes",
            str(launch.workers),
            "--bind",
            f"{HOST}:{launch.port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--state-dir",
            str(launch.state_dir),
        ]

    return argv


def _gunicorn(worker_class: str, *extra: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        return [
            str(BENCH_BIN / "gunicorn"),
            "-w",
            str(launch.workers),
            "-k",
            worker_class,
            *extra,
            "-b",
            f"{HOST}:{launch.port}",
            "--log-level",
            "warning",
            # The heartbeat file is touched on every request loop; keep it off the disk.
            "--worker-tmp-dir",
            "/dev/shm",
            *_gunicorn_control_socket_flags(),
            "bench.apps:wsgi_app",
        ]

    return argv


@functools.cache
def _gunicorn_supports_no_control_socket() -> bool:
    result = subprocess.run(
        [str(BENCH_BIN / "gunicorn"), "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return "--no-control-socket" in result.stdout


def _gunicorn_control_socket_flags() -> list[str]:
    """Newer gunicorn opens a control socket under ~/.gunicorn; the bench needs none."""
    return ["--no-control-socket"] if _gunicorn_supports_no_control_socket() else []


def _uvicorn(launch: Launch) -> list[str]:
    # With one worker, uvicorn runs the server in the main process (no supervisor), which
    # is what "one worker process" means for it; --workers 1 would add a supervisor.
    workers = ["--workers", str(launch.workers)] if launch.workers > 1 else []
    return [
        str(BENCH_BIN / "uvicorn"),
        "bench.apps:asgi_app",
        *workers,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--host",
        HOST,
        "--port",
        str(launch.port),
    ]


def _granian(interface: str) -> Callable[[Launch], list[str]]:
    def argv(launch: Launch) -> list[str]:
        return [
            str(BENCH_BIN / "granian"),
            "--interface",
            interface,
            f"bench.apps:{interface}_app",
            "--workers",
            str(launch.workers),
            "--host",
            HOST,
            "--port",
            str(launch.port),
            # wrk speaks HTTP/1.1 only, like every other server here: skip the h2 sniffing.
            "--http",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]

    return argv


SERVERS: tuple[ServerSpec, ...] = (
    ServerSpec("poolwarden-wsgi", "wsgi", _poolwarden("wsgi")),
    ServerSpec("poolwarden-asgi", "asgi", _poolwarden("asgi")),
    ServerSpec("gunicorn-sync", "wsgi", _gunicorn("sync")),
    ServerSpec("gunicorn-gthread", "wsgi", _gunicorn("gthread", "--threads", "8")),
    ServerSpec("uvicorn", "asgi", _uvicorn),
    ServerSpec("granian-wsgi", "wsgi", _granian("wsgi")),
    ServerSpec("granian-asgi", "asgi", _granian("asgi")),
)


def free_port() -> int:
    """Ask the kernel for a free port on the loopback address.

    There is a window between closing this socket and the server binding the port, but
    nothing else on the machine competes for ports during a run.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    """A started server: its master process and where to reach it."""

    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self) -> str:
        """How the master ended: 0 usually means someone sent it SIGTERM or SIGINT."""
        code = self.process.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def explain(self, what: str) -> str:
        """``what`` followed by the tail of the server's log, when it logged anything."""
        tail = self.log_tail().strip()
        return f"{what}; its log ends:\n{tail}" if tail else f"{what} (its log is empty)"


@contextlib.contextmanager
def serve(
    spec: ServerSpec, workers: int, cpus: set[int] | None, taskset: str | None
) -> Iterator[RunningServer]:
    """Start ``spec``, wait until it serves hello world, and always stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        tmpdir = Path(tmp)
        launch = Launch(port=free_port(), workers=workers, state_dir=tmpdir / "state")
        launch.state_dir.mkdir()
        argv = spec.argv(launch)
        if not Path(argv[0]).exists():
            raise ServerError(f"{spec.name}: executable not found: {argv[0]}")
        if cpus and taskset:
            argv = [taskset, "-c", ",".join(map(str, sorted(cpus))), *argv]
        log_path = tmpdir / "server.log"
        server = _start(spec, argv, launch.port, log_path)
        try:
            wait_ready(server)
            yield server
        finally:
            stop(server)


def _start(spec: ServerSpec, argv: list[str], port: int, log_path: Path) -> RunningServer:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    started_at = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C on the harness reaches us, and we stop the server
            # in order, instead of the terminal signalling every worker at once.
            start_new_session=True,
        )
    return RunningServer(spec, port, process, log_path, started_at)


def wait_ready(server: RunningServer, timeout: float = READY_TIMEOUT) -> None:
    """Poll until a real GET returns the hello-world body, or fail with the server's log."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(server.explain(f"{server.exit_status()} before serving"))
        try:
            _check_hello(server.port)
            return
        except (OSError, http.client.HTTPException, ServerError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.05)
    raise ServerError(server.explain(f"did not serve within {timeout:.0f}s ({last_error})"))


def _check_hello(port: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200 or body != BODY:
        raise ServerError(f"unexpected answer: {response.status} {body[:60]!r}")


def stop(server: RunningServer) -> None:
    """SIGTERM the master so it stops its workers, then SIGKILL whatever is left.

    What is left is found two ways: the tree as it was before SIGTERM, and every process
    still in the session we started the server in, which also catches workers orphaned
    by a master that died. psutil checks start times, so no reused pid is hit.
    """
    leftovers = _tree(server.process.pid)
    if server.alive():
        with contextlib.suppress(ProcessLookupError):
            server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"bench: {server.spec.name} ignored SIGTERM for {STOP_TIMEOUT:.0f}s; killing")
    leftovers += _session_members(sid=server.process.pid, since=server.started_at)
    for proc in leftovers:
        with contextlib.suppress(psutil.Error):
            if proc.is_running():
                proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=STOP_TIMEOUT)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _session_members(sid: int, since: float) -> list[psutil.Process]:
    """Processes in session ``sid`` created after ``since`` (the server started it)."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            # create_time comes from boot time plus clock ticks: allow a second of slack.
            if os.getsid(proc.pid) == sid and proc.create_time() >= since - 1.0:
                members.append(proc)
    return members
