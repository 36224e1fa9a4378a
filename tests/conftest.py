"""Fixtures that start real poolwarden servers and talk to them over loopback.

Every server is a real `poolwarden run` process with real workers, bound to
127.0.0.1 port 0; the fixture learns the port from the master's log line.
Waits are conditions with deadlines, never bare sleeps.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
POOLWARDEN = [sys.executable, "-m", "poolwarden"]
DEFAULT_DEADLINE = 20.0


def wait_until(
    condition: Callable[[], object], timeout: float = DEFAULT_DEADLINE, what: str = ""
) -> object:
    """Poll `condition` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class Server:
    """A running `poolwarden run` master and what it wrote."""

    process: subprocess.Popen[bytes]
    state_dir: Path
    stdout_path: Path
    stderr_path: Path
    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    # what the master wrote

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_for_stderr(self, pattern: str, timeout: float = DEFAULT_DEADLINE) -> re.Match[str]:
        regex = re.compile(pattern)
        match = wait_until(
            lambda: regex.search(self.stderr()), timeout, f"stderr to match {pattern!r}"
        )
        assert isinstance(match, re.Match)
        return match

    def wait_for_stdout(self, pattern: str, timeout: float = DEFAULT_DEADLINE) -> re.Match[str]:
        regex = re.compile(pattern)
        match = wait_until(
            lambda: regex.search(self.stdout()), timeout, f"stdout to match {pattern!r}"
        )
        assert isinstance(match, re.Match)
        return match

    # processes

    def worker_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return sorted(child.pid for child in children if _alive(child))

    def wait_for_workers(self, count: int, exclude: set[int] | None = None) -> list[int]:
        """Wait until `count` workers (not in `exclude`) have logged Ready."""

        def ready() -> list[int] | None:
            pids = [int(p) for p in re.findall(r"worker (\d+) ready", self.stderr())]
            alive = [
                pid for pid in pids if pid in self.worker_pids() and pid not in (exclude or set())
            ]
            return alive if len(alive) >= count else None

        result = wait_until(ready, what=f"{count} ready workers")
        assert isinstance(result, list)
        return result

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = DEFAULT_DEADLINE) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    # talking to it

    def connect(self, timeout: float = 10.0) -> socket.socket:
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix_path)
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def http(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, lower-cased headers, body)."""
        conn = self.http(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        finally:
            conn.close()

    def get(self, path: str = "/", **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kwargs)  # type: ignore[arg-type]

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send raw bytes, then read until the server closes (or the timeout)."""
        sock = self.connect(timeout)
        try:
            sock.sendall(data)
            return read_until_closed(sock)
        finally:
            sock.close()


def _alive(process: psutil.Process) -> bool:
    """Neither a zombie nor gone: a worker may exit and be reaped between
    listing the master's children and asking one of them its status."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def freeze(pid: int) -> None:
    """SIGSTOP `pid` and wait until the kernel shows it stopped: kill() returns
    before a process running on another core has taken the signal, and in
    that window it can still read and answer."""
    os.kill(pid, signal.SIGSTOP)
    process = psutil.Process(pid)
    wait_until(lambda: process.status() == psutil.STATUS_STOPPED, what=f"process {pid} to stop")


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


ServerFactory = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start `poolwarden run APP [args]`; every server is stopped at teardown.

    `wait_ready=False` returns as soon as the process is started (for tests
    of start-up failures); `env` adds environment variables.
    """
    servers: list[Server] = []
    counter = iter(range(1000))

    def start(
        app: str,
        *args: str,
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
        bind: str | None = "127.0.0.1:0",
        workers: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Server:
        index = next(counter)
        state_dir = tmp_path / f"state{index}"
        stdout_path = tmp_path / f"stdout{index}.log"
        stderr_path = tmp_path / f"stderr{index}.log"
        command = [*POOLWARDEN, "run", app, "--state-dir", str(state_dir), *args]
        if bind:
            command += ["--bind", bind]
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=full_env,
                preexec_fn=preexec_fn,
            )
        server = Server(process, state_dir, stdout_path, stderr_path)
        servers.append(server)
        if not wait_ready:
            return server
        match = server.wait_for_stderr(r"listening on (?:http://127\.0\.0\.1:(\d+)|unix:(\S+))")
        if match.group(1):
            server.port = int(match.group(1))
        else:
            server.unix_path = match.group(2)
        expected = workers
        if expected is None:
            found = re.search(r"(?:--processes|-p)\s+(\d+)", " ".join(args))
            expected = int(found.group(1)) if found else 1
        server.wait_for_workers(expected)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `poolwarden serve -c FILE` with `config` as the file's text.

    `{state_dir}` and `{repo}` in the text are filled in. The server's
    listening ports, in the order logged, are in `server.extra["ports"]`
    (`server.port` is the first).
    """
    servers: list[Server] = []
    counter = iter(range(1000))

    def start(config: str, *, listeners: int = 1, env: dict[str, str] | None = None) -> Server:
        index = next(counter)
        state_dir = tmp_path / f"serve-state{index}"
        config_path = tmp_path / f"poolwarden{index}.toml"
        config_path.write_text(config.format(state_dir=state_dir, repo=REPO))
        stdout_path = tmp_path / f"serve-stdout{index}.log"
        stderr_path = tmp_path / f"serve-stderr{index}.log"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(
                [*POOLWARDEN, "serve", "-c", str(config_path)],
                cwd=REPO,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=full_env,
            )
        server = Server(process, state_dir, stdout_path, stderr_path)
        server.extra["config_path"] = config_path
        servers.append(server)

        def ports() -> list[int] | None:
            found = [
                int(p) for p in re.findall(r"listening on http://[\d.]+:(\d+)", server.stderr())
            ]
            return found if len(found) >= listeners else None

        found = wait_until(ports, what=f"{listeners} listening lines")
        assert isinstance(found, list)
        server.extra["ports"] = found
        server.port = found[0]
        return server

    yield start
    for server in servers:
        server.stop()


def events_of(server: Server, event_id: int) -> list[Any]:
    """The events with `event_id` in the server's event log (none yet: [])."""
    from poolwarden.events.store import EventStore

    try:
        with EventStore.open_reader(server.state_dir) as store:
            return store.query(event_id=event_id)
    except FileNotFoundError:
        return []


def one_pool_config(pool: str, app: str, keys: str = "") -> str:
    """A `poolwarden serve` config: one site on 127.0.0.1:0 whose `/` is `pool`,
    running `app`; `keys` are more lines for `[pools.POOL]` (and any tables
    after it). `{state_dir}` and `{repo}` are filled in by `start_serve`."""
    return f"""
[server]
state_dir = "{{state_dir}}"

[sites.main]
bindings = ["127.0.0.1:0"]

[[sites.main.applications]]
path = "/"
pool = "{pool}"

[pools.{pool}]
app = "{app}"
working_dir = "{{repo}}"
{keys}
"""
