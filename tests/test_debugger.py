"""The worker's pdb debug server, driven over its real Unix socket.

Each test runs a real Python process that uses `poolwarden.worker.debugger`
(ignoring SIGINT, as a worker does) and talks pdb's text protocol to it like
`nc -U` would. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from poolwarden.debug_client import ENDED
from poolwarden.worker.debugger import ATTACH_SIGNAL, parent_packages, start_debugpy
from tests.conftest import wait_until

DEADLINE = 5.0
PROMPT = b"(Pdb) "

PRELUDE = """\
import os, signal, sys
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a worker does
from poolwarden.importer import AppLoadError, load_app
from poolwarden.worker.debugger import startup_session

def listening(path):
    print("LISTENING", path, flush=True)
"""

STARTUP = (
    PRELUDE
    + """
SPEC = sys.argv[2]
session = startup_session(sys.argv[1], on_listening=listening, accept_timeout=10)
try:
    app = session.run(lambda: load_app(SPEC), app=SPEC)
except AppLoadError as error:
    print("PROPAGATED", type(error).__name__, type(error.__context__).__name__, flush=True)
    sys.exit(3)
print("CONTINUED", app(), flush=True)
"""
)

GOOD_APP = """\
import os

GREETING = "hello"


def build():
    answer = 42
    return lambda: GREETING + str(answer)


app = build()
"""

BROKEN_APP = """\
import os


def build():
    ratio_base = 7
    return ratio_base / 0


app = build()
"""

SPINNING_APP = """\
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
open(os.path.join(HERE, "started"), "w").close()
spins = 0
while not os.path.exists(os.path.join(HERE, "stop")):
    spins += 1
    time.sleep(0.005)
app = lambda: "spun"
"""

ATTACH = """\
import os, signal, sys, threading, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a worker does
from poolwarden.worker.debugger import ATTACH_SIGNAL, install_attach_handler

HERE = os.path.dirname(os.path.abspath(__file__))
counter = 0


def publish(name, value):
    temporary = os.path.join(HERE, name + ".tmp")
    with open(temporary, "w") as file:
        file.write(str(value))
    os.replace(temporary, os.path.join(HERE, name))


def heartbeat():
    beats = 0
    while True:
        beats += 1
        publish("heartbeat", beats)
        time.sleep(0.005)


def work_unit():
    global counter
    counter += 1
    publish("counter", counter)
    time.sleep(0.005)


def main_loop():
    while True:
        work_unit()


