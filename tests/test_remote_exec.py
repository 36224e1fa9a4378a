"""PEP 768's `sys.remote_exec` way into a worker, for `stack` and `debug attach`.

`sys.remote_exec` is new in Python 3.14, and CI runs 3.11. So:

- the pure parts run for real: the usability decision, a command line's
  interpreter options, the ptrace and capability parsing, the envelope, the
  trimming of the script's own frames, the script text;
- the facts are read from real child processes;
- the scripts run for real in a child Python the way CPython runs a
  remote_exec script (read the file, run its text as "<string>" on the main
  thread); only the transport is stood in for (`tests/apps/remote_exec_target.py`);
- `StackPipe`'s two ways run against that child with a real pipe and real
  signals: the remote dump, the fall-back to the signal, a late request;
- real servers show that without `sys.remote_exec` the stacks come via the
  signal (and attach takes it);
- the tests marked `needs_remote_exec` run the real remote_exec path; they
  are skipped where `sys.remote_exec` is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import select
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from poolwarden import channel as ch
from poolwarden.cli.admin import register
from poolwarden.master import remote_exec
from poolwarden.master.remote_exec import (
    REMOTE_WAIT,
    SCRIPT_PREFIX,
    SUPPORTED,
    Facts,
    RemoteExec,
    Verdict,
    attach_script,
    decide,
    has_capability,
    parse_ptrace_scope,
    python_options,
    read_facts,
    stack_script,
    without_script_frames,
    write_script,
)
from poolwarden.master.stack_capture import Capture, StackPipe
from poolwarden.master.worker_process import WorkerProcess
from poolwarden.settings import HeadLimits, PoolSettings
from poolwarden.stack_envelope import unwrap, wrap
from poolwarden.stacks import StackFrame, ThreadStack, parse_faulthandler
from tests.conftest import POOLWARDEN, REPO, Server, one_pool_config, wait_until

THIS = f"{sys.version_info.major}.{sys.version_info.minor}"
needs_remote_exec = pytest.mark.skipif(
    not SUPPORTED,
    reason=f"sys.remote_exec (PEP 768) is new in Python 3.14 and this is {THIS}: "
    "the real remote_exec path is not exercised here",
)
without_remote_exec = pytest.mark.skipif(
    SUPPORTED, reason="this interpreter has sys.remote_exec: the signal is only the fall-back"
)

USABLE = Facts(
    has_remote_exec=True,
    master_enabled=True,
    master_version=(3, 14),
    worker_version=(3, 14),
    worker_argv=("/usr/bin/python3.14", "-m", "poolwarden.worker", "5", "6"),
    worker_disable_env=None,
    ptrace_scope=1,
    same_user=True,
    cap_sys_ptrace=False,
    descendant=True,
)


# --- the decision (pure) ---------------------------------------------------------


def test_a_worker_of_the_same_interpreter_and_user_is_usable() -> None:
    assert decide(USABLE).usable
    assert decide(USABLE).reason == "usable"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"has_remote_exec": False, "master_version": (3, 11), "worker_version": (3, 11)},
            "sys.remote_exec is new in Python 3.14; the master runs 3.11",
        ),
        ({"master_enabled": False}, "remote debugging is off in the master"),
        ({"worker_version": None}, "the worker does not run the master's interpreter"),
        ({"worker_version": (3, 13)}, "the worker runs Python 3.13, the master 3.14"),
        ({"worker_version": (4, 14)}, "the worker runs Python 4.14, the master 3.14"),
        (
            {"worker_argv": ("python", "-X", "disable_remote_debug", "-m", "poolwarden.worker")},
            "the worker was started with -X disable_remote_debug",
        ),
        (
            {"worker_argv": ("python", "-Xdisable_remote_debug=1", "-m", "poolwarden.worker")},
            "the worker was started with -X disable_remote_debug",
        ),
        (
            {"worker_disable_env": "1"},
            "the worker was started with PYTHON_DISABLE_REMOTE_DEBUG set",
        ),
        ({"ptrace_scope": 3}, "kernel.yama.ptrace_scope is 3: no process may ptrace another"),
        ({"ptrace_scope": 3, "cap_sys_ptrace": True}, "kernel.yama.ptrace_scope is 3"),
        ({"ptrace_scope": 2}, "kernel.yama.ptrace_scope is 2: only a process with CAP_SYS_PTRACE"),
        (
            {"ptrace_scope": 1, "descendant": False},
            "kernel.yama.ptrace_scope is 1 and the worker does not descend from the master",
        ),
        ({"same_user": False}, "the worker runs as another user"),
        ({"same_user": False, "ptrace_scope": None}, "the worker runs as another user"),
    ],
)
def test_each_reason_not_to_use_remote_exec(change: dict[str, Any], reason: str) -> None:
    verdict = decide(dataclasses.replace(USABLE, **change))
    assert not verdict.usable
    assert verdict.reason.startswith(reason), verdict.reason


@pytest.mark.parametrize(
    "change",
    [
        {"ptrace_scope": 0, "descendant": False},  # classic ptrace: the same user is enough
        {"ptrace_scope": None, "descendant": False},  # no Yama at all
        {"ptrace_scope": 2, "cap_sys_ptrace": True},  # admin-only, and the master is admin
        {"same_user": False, "cap_sys_ptrace": True},  # a root master, a worker of another user
        {"ptrace_scope": 1, "descendant": False, "cap_sys_ptrace": True},
        {"worker_disable_env": ""},  # set but empty: not disabled
        # -E and -I make the interpreter ignore PYTHON* variables, this one too
        {"worker_disable_env": "1", "worker_argv": ("python", "-E", "-m", "poolwarden.worker")},
        {"worker_disable_env": "1", "worker_argv": ("python", "-Iu", "-m", "poolwarden.worker")},
        # options after -m belong to the module, not the interpreter
        {"worker_argv": ("python", "-m", "poolwarden.worker", "-X", "disable_remote_debug")},
    ],
)
def test_what_still_allows_remote_exec(change: dict[str, Any]) -> None:
    verdict = decide(dataclasses.replace(USABLE, **change))
    assert verdict.usable, verdict.reason


def test_interpreter_options_end_at_the_first_argument_that_is_not_one() -> None:
    options = python_options(
        ["python", "-bb", "-W", "error", "-Xdev", "-X", "faulthandler", "-E", "script.py", "-I"]
    )
    assert options.xoptions == {"dev", "faulthandler"}
    assert options.ignore_environment
    assert not python_options(["python", "-c", "pass", "-E"]).ignore_environment
    assert python_options(["python", "-IX", "importtime", "-m", "x"]).xoptions == {"importtime"}
    assert python_options(["python", "--check-hash-based-pycs", "always", "-E"]).ignore_environment
    assert python_options([]).xoptions == frozenset()
    assert python_options(["python", "-", "-E"]) == python_options(["python"])


def test_ptrace_scope_and_capabilities_as_the_kernel_writes_them() -> None:
    assert parse_ptrace_scope("") is None  # no Yama
    assert parse_ptrace_scope("0\n") == 0
    assert parse_ptrace_scope("2") == 2
    assert parse_ptrace_scope("garbled") == 3  # the strictest when unreadable
    status = "Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n"
    assert has_capability(status, 0)  # CAP_CHOWN
    assert not has_capability(status, 19)  # CAP_SYS_PTRACE: docker's default drops it
    assert has_capability("CapEff:\t000001ffffffffff\n", 19)  # root
    assert not has_capability("", 19)


# --- the facts, read from real processes -------------------------------------------


@contextlib.contextmanager
def sleeping_python(*options: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """A child Python started with `options`, waiting on its stdin; its pid,
    once it runs (before that /proc shows the parent's command line)."""
    child = subprocess.Popen(
        [sys.executable, *options, "-c", "print('ready', flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_facts_of_a_child_running_this_interpreter() -> None:
    with sleeping_python() as pid:
        facts = read_facts(pid)
    assert facts.has_remote_exec == SUPPORTED
    assert facts.master_version == sys.version_info[:2]
    assert facts.worker_version == sys.version_info[:2]
    assert facts.worker_argv[1:3] == ("-c", "print('ready', flush=True); input()")
    assert facts.same_user and facts.descendant
    assert facts.worker_disable_env == os.environ.get("PYTHON_DISABLE_REMOTE_DEBUG")


def test_facts_show_a_worker_started_with_remote_debugging_off() -> None:
    with sleeping_python(
        "-X", "disable_remote_debug", env={"PYTHON_DISABLE_REMOTE_DEBUG": "1"}
    ) as pid:
        facts = read_facts(pid)
    assert facts.worker_disable_env == "1"
    assert "disable_remote_debug" in python_options(facts.worker_argv).xoptions
    # As a 3.14 master with remote debugging on would see it:
    as_314 = dataclasses.replace(facts, has_remote_exec=True, master_enabled=True)
    assert decide(as_314).reason == "the worker was started with -X disable_remote_debug"


def test_facts_of_a_process_that_is_not_this_interpreter() -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        wait_until(
            lambda: Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().startswith(b"sleep"),
            what="sleep to run",
        )
        facts = read_facts(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert facts.worker_version is None
    as_314 = dataclasses.replace(facts, has_remote_exec=True, master_enabled=True)
    assert decide(as_314).reason.startswith("the worker does not run the master's interpreter")


@without_remote_exec
def test_without_remote_exec_nothing_is_written_or_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with sleeping_python() as pid:
        verdict = RemoteExec().run(pid, lambda path: "raise SystemExit('must not run')\n")
    assert not verdict.usable
    assert verdict.reason == f"sys.remote_exec is new in Python 3.14; the master runs {THIS}"
    assert list(tmp_path.iterdir()) == []


# --- the envelope and the frames (pure) --------------------------------------------

_NO_MARKS = st.binary(max_size=300).filter(lambda data: b"poolwarden stack dump" not in data)


@given(before=_NO_MARKS, dump=_NO_MARKS, after=_NO_MARKS, other=_NO_MARKS)
def test_an_envelope_is_lifted_out_of_whatever_surrounds_it(
    before: bytes, dump: bytes, after: bytes, other: bytes
) -> None:
    data = before + wrap("00aa", other) + wrap("beef", dump) + after
    assert unwrap(data, "beef") == (dump, before + after)
    # Another request's envelope is not this one's answer, and goes too.
    assert unwrap(data, "cafe") == (None, before + after)
    assert unwrap(data, None) == (None, before + after)


def test_a_cut_envelope_is_no_answer() -> None:
    whole = wrap("beef", b"Current thread 0x1 (most recent call first):\n")
    assert unwrap(whole[:-5], "beef") == (None, whole[:-5])
    with pytest.raises(ValueError, match="lowercase hex"):
        wrap("BEEF\n", b"")


def test_the_scripts_own_frames_are_trimmed_from_the_main_thread() -> None:
    bootstrap = str(REPO / "src" / "poolwarden" / "worker" / "bootstrap.py")
    own = [StackFrame(bootstrap, 200, "dump_stacks"), StackFrame("<string>", 2, "<module>")]
    interrupted = [StackFrame("/srv/wsgi.py", 9, "serve"), StackFrame("/srv/main.py", 1, "main")]
    other = ThreadStack(2, False, [StackFrame("<string>", 1, "<module>")])
    threads = [ThreadStack(1, True, own + interrupted), other]
    assert without_script_frames(threads) == [ThreadStack(1, True, interrupted), other]
    # A signal's dump has no such frames, and keeps every one.
    signal_dump = [ThreadStack(1, True, interrupted), other]
    assert without_script_frames(signal_dump) == signal_dump


# --- the scripts, run as CPython runs them -------------------------------------------


def run_as_remote_exec(script: str, setup: str) -> subprocess.CompletedProcess[str]:
    """A child Python that does `setup`, then runs the file `script` from a
    function, `interrupted`, as CPython runs a remote_exec script there."""
    program = textwrap.dedent(
        """\
        import os, sys
        import poolwarden.worker.bootstrap as b
        {setup}
        def interrupted():
            with open({script!r}, "rb") as file:
                source = file.read()
            exec(compile(source, "<string>", "exec"), {{}})
        interrupted()
        """
    ).format(setup=setup, script=script)
    return subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_the_stack_script_writes_a_faulthandler_dump_to_the_stack_fd(tmp_path: Path) -> None:
    out = tmp_path / "stack-pipe"
    script = write_script(lambda path: stack_script(path, "0123abcd", time.monotonic() + 60))
    text = Path(script).read_text()
    compile(text, "<string>", "exec")
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o600
    assert os.path.isabs(script) and os.path.basename(script).startswith(SCRIPT_PREFIX)
    assert len(os.fsencode(script)) < 512  # the worker's buffer for the path

    setup = f"b.stack_fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT, 0o600)"
    result = run_as_remote_exec(script, setup)
    assert result.returncode == 0, result.stderr

    assert not os.path.exists(script)  # the script removed its own file
    dump, rest = unwrap(out.read_bytes(), "0123abcd")
    assert rest == b"" and dump is not None
    [main] = parse_faulthandler(dump.decode())
    assert main.current
    assert [frame.name for frame in main.frames] == [
        "dump_stacks",
        "<module>",
        "interrupted",
        "<module>",
    ]
    assert main.frames[0].filename.endswith("poolwarden/worker/bootstrap.py")
    [trimmed] = without_script_frames([main])
    assert [frame.name for frame in trimmed.frames] == ["interrupted", "<module>"]


def test_a_stack_request_reached_after_its_deadline_does_nothing(tmp_path: Path) -> None:
    out = tmp_path / "stack-pipe"
    script = write_script(lambda path: stack_script(path, "0123abcd", time.monotonic() - 1))
    setup = f"b.stack_fd = os.open({str(out)!r}, os.O_WRONLY | os.O_CREAT, 0o600)"
    result = run_as_remote_exec(script, setup)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b""
    assert not os.path.exists(script)


@pytest.mark.parametrize(("seconds", "stopped_at"), [(60, ["interrupted"]), (-1, [])])
def test_the_attach_script_stops_where_it_interrupted(
    seconds: float, stopped_at: list[str]
) -> None:
    script = write_script(lambda path: attach_script(path, time.monotonic() + seconds))
    compile(Path(script).read_text(), "<string>", "exec")
    setup = "seen = []\nb._attach = lambda frame: seen.append(frame.f_code.co_name)"
    result = run_as_remote_exec(script, setup + "\nimport atexit; atexit.register(print, seen)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{stopped_at}\n"
    assert not os.path.exists(script)


# --- StackPipe's two ways, against a child standing in for a worker -------------------


class Target:
    """`tests/apps/remote_exec_target.py` on the write end of `pipe`."""

    def __init__(self, pipe: StackPipe) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.apps.remote_exec_target", str(pipe.write_fd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(pipe.write_fd,),
            cwd=REPO,
        )
        pipe.close_write_end()
        self.pid = self.process.pid
        self._buffer = b""
        self.scripts: list[str] = []
        assert self.reply() == "ready"

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = 20.0) -> str:
        """The child's next line of output, within `timeout` seconds."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the child did not answer"
            if select.select([fd], [], [], remaining)[0]:
                chunk = os.read(fd, 4096)
                assert chunk, "the child ended"
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def request(self, command: str) -> Any:
        """A `RemoteRequest` that hands the script to the child with `command`
        ("run" or "hold") where the master would call sys.remote_exec."""

        async def request(token: str, not_after: float) -> bool:
            script = write_script(lambda path: stack_script(path, token, not_after))
            self.scripts.append(script)
            self.send(f"{command} {script}")
            return True

        return request

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def capture_from_target(scenario: Any) -> Any:
    """Run `scenario(pipe, target, loop)` on an event loop with a fresh pipe
    and target; everything is closed afterwards."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        pipe = StackPipe(loop)
        target = Target(pipe)
        try:
            return await scenario(pipe, target, loop)
        finally:
            target.close()
            pipe.close()

    return asyncio.run(main())


def _main_thread(capture: Capture) -> ThreadStack:
    [main] = [thread for thread in parse_faulthandler(capture.dump) if thread.current]
    return main


def test_a_main_thread_that_runs_the_request_answers_via_remote_exec() -> None:
    async def scenario(pipe: StackPipe, target: Target, loop: Any) -> Any:
        capture = await pipe.capture(target.pid, target.request("run"))
        assert target.reply() == "ok"
        return capture, target.scripts

    capture, scripts = capture_from_target(scenario)
    assert capture.via == "remote_exec"
    main = _main_thread(capture)
    assert [frame.name for frame in main.frames[:3]] == ["dump_stacks", "<module>", "run_script"]
    [trimmed] = without_script_frames([main])
    assert [frame.name for frame in trimmed.frames[:2]] == ["run_script", "serve"]
    assert not os.path.exists(scripts[0])


def test_a_main_thread_that_does_not_get_to_it_is_answered_by_the_signal() -> None:
    async def scenario(pipe: StackPipe, target: Target, loop: Any) -> Any:
        started = loop.time()
        capture = await pipe.capture(target.pid, target.request("hold"))
        waited = loop.time() - started
        assert target.reply() == "ok"
        # The held request runs now, after its deadline: it must add nothing.
        target.send("release")
        assert target.reply() == "ok"
        late = b""
        with contextlib.suppress(BlockingIOError):
            late = os.read(pipe.read_fd, 65536)
        return capture, waited, late, target.scripts

    capture, waited, late, scripts = capture_from_target(scenario)
    assert capture.via == "signal"
    assert waited >= REMOTE_WAIT - 0.01
    main = _main_thread(capture)
    assert main.frames[0].name == "serve"  # where the signal found it: reading stdin
    assert late == b""
    assert not os.path.exists(scripts[0])  # the late run still removed its file


def test_a_request_that_cannot_be_made_falls_back_to_the_signal_at_once() -> None:
    asked: list[str] = []

    async def refused(token: str, not_after: float) -> bool:
        asked.append(token)
        return False

    async def scenario(pipe: StackPipe, target: Target, loop: Any) -> Any:
        return await pipe.capture(target.pid, refused)

    capture = capture_from_target(scenario)
    assert len(asked) == 1
    assert capture.via == "signal"
    assert _main_thread(capture).frames[0].name == "serve"


# --- the master's side of a worker, when remote_exec is asked but does not answer ---------
#
# A real worker, spawned by a `WorkerProcess` on this test's event loop. The
# transport (`RemoteExec.run`, i.e. sys.remote_exec) cannot be had before
# 3.14, so it is stood in for: it accepts the request, and the worker's main
# thread never runs it (as when it is stuck), or it refuses. What runs for
# real is the master's side: the wait, the fall-back signal, the log.


class StandIn:
    """`RemoteExec.run` for a worker whose main thread never gets to the
    script (`verdict` usable), or that cannot be asked (not usable)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.scripts: list[tuple[int, str]] = []

    def run(self, pid: int, build: Any) -> Verdict:
        self.scripts.append((pid, build("/nonexistent/script.py")))
        return self.verdict


@contextlib.asynccontextmanager
async def in_process_worker(tmp_path: Path) -> AsyncIterator[WorkerProcess]:
    """A ready WSGI worker of `tests.apps.slow_apps:app`, killed afterwards."""
    loop = asyncio.get_running_loop()
    state_dir = tmp_path / "state"
    (state_dir / "crash").mkdir(parents=True)
    settings = PoolSettings(
        name="remote",
        app="tests.apps.slow_apps:app",
        threads=2,
        working_dir=str(REPO),
        pinging_enabled=False,
    )
    boot = ch.Boot(
        pool="remote",
        app=settings.app,
        factory=False,
        interface="auto",
        threads=2,
        crash_file="",
        access_log=False,
        access_log_format="combined",
        keepalive_timeout=75.0,
        head_limits=msgspec.to_builtins(HeadLimits()),
        scoreboard_slots=16,
        multiprocess=False,
        graceful_timeout=1.0,
        debug_dir=str(state_dir / "debug"),
    )
    ready: asyncio.Future[None] = loop.create_future()
    ended: asyncio.Future[None] = loop.create_future()
    access_log = os.open(os.devnull, os.O_WRONLY)
    worker = WorkerProcess(
        loop,
        settings,
        boot=boot,
        state_dir=str(state_dir),
        access_log_fd=access_log,
        on_ready=lambda worker: ready.set_result(None),
        on_startup_failed=lambda worker, failure: ready.set_exception(AssertionError(failure)),
        on_exit=lambda worker: ended.set_result(None),
    )
    worker.spawn()
    try:
        await asyncio.wait_for(ready, 30)
        yield worker
    finally:
        worker.kill()
        await asyncio.wait_for(ended, 30)
        os.close(access_log)


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    """Wait, on the event loop, until `condition()`; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_an_unanswered_request_is_followed_by_the_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stand_in = StandIn(Verdict(True, "usable"))
    monkeypatch.setattr(remote_exec, "SUPPORTED", True)
    monkeypatch.setattr(RemoteExec, "run", stand_in.run)
    caplog.set_level(logging.INFO, logger="poolwarden")

    async def scenario() -> Any:
        async with in_process_worker(tmp_path) as worker:
            started = time.monotonic()
            captured = await worker.capture_stacks()
            waited = time.monotonic() - started
            worker.attach()
            await until(lambda: worker.debug_address, "the worker to listen for a debugger")
            return worker.python_pid, captured, waited

    pid, captured, waited = asyncio.run(scenario())
    assert captured.via == "signal"
    assert waited >= REMOTE_WAIT - 0.01
    assert any(frame.name == "serve" for thread in captured.threads for frame in thread.frames)
    [(stack_pid, stack), (attach_pid, attach)] = stand_in.scripts
    assert stack_pid == attach_pid == pid
    assert "b.dump_stacks(" in stack and "b.attach_debugger(" in attach
    messages = [record.getMessage() for record in caplog.records]
    assert f"pool remote: worker {pid}: attaching a debugger via remote_exec" in messages
    assert (
        f"pool remote: worker {pid}: attaching a debugger via signal "
        f"(no answer to remote_exec within {REMOTE_WAIT:g}s)"
    ) in messages


def test_a_request_that_cannot_be_made_means_the_signal_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    why = "kernel.yama.ptrace_scope is 3: no process may ptrace another"
    stand_in = StandIn(Verdict(False, why))
    monkeypatch.setattr(remote_exec, "SUPPORTED", True)
    monkeypatch.setattr(RemoteExec, "run", stand_in.run)
    caplog.set_level(logging.INFO, logger="poolwarden")

    async def scenario() -> Any:
        async with in_process_worker(tmp_path) as worker:
            captured = await worker.capture_stacks()
            worker.attach()
            await until(lambda: worker.debug_address, "the worker to listen for a debugger")
            return worker.python_pid, captured

    pid, captured = asyncio.run(scenario())
    assert captured.via == "signal" and captured.threads
    assert len(stand_in.scripts) == 2
    messages = [record.getMessage() for record in caplog.records]
    assert f"pool remote: worker {pid}: attaching a debugger via signal ({why})" in messages
    assert not any("via remote_exec" in message for message in messages)


# --- real servers without sys.remote_exec -------------------------------------------

CLEAN_ENV = {"POOLWARDEN_CONFIG": None, "POOLWARDEN_STATE_DIR": None, "COLUMNS": "200"}


def _config() -> str:
    return one_pool_config(
        "slow",
        "tests.apps.slow_apps:app",
        'start_mode = "always_running"\nthreads = 2\n'
        '[pools.slow.process_model]\nshutdown_time_limit = "1s"\n',
    )


def stack_json(server: Server, target: str) -> dict[str, Any]:
    group = click.Group("poolwarden")
    register(group)
    result: Result = CliRunner().invoke(
        group, ["stack", target, "--json", "--state-dir", str(server.state_dir)], env=CLEAN_ENV
    )
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def attach_and_detach(server: Server, pid: int) -> str:
    """`poolwarden debug attach PID`, `where`, `detach`; what the client printed."""
    attach = subprocess.run(
        [*POOLWARDEN, "debug", "attach", str(pid), "--state-dir", str(server.state_dir)],
        input="where\ndetach\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert attach.returncode == 0, attach.stderr
    return attach.stdout


@without_remote_exec
def test_without_remote_exec_stack_and_attach_take_the_signal(start_serve: Any) -> None:
    server = start_serve(_config())
    [pid] = server.wait_for_workers(1)

    body = stack_json(server, str(pid))
    assert body["via"] == "signal"
    assert any(thread["current"] for thread in body["threads"])
    assert [worker["via"] for worker in stack_json(server, "slow")["workers"]] == ["signal"]

    assert "(Pdb)" in attach_and_detach(server, pid)
    server.wait_for_stderr(
        rf"worker {pid}: attaching a debugger via signal "
        r"\(sys\.remote_exec is new in Python 3\.14\)"
    )


# --- the real remote_exec path (Python 3.14+) -----------------------------------------


def _usable_or_skip(pid: int) -> None:
    verdict = decide(read_facts(pid))
    if not verdict.usable:
        pytest.skip(f"sys.remote_exec cannot reach worker {pid} here: {verdict.reason}")


@needs_remote_exec
def test_real_remote_exec_runs_the_stack_script_in_a_python_process() -> None:
    async def scenario(pipe: StackPipe, target: Target, loop: Any) -> Any:
        _usable_or_skip(target.pid)
        remote = RemoteExec()

        async def request(token: str, not_after: float) -> bool:
            verdict = await asyncio.to_thread(
                remote.run, target.pid, lambda path: stack_script(path, token, not_after)
            )
            assert verdict.usable, verdict.reason
            target.send("noop")  # its main thread waits in a read: wake it
            return True

        capture = await pipe.capture(target.pid, request)
        assert target.reply() == "ok"
        return capture

    capture = capture_from_target(scenario)
    assert capture.via == "remote_exec"
    assert _main_thread(capture).frames[0].name == "dump_stacks"


@needs_remote_exec
def test_real_remote_exec_stack_and_attach_of_an_idle_wsgi_worker(start_serve: Any) -> None:
    server = start_serve(_config())
    [pid] = server.wait_for_workers(1)
    _usable_or_skip(pid)

    body = stack_json(server, str(pid))
    assert body["via"] == "remote_exec"
    [main] = [thread for thread in body["threads"] if thread["current"]]
    names = [frame["name"] for frame in main["frames"]]
    assert "dump_stacks" not in names and names[0] != "<module>"
    assert "serve" in names  # the WSGI server's main thread, between two waits

    assert "(Pdb)" in attach_and_detach(server, pid)
    server.wait_for_stderr(rf"worker {pid}: attaching a debugger via remote_exec")


@needs_remote_exec
def test_real_remote_exec_falls_back_to_the_signal_for_a_worker_spinning_in_c(
    start_serve: Any,
) -> None:
    server = start_serve(_config())
    [pid] = server.wait_for_workers(1)
    _usable_or_skip(pid)

    def spin() -> None:
        with contextlib.suppress(OSError):
            server.get("/spin", timeout=120)

    threading.Thread(target=spin, daemon=True).start()

    def spinning() -> dict[str, Any] | None:
        started = time.monotonic()
        body = stack_json(server, str(pid))
        assert time.monotonic() - started < 3.0
        return body if "spin_in_c_holding_the_gil" in body["text"] else None

    body = wait_until(spinning, what="the spinning frame")
    assert isinstance(body, dict)
    # Its main thread waits for the GIL the spinning thread holds: it never
    # runs the script, and the signal answers.
    assert body["via"] == "signal"
