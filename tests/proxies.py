"""Real reverse proxies in front of a test's poolwarden: nginx and HAProxy.

Users put poolwarden behind them, so tests do too: each proxy is the
distribution's own binary, started in the foreground with a configuration
written for the test, listening on loopback. A proxy that is not installed
skips the test with the reason (`.ci/system-packages` installs them).

A proxy's port is picked by binding port 0 and closing it, then given to
the proxy; another process may take it in between, so a proxy that cannot
bind is started again on a new port, a few times, before the test fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

START_ATTEMPTS = 5
START_DEADLINE = 10.0
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def find_program(name: str) -> str:
    """The installed `name` (also in /usr/sbin, which a user's PATH may lack), or skip."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed (.ci/system-packages installs it)")
    return found


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Proxy:
    """A running proxy: its port on 127.0.0.1 and what it wrote."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _run(command: list[str], port: int, log: Path) -> Proxy | None:
    """Start `command`; the proxy once it accepts on `port`, or None if it exited."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + START_DEADLINE
    delay = 0.01
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        if _listening(port):
            return Proxy(process, port, log)
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"{command[0]} did not listen on {port}: {log.read_text()}")


@contextmanager
def running(
    name: str, directory: Path, build: Callable[[str, int, Path], list[str]]
) -> Iterator[Proxy]:
    """Start the proxy `build(program, port, directory)` gives the command
    line of (writing its configuration), retrying on a taken port."""
    program = find_program(name)
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / f"{name}.out"
    proxy = None
    for _ in range(START_ATTEMPTS):
        port = unused_port()
        proxy = _run(build(program, port, directory), port, log)
        if proxy is not None:
            break
    if proxy is None:
        raise AssertionError(f"{name} would not start: {log.read_text()}")
    try:
        yield proxy
    finally:
        proxy.process.terminate()
        try:
            proxy.process.wait(10)
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait()


@contextmanager
def nginx(directory: Path, http: str = "", stream: str = "") -> Iterator[Proxy]:
    """nginx in the foreground with `http` and/or `stream` blocks; `{port}`
    in them is the port it listens on (pick it in your `listen` line)."""
    if stream and not NGINX_STREAM_MODULE.exists():
        pytest.skip("nginx's stream module is not installed (libnginx-mod-stream)")

    def build(program: str, port: int, where: Path) -> list[str]:
        lines = [f"load_module {NGINX_STREAM_MODULE};"] if stream else []
        lines += [
            "daemon off;",
            "master_process off;",
            f"pid {where / 'nginx.pid'};",
            f"error_log {where / 'error.log'} info;",
            "events { worker_connections 1024; }",
        ]
        temp = "".join(
            f"{kind}_temp_path {where / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        if http:
            lines.append(
                "http { access_log off; " + temp + http.replace("{port}", str(port)) + " }"
            )
        if stream:
            lines.append("stream { " + stream.replace("{port}", str(port)) + " }")
        conf = where / "nginx.conf"
        conf.write_text("\n".join(lines) + "\n")
        return [program, "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")]

    with running("nginx", directory, build) as proxy:
        yield proxy


@contextmanager
def haproxy(directory: Path, config: str) -> Iterator[Proxy]:
    """HAProxy in the foreground with `config` (its `{port}` as in `nginx`)."""

    def build(program: str, port: int, where: Path) -> list[str]:
        conf = where / "haproxy.cfg"
        conf.write_text(config.replace("{port}", str(port)) + "\n")
        return [program, "-db", "-f", str(conf)]

    with running("haproxy", directory, build) as proxy:
        yield proxy