install_attach_handler(
    ATTACH_SIGNAL,
    lambda: os.path.join(HERE, "debug", f"w-{os.getpid()}.pdb.sock"),
    on_listening=lambda path: print("LISTENING", path, flush=True),
    accept_timeout=10,
)
threading.Thread(target=heartbeat, daemon=True).start()
print("READY", flush=True)
main_loop()
"""


class Child:
    """A Python process running one script, and what it printed so far."""

    def __init__(self, script: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=script.parent,
        )
        self.out = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, marker: str, timeout: float = DEADLINE) -> str:
        """Read stdout until a line contains `marker`; return that line."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        needle = marker.encode()
        while True:
            for line in self.out.split(b"\n")[:-1]:  # complete lines only
                if needle in line:
                    return line.decode()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout}s; stdout: {self.out!r}")
            readable, _, _ = select.select([self.process.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"stdout closed before {marker!r}: {self.out!r}")
                self.out += chunk

    def finish(self, timeout: float = DEADLINE) -> tuple[int, str, str]:
        """Wait for the exit; (status, all of stdout, stderr)."""
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, (self.out + out).decode(), err.decode()


class PdbClient:
    """A scripted `nc -U`: send a line, read until the next `(Pdb) ` prompt."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.pending = b""

    def until_prompt(self, timeout: float = DEADLINE, prompt: bytes = PROMPT) -> str:
        deadline = time.monotonic() + timeout
        while not self.pending.endswith(prompt):
            self._receive(deadline, "a prompt")
        text, self.pending = self.pending.decode(), b""
        return text

    def command(self, line: str, timeout: float = DEADLINE) -> str:
        self.send(line)
        return self.until_prompt(timeout)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def until_closed(self, timeout: float = DEADLINE) -> str:
        deadline = time.monotonic() + timeout
        while self._receive(deadline, "the end of the session"):
            pass
        text, self.pending = self.pending.decode(), b""
        return text

    def _receive(self, deadline: float, what: str) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {what} in time; received {self.pending!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no {what} in time; received {self.pending!r}") from None
        if not data and what == "a prompt":
            raise AssertionError(f"connection closed before {what}; received {self.pending!r}")
        self.pending += data
        return bool(data)

    def close(self) -> None:
        self.sock.close()


class Terminal:
    """The other side of a pty: keys in, screen text out."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.screen = ""

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def expect(self, text: str, timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not on the screen: {self.screen!r}")
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if readable:
                try:
                    self.screen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # EIO: the client closed the terminal
                    raise AssertionError(f"{text!r} never shown: {self.screen!r}") from None
        self.screen = self.screen[self.screen.index(text) + len(text) :]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pw-dbg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(script: Path, *args: str) -> Child:
        child = Child(script, *args)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
        child.process.communicate()


def start_session(
    workdir: Path, spawn: Callable[..., Child], app_source: str, module: str = "mymod"
) -> tuple[Child, str]:
    """A child waiting in a startup session before importing `module:app`."""
    (workdir / f"{module}.py").write_text(app_source)
    script = workdir / "child.py"
    script.write_text(STARTUP)
    path = str(workdir / "debug" / "mypool-1.pdb.sock")
    child = spawn(script, path, f"{module}:app")
    child.expect("LISTENING")
    return child, path


def test_startup_session_steps_into_the_app_module(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)
    module = str(workdir / "mymod.py")
    client = PdbClient(path)

    banner = client.until_prompt()
    assert "about to import the app 'mymod:app'" in banner
    assert "-> return load()" in banner

    entered = client.command("step")
    assert f"> {module}(1)<module>()\n-> import os" in entered
    client.command("next")
    client.command("next")
    assert "'hello'" in client.command("p GREETING")
    assert "-> app = build()" in client.command("next")
    assert f"{module}(6)build()" in client.command("step")
    client.command("next")
    assert "-> return lambda" in client.command("next")
    assert "42" in client.command("p answer")
    where = client.command("where")
    assert f"{module}(11)<module>()" in where
    assert f"> {module}(8)build()" in where
    client.send("continue")
    assert "the worker continues without the debugger" in client.until_closed()

    status, out, err = child.finish()
    assert (status, err) == (0, "")
    assert "CONTINUED hello42" in out
    assert not os.path.exists(path)


def test_step_passes_through_the_apps_parent_packages(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    package = workdir / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("VERSION = 1\nSETTINGS = {}\n")
    (package / "web.py").write_text(GOOD_APP)
    script = workdir / "child.py"
    script.write_text(STARTUP)
    path = str(workdir / "debug" / "mypool-1.pdb.sock")
    child = spawn(script, path, "shop.web:app")
    child.expect("LISTENING")
    client = PdbClient(path)
    client.until_prompt()
    entered = client.command("step")
    assert f"> {package / 'web.py'}(1)<module>()\n-> import os" in entered
    assert "__init__" not in entered
    client.send("continue")
    assert "the worker continues without the debugger" in client.until_closed()
    status, out, _ = child.finish()
    assert status == 0 and "CONTINUED hello42" in out


def test_parent_packages_are_the_prefixes_of_the_apps_module() -> None:
    assert parent_packages("a.b.wsgi:app") == {"a", "a.b"}
    assert parent_packages("wsgi:app") == frozenset()
    assert parent_packages(None) == frozenset()


def test_breakpoints_keep_the_session_after_the_load(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)
    module = str(workdir / "mymod.py")
    client = PdbClient(path)
    client.until_prompt()

    assert "Breakpoint 1" in client.command(f"break {module}:8")
    assert f"> {module}(8)build()" in client.command("continue")
    # The app's lambda is on the same line: called after the load, it stops there too.
    after_load = client.command("continue")
    assert "the session stays open" in after_load
    assert f"> {module}(8)<lambda>()" in after_load
    client.send("clear")
    client.until_prompt(prompt=b"Clear all breaks? ")
    assert "Deleted breakpoint 1" in client.command("yes")
    client.send("detach")
    client.until_closed()

    status, out, err = child.finish()
    assert (status, err) == (0, "")
    assert "CONTINUED hello42" in out


def test_import_error_gives_a_post_mortem_then_propagates(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    child, path = start_session(workdir, spawn, BROKEN_APP, module="broken")
    module = str(workdir / "broken.py")
    client = PdbClient(path)
    client.until_prompt()

    failure = client.command("continue")
    assert "Traceback (most recent call last):" in failure
    assert "ZeroDivisionError: division by zero" in failure
    assert f"> {module}(6)build()\n-> return ratio_base / 0" in failure
    assert "7" in client.command("p ratio_base")
    client.send("continue")
    client.until_closed()

    status, out, _ = child.finish()
    assert status == 3
    assert "PROPAGATED AppLoadError ZeroDivisionError" in out


def test_post_mortem_starts_at_the_apps_line_not_inside_the_library_that_raised(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    source = 'import os\n\nNAME = "POOLWARDEN_TEST_UNSET"\nURL = os.environ[NAME]\n'
    child, path = start_session(workdir, spawn, source, module="settingsapp")
    module = str(workdir / "settingsapp.py")
    client = PdbClient(path)
    client.until_prompt()
    failure = client.command("continue")
    # The traceback starts at the app, as Python's own would, without importlib.
    report = failure.split("The app failed to load:\n", 1)[1]
    assert report.startswith(f'Traceback (most recent call last):\n  File "{module}", line 4')
    assert "importlib" not in report
    assert "KeyError: 'POOLWARDEN_TEST_UNSET'" in report
    assert f"> {module}(4)<module>()\n-> URL = os.environ[NAME]" in failure
    assert "'POOLWARDEN_TEST_UNSET'" in client.command("p NAME")
    assert "__getitem__" in client.command("down")  # the library frame is still there
    client.send("continue")
    client.until_closed()
    assert child.finish()[0] == 3


def test_socket_is_private_to_its_owner(workdir: Path, spawn: Callable[..., Child]) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)

    mode = os.stat(path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    parent = os.stat(os.path.dirname(path)).st_mode
    assert stat.S_IMODE(parent) & 0o022 == 0

    client = PdbClient(path)
    client.until_prompt()
    client.send("detach")
    client.until_closed()
    assert child.finish()[0] == 0


def test_a_client_that_goes_away_detaches(workdir: Path, spawn: Callable[..., Child]) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)

    PdbClient(path).close()

    status, out, err = child.finish()
    assert status == 0
    assert "CONTINUED hello42" in out
    assert "BdbQuit" not in err
    assert not os.path.exists(path)


def test_ctrl_c_breaks_into_the_running_import(workdir: Path, spawn: Callable[..., Child]) -> None:
    child, path = start_session(workdir, spawn, SPINNING_APP, module="spinner")
    client = PdbClient(path)
    client.until_prompt()
    client.send("continue")
    wait_until(lambda: (workdir / "started").exists(), DEADLINE, "the app's import to run")

    os.kill(child.pid, signal.SIGINT)
    interrupted = client.until_prompt()
    assert "Program interrupted" in interrupted
    assert "spinner.py" in interrupted
    assert "True" in client.command("p spins > 0")

    # At the prompt, Ctrl-C cancels the line instead.
    os.kill(child.pid, signal.SIGINT)
    assert "--KeyboardInterrupt--" in client.until_prompt()

    (workdir / "stop").touch()
    client.send("continue")
    client.until_closed()
    status, out, err = child.finish()
    assert (status, err) == (0, "")
    assert "CONTINUED spun" in out


def _read_number(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except FileNotFoundError:
        return 0


def test_attach_stops_the_main_thread_only(workdir: Path, spawn: Callable[..., Child]) -> None:
    script = workdir / "looper.py"
    script.write_text(ATTACH)
    child = spawn(script)
    child.expect("READY")
    counter, heartbeat = workdir / "counter", workdir / "heartbeat"
    wait_until(lambda: _read_number(counter) > 0, DEADLINE, "the main loop to run")

    os.kill(child.pid, ATTACH_SIGNAL)
    path = child.expect("LISTENING").split(" ", 1)[1]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client = PdbClient(path)
    assert "attached to process" in client.until_prompt()
    where = client.command("where")
    assert "main_loop()" in where

    stopped_at = _read_number(counter)
    beats = _read_number(heartbeat)
    wait_until(lambda: _read_number(heartbeat) > beats + 5, DEADLINE, "heartbeats")
    assert _read_number(counter) == stopped_at

    client.send("detach")
    assert "Detached" in client.until_closed()
    wait_until(lambda: _read_number(counter) > stopped_at, DEADLINE, "the main loop to resume")
    assert not os.path.exists(path)
    child.process.terminate()
    assert "BdbQuit" not in child.finish()[2]


def test_attach_again_after_the_client_vanished(workdir: Path, spawn: Callable[..., Child]) -> None:
    script = workdir / "looper.py"
    script.write_text(ATTACH)
    child = spawn(script)
    child.expect("READY")

    os.kill(child.pid, ATTACH_SIGNAL)
    first = PdbClient(child.expect("LISTENING").split(" ", 1)[1])
    first.until_prompt()
    first.send("continue")
    first.close()
    counter = workdir / "counter"
    running = _read_number(counter)
    wait_until(lambda: _read_number(counter) > running, DEADLINE, "the main loop to run on")

    child.out = b""
    os.kill(child.pid, ATTACH_SIGNAL)
    second = PdbClient(child.expect("LISTENING").split(" ", 1)[1])
    assert "attached to process" in second.until_prompt()
    second.send("detach")
    second.until_closed()
    child.process.terminate()
    assert "BdbQuit" not in child.finish()[2]


def test_debug_client_runs_scripted_commands(workdir: Path, spawn: Callable[..., Child]) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)

    client = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from poolwarden.debug_client import connect; sys.exit(connect(sys.argv[1]))",
            path,
        ],
        input="where\ncontinue\n",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )

    assert client.returncode == 0, client.stderr
    assert "(Pdb) where\n" in client.stdout
    assert "_break_before()" in client.stdout
    assert ENDED in client.stdout
    status, out, _ = child.finish()
    assert status == 0
    assert "CONTINUED hello42" in out


def test_debug_client_detaches_at_the_end_of_its_input(
    workdir: Path, spawn: Callable[..., Child]
) -> None:
    child, path = start_session(workdir, spawn, GOOD_APP)

    client = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from poolwarden.debug_client import connect; sys.exit(connect(sys.argv[1]))",
            path,
        ],
        input="step\n",
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )

    assert client.returncode == 0, client.stderr
    assert "mymod.py(1)<module>()" in client.stdout
    assert "Detached" in client.stdout
    assert child.finish()[0] == 0


def test_debugpy_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "debugpy", None)  # as if not installed: import fails
    with pytest.raises(RuntimeError, match="pip install debugpy"):
        start_debugpy()


def test_debug_client_at_a_terminal(workdir: Path, spawn: Callable[..., Child]) -> None:
    """Ctrl-C interrupts the worker; Ctrl-D detaches (keys typed into a real pty)."""
    child, path = start_session(workdir, spawn, SPINNING_APP, module="spinner")
    primary, secondary = os.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    client = subprocess.Popen(
        [sys.executable, "-c", f"from poolwarden.debug_client import connect; connect({path!r})"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(secondary)
    screen = Terminal(primary)
    try:
        screen.expect("(Pdb) ")
        screen.type("continue\r")
        wait_until(lambda: (workdir / "started").exists(), DEADLINE, "the import to run")
        screen.type("\x03")
        screen.expect("Program interrupted")
        screen.expect("(Pdb) ")
        (workdir / "stop").touch()
        screen.type("\x04")
        screen.expect(ENDED)
        assert client.wait(timeout=DEADLINE) == 0
    finally:
        client.kill()
        client.wait()
        os.close(primary)
    status, out, _ = child.finish()
    assert status == 0
    assert "CONTINUED spun" in out
