"""How a worker's end is classified: every row of the issue's table, with real evidence.

The evidence is real where it can be: faulthandler dumps from processes that
crash with SIGSEGV, SIGBUS, SIGFPE, SIGABRT and SIGILL (and a hung one that
poolwarden would SIGABRT), exit statuses and output of real processes, start-up
failures from the real importer, tracebacks from real exceptions. Then the
whole input space is walked for the rules that must always hold: every id is
in the catalog, the message says who ended it, nothing is guessed, and the
fingerprint holds nothing that changes between repeats.
"""

from __future__ import annotations

import itertools
import json
import re
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.channel import Frame, StartupFailure
from poolwarden.events.catalog import CATALOG, KNOWN_IDS
from poolwarden.events.classify import (
    PLANNED,
    REASONS,
    Classification,
    WorkerEnd,
    classify,
    classify_thread_exception,
    frame_key,
    normalize_line,
    parse_crash_dump,
    parse_traceback,
    short_path,
)
from poolwarden.importer import AppLoadError, load_app

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 10.0

APP = """\
import ctypes, os, signal, sys, threading, time

started = threading.Event()


def background(mode):
    started.set()
    if mode == "hang":  # say "ready" only once the main thread is stuck where it hangs
        main = threading.main_thread().ident
        while sys._current_frames()[main].f_code.co_name != "stuck":
            time.sleep(0.001)
        print("ready", flush=True)
    time.sleep(60)


def stuck():
    time.sleep(60)  # HANG HERE


def crash(mode):
    if mode == "segv":
        ctypes.string_at(0)  # SEGV HERE
    elif mode == "hang":
        stuck()
    else:
        os.kill(os.getpid(), getattr(signal, "SIG" + mode.upper()))  # KILL HERE


def handle_request(mode):
    crash(mode)


threading.Thread(target=background, args=(sys.argv[1],), name="poller", daemon=True).start()
started.wait()
handle_request(sys.argv[1])
"""


def line_of(marker: str) -> int:
    return next(n for n, line in enumerate(APP.splitlines(), 1) if marker in line)


@dataclass
class Crash:
    returncode: int
    dump: str
    app_file: str


def run_app(app_file: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", str(app_file), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Crash]:
    """Real faulthandler dumps, one per crash signal, plus a second SIGSEGV
    (other addresses, same crash) and a hung process SIGABRTed as poolwarden
    would."""
    app_dir = tmp_path_factory.mktemp("srv") / "shop"
    app_dir.mkdir()
    app_file = app_dir / "views.py"
    app_file.write_text(APP)
    modes = ["segv", "segv", "bus", "fpe", "abrt", "ill"]
    processes = [run_app(app_file, mode) for mode in modes]
    hung = run_app(app_file, "hang")
    try:
        assert hung.stdout is not None
        ready, _, _ = select.select([hung.stdout], [], [], DEADLINE)
        assert ready and hung.stdout.readline().strip() == "ready"
        hung.send_signal(signal.SIGABRT)
    finally:
        results = [finish(process) for process in [*processes, hung]]
    found: dict[str, Crash] = {}
    for mode, (returncode, _stdout, stderr) in zip(
        [*modes[:1], "segv2", *modes[2:], "hang"], results, strict=True
    ):
        found[mode] = Crash(returncode, stderr, str(app_file))
    return found


def end(**fields: Any) -> WorkerEnd:
    base: dict[str, Any] = {"pool": "web", "pid": 4242, "returncode": 0, "ever_ready": True}
    return WorkerEnd(**{**base, **fields})


def assert_one_line(result: Classification) -> None:
    assert "\n" not in result.message
    assert result.who is not None and f"ended by {result.who}" in result.message


# --- the faulthandler dump -------------------------------------------------------------


def test_parse_a_real_segfault_dump(crashes: dict[str, Crash]) -> None:
    crash = crashes["segv"]
    assert crash.returncode == -signal.SIGSEGV
    dump = parse_crash_dump(crash.dump)
    assert dump is not None
    assert (dump.fatal_error, dump.signal) == ("Segmentation fault", "SIGSEGV")
    assert len(dump.threads) == 2
    current = dump.current_thread
    assert current is not None and current.current
    assert current.frames[0].name == "string_at"  # ctypes: a library frame, not the app's
    assert dump.innermost_frame() == current.frames[0]
    app_frame = dump.app_frame()
    assert app_frame is not None
    assert (app_frame.filename, app_frame.lineno, app_frame.name) == (
        crash.app_file,
        line_of("SEGV HERE"),
        "crash",
    )
    other = next(thread for thread in dump.threads if not thread.current)
    assert other.frames[-1].name == "_bootstrap"  # outermost last, as printed
    assert any(frame.name == "background" for frame in other.frames)


def test_parse_takes_the_last_fatal_error_and_tolerates_odd_lines() -> None:
    text = (
        "Thread 0x00007f0000000001 (most recent call first):\n"
        '  File "/srv/a.py", line 1 in old\n'
        "\n"
        "Fatal Python error: Aborted\n"
        "\n"
        "Current thread 0x00007f0000000002 (most recent call first):\n"
        '  File "/srv/app/x.py", line 9 in f\n'
        "  File ???, line ??? in ???\n"
        "  <no Python frame>\n"
        "  ...\n"
        "\n"
        "Extension modules: numpy.core._multiarray_umath (total: 1)\n"
    )
    dump = parse_crash_dump(text)
    assert dump is not None and dump.signal == "SIGABRT"
    assert [thread.ident for thread in dump.threads] == ["0x00007f0000000002"]
    assert dump.threads[0].frames == [
        Frame(filename="/srv/app/x.py", lineno=9, name="f"),
        Frame(filename="???", lineno=0, name="???"),
    ]
    stack = parse_crash_dump('Stack (most recent call first):\n  File "/a/b.py", line 3 in g\n')
    assert stack is not None and stack.fatal_error is None and stack.current_thread is not None
    assert stack.innermost_frame() == Frame(filename="/a/b.py", lineno=3, name="g")
    assert parse_crash_dump("") is None
    assert parse_crash_dump("some unrelated text\n") is None


frame_names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
frames = st.builds(
    Frame,
    filename=st.from_regex(r"/[a-z]{1,8}(/[a-z]{1,8}){0,3}\.py", fullmatch=True),
    lineno=st.integers(1, 99999),
    name=st.one_of(frame_names, st.just("<module>")),
)


@settings(max_examples=100, deadline=None)
@given(
    fatal=st.sampled_from(
        [
            "Segmentation fault",
            "Bus error",
            "Floating point exception",
            "Aborted",
            "Illegal instruction",
        ]
    ),
    threads=st.lists(st.lists(frames, max_size=6), min_size=1, max_size=4),
    current=st.integers(0, 3),
)
def test_parse_reads_back_what_faulthandler_writes(
    fatal: str, threads: list[list[Frame]], current: int
) -> None:
    current %= len(threads)
    parts = [f"Fatal Python error: {fatal}", ""]
    for index, thread_frames in enumerate(threads):
        kind = "Current thread" if index == current else "Thread"
        parts.append(f"{kind} 0x{index + 0x7F00:016x} (most recent call first):")
        parts += [f'  File "{f.filename}", line {f.lineno} in {f.name}' for f in thread_frames]
        parts.append("")
    dump = parse_crash_dump("\n".join(parts))
    assert dump is not None and dump.fatal_error == fatal and dump.signal is not None
    assert [thread.frames for thread in dump.threads] == threads
    assert dump.current_thread == dump.threads[current]


# --- row: killed by a crash signal, with the faulthandler dump ----------------------------------


@pytest.mark.parametrize("mode", ["segv", "bus", "fpe", "abrt", "ill"])
def test_a_crash_signal_names_the_signal_and_the_apps_frame(
    crashes: dict[str, Crash], mode: str
) -> None:
    crash = crashes[mode]
    name = "SIG" + mode.upper()
    assert crash.returncode == -signal.Signals[name]
    result = classify(
        end(
            returncode=crash.returncode,
            crash_dump=crash.dump,
            uptime=185.0,
            requests_served=120,
            last_rss=50_000_000,
            in_flight=[
                {
                    "method": "GET",
                    "path": "/chart",
                    "client": "10.0.0.7:5511",
                    "elapsed": 0.02,
                    "response_started": False,
                }
            ],
        )
    )
    assert_one_line(result)
    assert result.event_id == 5009 and result.level == "error" and result.counts_as_failure
    assert result.who == f"the worker itself (crashed with {name})"
    line = line_of("SEGV HERE" if mode == "segv" else "KILL HERE")
    assert f"crashed with {name} at shop/views.py:{line} in crash" in result.message
    assert "after 3m5s and 120 requests" in result.message
    crash_details = result.details["crash"]
    assert crash_details["signal"] == name
    assert crash_details["frame"] == {"filename": crash.app_file, "lineno": line, "name": "crash"}
    assert crash_details["dump"] == crash.dump
    assert result.details["signal"] == name and result.details["exit_code"] is None
    assert result.details["in_flight"][0]["path"] == "/chart"
    assert result.details["last_rss"] == 50_000_000
    assert result.fingerprint == f"{name} shop/views.py:{line} in crash"


def test_the_same_crash_twice_has_the_same_fingerprint(crashes: dict[str, Crash]) -> None:
    first, second = crashes["segv"], crashes["segv2"]
    assert first.dump != second.dump  # thread addresses differ
    a = classify(end(pid=1, returncode=first.returncode, crash_dump=first.dump, uptime=3.0))
    b = classify(end(pid=2, returncode=second.returncode, crash_dump=second.dump, uptime=900.0))
    assert a.fingerprint == b.fingerprint
    assert "0x" not in (a.fingerprint or "")


def test_a_crash_at_import_is_a_startup_failure_with_the_dump() -> None:
    process = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", "import tests.apps.broken_segfault"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert process.returncode == -signal.SIGSEGV
    result = classify(
        end(returncode=process.returncode, crash_dump=process.stderr, ever_ready=False)
    )
    assert_one_line(result)
    assert result.event_id == 2022 and result.counts_as_failure
    assert (
        "ended before it was ready: crashed with SIGSEGV at apps/broken_segfault.py"
        in result.message
    )
    assert result.details["crash"]["frame"]["name"] == "load_native_library"
    assert result.fingerprint is not None
    assert result.fingerprint.startswith("startup SIGSEGV apps/broken_segfault.py:")


def test_a_crash_without_app_frames_uses_the_innermost_frame() -> None:
    process = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)"],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    result = classify(end(returncode=process.returncode, crash_dump=process.stderr))
    assert result.details["crash"]["frame"] is None
    assert result.details["crash"]["innermost_frame"]["name"] == "string_at"
    assert result.fingerprint is not None
    assert re.fullmatch(r"SIGSEGV ctypes/__init__\.py:\d+ in string_at", result.fingerprint)


def test_a_crash_without_a_dump_says_so() -> None:
    result = classify(end(returncode=-signal.SIGSEGV))
    assert result.fingerprint == "SIGSEGV no crash dump"
    assert "crash" not in result.details
    assert result.who == "the worker itself (crashed with SIGSEGV)"


# --- row: the app raised while starting -------------------------------------------------------


def real_startup_failure() -> StartupFailure:
    with pytest.raises(AppLoadError) as caught:
        load_app("tests.apps.broken_nested:app")
    return caught.value.failure


def test_a_reported_startup_failure_names_module_line_and_exception() -> None:
    failure = real_startup_failure()
    assert failure.module == "tests.apps.broken_helper" and failure.lineno
    result = classify(end(returncode=3, startup_failure=failure, ever_ready=False))
    assert_one_line(result)
    assert result.event_id == 2022 and result.level == "error" and result.counts_as_failure
    assert result.who == "the worker itself (exit status 3)"
    assert "tests.apps.broken_helper" in result.message
    assert "RuntimeError: the helper exploded" in result.message
    details = result.details["startup_failure"]
    assert details["phase"] == "import" and details["exception_type"] == "RuntimeError"
    assert details["module"] == "tests.apps.broken_helper"
    assert "Traceback (most recent call last)" in details["traceback"]
    assert result.fingerprint == (
        f"startup import RuntimeError tests.apps.broken_helper:{failure.lineno}"
    )


@pytest.mark.parametrize("phase", ["import", "attribute", "factory", "interface", "lifespan"])
def test_every_startup_phase_is_a_startup_failure(phase: str) -> None:
    failure = StartupFailure(
        phase=phase, app="shop.app:make", exception_type="OSError", message="db down\nretry"
    )
    result = classify(end(returncode=3, startup_failure=failure, ever_ready=False))
    assert result.event_id == 2022 and result.counts_as_failure
    assert f"({phase} failed)" in result.message and "db down retry" in result.message
    assert result.fingerprint == f"startup {phase} OSError shop.app:make"


# --- row: a Python exception escaped into the runtime -------------------------------------------


def raise_in(filename: str, code: str) -> str:
    """The traceback text of `code` run as if it were the file `filename`."""
    try:
        exec(compile(code, filename, "exec"), {})
    except BaseException as error:
        return "".join(traceback.format_exception(error))
    raise AssertionError("did not raise")


def test_an_exception_in_the_runtime_is_an_unexpected_exit_with_its_traceback() -> None:
    text = raise_in("/srv/shop/views.py", "def index():\n    return {}['user']\nindex()\n")
    result = classify(end(returncode=1, unexpected_exception=text, uptime=2.0))
    assert_one_line(result)
    assert result.event_id == 5009 and result.counts_as_failure
    assert result.who == "the worker itself (an unhandled KeyError, exit status 1)"
    assert "KeyError: 'user' at shop/views.py:2 in index" in result.message
    exception = result.details["exception"]
    assert exception["type"] == "KeyError" and exception["message"] == "'user'"
    assert exception["frame"] == {"filename": "/srv/shop/views.py", "lineno": 2, "name": "index"}
    assert exception["traceback"] == text
    assert result.fingerprint == "exception KeyError shop/views.py:2 in index"


def test_parse_traceback_reads_chains_syntax_errors_and_multiline_messages() -> None:
    chained = raise_in(
        "/srv/app/a.py",
        "try:\n    1/0\nexcept Exception:\n    raise ValueError('bad\\nvalue')\n",
    )
    parsed = parse_traceback(chained)
    assert parsed.exception_type == "ValueError" and parsed.message == "bad\nvalue"
    assert parsed.frames[-1].lineno == 4  # the last exception's frames only
    syntax = raise_in("/srv/app/b.py", "x = (\n")
    parsed = parse_traceback(syntax)
    assert parsed.exception_type == "SyntaxError"
    assert parsed.frames[-1].filename == "/srv/app/b.py" and parsed.frames[-1].name == "<module>"
    assert parse_traceback("garbage").exception_type is None


# --- row: the process exited on its own ------------------------------------------------------------


@pytest.mark.parametrize(
    "code,status",
    [
        (
            "import sys; print('serving'); print('fatal: cannot bind 10.0.0.1:8080', file=sys.stderr); sys.exit(7)",
            7,
        ),
        (
            "import os, sys; print('serving', flush=True); print('fatal: cannot bind 10.0.0.1:8080', file=sys.stderr, flush=True); os._exit(4)",
            4,
        ),
    ],
)
def test_an_exit_names_the_status_and_the_last_output(code: str, status: int) -> None:
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE
    )
    assert process.returncode == status
    result = classify(
        end(
            returncode=process.returncode,
            stdout_tail=process.stdout.splitlines(),
            stderr_tail=process.stderr.splitlines(),
        )
    )
    assert_one_line(result)
    assert result.event_id == 5009 and result.counts_as_failure
    assert result.who == f"the worker itself (exit status {status})"
    assert "last stderr line: fatal: cannot bind 10.0.0.1:8080" in result.message
    assert result.details["exit_code"] == status and result.details["signal"] is None
    assert result.details["stdout_tail"] == ["serving"]
    assert result.details["stderr_tail"] == ["fatal: cannot bind 10.0.0.1:8080"]
    assert result.fingerprint == f"exit {status}: fatal: cannot bind N.N.N.N:N"


def test_an_exit_before_ready_without_a_report_is_a_startup_failure() -> None:
    process = subprocess.run(
        [sys.executable, "-c", "import tests.apps.broken_exit"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert process.returncode == 7
    result = classify(end(returncode=7, ever_ready=False))
    assert result.event_id == 2022 and result.counts_as_failure
    assert result.who == "the worker itself (exit status 7)"
    assert result.fingerprint == "startup exit 7"


def test_an_exit_keeps_only_the_last_tail_lines() -> None:
    lines = [f"line {n}" for n in range(500)]
    result = classify(end(returncode=1, stderr_tail=lines, stdout_tail=["x" * 5000]))
    assert result.details["stderr_tail"] == lines[-200:]
    assert len(result.details["stdout_tail"][0]) == 2000


# --- row: SIGKILL not sent by poolwarden, and the OOM killer ------------------------------------


def test_sigkill_from_outside_never_guesses() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process.kill()
    assert process.wait(timeout=DEADLINE) == -signal.SIGKILL
    result = classify(end(returncode=process.returncode, last_rss=123_456_789))
    assert_one_line(result)
    assert result.event_id == 5009 and result.counts_as_failure
    assert result.who == "another process (SIGKILL from outside)"
    assert not re.search(r"oom|memory|perhaps|probably|maybe|likely", result.message, re.I)
    assert result.details["oom_killed"] is None and result.details["last_rss"] == 123_456_789
    assert result.fingerprint == "SIGKILL from outside"


def test_the_oom_killer_only_with_evidence() -> None:
    yes = classify(end(returncode=-9, oom_killed=True, last_rss=2_000_000_000))
    assert_one_line(yes)
    assert yes.event_id == 2024 and yes.counts_as_failure
    assert yes.who == "the kernel's OOM killer"
    assert "last RSS 2000000000 bytes" in yes.message
    assert yes.fingerprint == "oom_kill" and yes.details["oom_killed"] is True
    no = classify(end(returncode=-9, oom_killed=False))
    assert (
        no.event_id == 5009
        and no.who == "another process (SIGKILL from outside; not the OOM killer)"
    )


def test_a_known_sender_is_named_but_kept_out_of_the_fingerprint() -> None:
    result = classify(end(returncode=-15, signal_sender="pid 77 (deploy.sh)"))
    assert result.who == "another process (SIGTERM from pid 77 (deploy.sh))"
    assert result.fingerprint == "SIGTERM from another process"
    crash = classify(end(returncode=-11, signal_sender="pid 77 (kill)"))
    assert crash.who == "another process (SIGSEGV from pid 77 (kill))"


# --- row: the channel broke while the process lived ------------------------------------------------


def test_a_broken_channel_is_5011() -> None:
    result = classify(
        end(returncode=-9, signals_sent=[signal.SIGKILL], channel_broken_while_alive=True)
    )
    assert_one_line(result)
    assert result.event_id == 5011 and result.counts_as_failure
    assert result.who == "poolwarden (the channel broke; SIGKILL)"
    assert result.fingerprint == "channel_broken"
    itself = classify(end(returncode=1, channel_broken_while_alive=True))
    assert itself.event_id == 5011 and itself.who == "the worker itself (exit status 1)"


def test_malformed_channel_data_is_5127() -> None:
    result = classify(
        end(returncode=-9, signals_sent=[signal.SIGKILL], malformed_channel_data="not msgpack")
    )
    assert result.event_id == 5127 and result.counts_as_failure
    assert "(not msgpack)" in result.message
    assert result.details["malformed_channel_data"] == "not msgpack"


# --- row: an exception escaped an app thread -------------------------------------------------------


def test_an_app_thread_exception_is_a_warning_and_the_worker_lives() -> None:
    caught: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        assert args.exc_value is not None
        caught.append("".join(traceback.format_exception(args.exc_value)))

    namespace: dict[str, Any] = {}
    exec(
        compile("def poll():\n    raise TimeoutError('queue')\n", "/srv/shop/jobs.py", "exec"),
        namespace,
    )
    previous = threading.excepthook
    threading.excepthook = hook
    try:
        thread = threading.Thread(target=namespace["poll"], name="Thread-7 (poll)")
        thread.start()
        thread.join(DEADLINE)
    finally:
        threading.excepthook = previous
    (text,) = caught
    result = classify_thread_exception("web", 4242, "Thread-7 (poll)", text)
    assert result.event_id == 2025 and result.level == "warning"
    assert not result.counts_as_failure and result.who is None
    assert result.message == (
        "worker 4242 of pool web: thread 'Thread-7 (poll)' ended with TimeoutError: queue "
        "at shop/jobs.py:2 in poll; the worker lives on"
    )
    assert result.details["thread"] == "Thread-7 (poll)"
    assert result.details["exception"]["traceback"] == text
    assert result.fingerprint == "thread_exception TimeoutError shop/jobs.py:2 in poll"
    other = classify_thread_exception("web", 9, "Thread-8 (poll)", text)
    assert other.fingerprint == result.fingerprint
    given_fields = classify_thread_exception(
        "web", 4242, "Thread-7 (poll)", text, exception_type="TimeoutError", message="queue"
    )
    assert given_fields == result


# --- ended by poolwarden -------------------------------------------------------------------------------


def test_a_hang_is_5010_with_the_stack_where_it_hung(crashes: dict[str, Crash]) -> None:
    crash = crashes["hang"]
    assert crash.returncode == -signal.SIGABRT
    result = classify(
        end(
            returncode=crash.returncode,
            ended_by="hang",
            signals_sent=[signal.SIGABRT, signal.SIGKILL],
            crash_dump=crash.dump,
        )
    )
    assert_one_line(result)
    assert result.event_id == 5010 and result.counts_as_failure
    assert result.who == "poolwarden (no answer to a ping; SIGABRT)"
    line = line_of("HANG HERE")
    assert result.fingerprint == f"hang shop/views.py:{line} in stuck"
    assert result.details["crash"]["frame"]["lineno"] == line


def test_the_startup_time_limit_is_5012() -> None:
    result = classify(
        end(returncode=-9, ended_by="startup_time_limit", signals_sent=[9], ever_ready=False)
    )
    assert result.event_id == 5012 and result.counts_as_failure
    assert result.who == "poolwarden (start-up time limit; SIGKILL)"
    assert result.fingerprint == "startup_time_limit"


@pytest.mark.parametrize("reason", sorted(PLANNED))
def test_a_planned_end_is_2023_and_not_a_failure(reason: str) -> None:
    clean = classify(end(returncode=0, ended_by=reason, uptime=29 * 3600.0, requests_served=1))
    assert_one_line(clean)
    assert clean.event_id == 2023 and clean.level == "info" and not clean.counts_as_failure
    assert clean.who == f"poolwarden ({REASONS[reason]})"
    assert clean.fingerprint is None
    assert "after 1d5h and 1 request;" in clean.message
    termed = classify(end(returncode=-15, ended_by=reason, signals_sent=[15]))
    assert termed.event_id == 2023 and termed.who == f"poolwarden ({REASONS[reason]}); SIGTERM"


@pytest.mark.parametrize("reason", sorted(PLANNED))
def test_a_kill_at_the_shutdown_time_limit_is_5013(reason: str) -> None:
    result = classify(
        end(
            returncode=-9,
            ended_by=reason,
            signals_sent=[15, 9],
            in_flight=[{"method": "POST", "path": "/upload", "elapsed": 95.0}],
        )
    )
    assert_one_line(result)
    assert result.event_id == 5013 and result.level == "warning" and not result.counts_as_failure
    assert result.who == f"poolwarden ({REASONS[reason]}; SIGKILL at the shut-down time limit)"
    assert "1 request(s) in flight" in result.message


def test_a_crash_while_draining_is_5009_but_does_not_count(crashes: dict[str, Crash]) -> None:
    crash = crashes["segv"]
    result = classify(end(returncode=crash.returncode, ended_by="recycle", crash_dump=crash.dump))
    assert result.event_id == 5009 and not result.counts_as_failure
    assert "while being asked to end (recycle)" in result.message
    assert result.who == "the worker itself (crashed with SIGSEGV)"
    oom = classify(end(returncode=-9, ended_by="shutdown", oom_killed=True))
    assert oom.event_id == 2024 and not oom.counts_as_failure


def test_a_kill_for_a_request_time_out_is_2040_and_not_a_failure() -> None:
    result = classify(end(returncode=-9, ended_by="request_timeout", signals_sent=[9]))
    assert result.event_id == 2040
    assert not result.counts_as_failure
    assert "request_timeout" in result.message
    assert result.who.startswith("poolwarden (a request past request_timeout; SIGKILL")


def test_the_memory_hard_limit_is_2026() -> None:
    result = classify(
        end(returncode=-9, ended_by="memory_hard_limit", signals_sent=[9], last_rss=3 << 30)
    )
    assert result.event_id == 2026 and not result.counts_as_failure
    assert result.who == "poolwarden (memory hard limit; SIGKILL)"
    assert f"({3 << 30} bytes resident)" in result.message


def test_an_odd_uptime_is_not_a_crash_of_the_classifier() -> None:
    for uptime in (float("inf"), float("nan"), -1.0):
        assert (
            "after an unknown time and 0 requests"
            in classify(end(returncode=1, uptime=uptime)).message
        )


def test_an_unasked_exit_zero_is_still_unexpected() -> None:
    result = classify(end(returncode=0))
    assert result.event_id == 5009 and result.counts_as_failure
    assert result.who == "the worker itself (exit status 0)"


def test_to_an_event() -> None:
    result = classify(end(returncode=-9))
    event = result.new_event(time=12.5)
    assert (event.event_id, event.pool, event.pid, event.time) == (5009, "web", 4242, 12.5)
    assert event.message == result.message and event.fingerprint == result.fingerprint
    assert event.details == result.details


# --- the rules, over the whole input space --------------------------------------------------------

FAILURE = StartupFailure(
    phase="import",
    app="shop:app",
    exception_type="ImportError",
    message="x",
    module="shop",
    lineno=3,
)
SEGV_DUMP = (
    "Fatal Python error: Segmentation fault\n\n"
    "Current thread 0x00007f1234567890 (most recent call first):\n"
    '  File "/srv/shop/ext.py", line 12 in call\n'
)
EXCEPTION = (
    'Traceback (most recent call last):\n  File "/srv/shop/a.py", line 5, in f\nValueError: v\n'
)
RETURNCODES = [0, 1, 3, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGKILL, -signal.SIGTERM]
ENDED_BY: list[Any] = [None, *REASONS]
SIGNALS_SENT = [[], [signal.SIGTERM], [signal.SIGABRT, signal.SIGKILL], [signal.SIGKILL]]
PID = 987654


def all_ends() -> Iterator[WorkerEnd]:
    for (
        returncode,
        ended_by,
        signals_sent,
        failure,
        ever_ready,
        broken,
        oom,
        exception,
    ) in itertools.product(
        RETURNCODES,
        ENDED_BY,
        SIGNALS_SENT,
        [None, FAILURE],
        [False, True],
        [False, True],
        [None, False, True],
        [None, EXCEPTION],
    ):
        yield WorkerEnd(
            pool="web",
            pid=PID,
            returncode=returncode,
            ended_by=ended_by,
            signals_sent=signals_sent,
            startup_failure=failure,
            ever_ready=ever_ready,
            channel_broken_while_alive=broken,
            oom_killed=oom,
            unexpected_exception=exception,
            crash_dump=SEGV_DUMP if returncode == -signal.SIGSEGV else None,
            stderr_tail=["error at 0x7fff0000 in 987654"],
            last_rss=111_222_333,
            uptime=4321.5,
            requests_served=77,
        )


def test_every_end_obeys_the_rules() -> None:
    seen_ids: set[int] = set()
    count = 0
    for worker_end in all_ends():
        count += 1
        result = classify(worker_end)
        seen_ids.add(result.event_id)
        context = msgspec.to_builtins(worker_end)
        # every id it emits is in the catalog, with the catalog's level
        assert result.event_id in KNOWN_IDS, context
        assert result.level == CATALOG[result.event_id].level
        # one line, saying who ended it
        assert_one_line(result)
        who = result.who or ""
        assert who.startswith(
            ("the worker itself", "poolwarden (", "another process (", "the kernel's OOM killer")
        ), (who, context)
        signal_number = -worker_end.returncode if worker_end.returncode < 0 else None
        if signal_number is not None and signal_number in worker_end.signals_sent:
            assert who.startswith("poolwarden"), context
        # never a guess; the OOM killer only on the kernel's word
        assert not re.search(r"perhaps|probably|maybe|likely|\?", result.message, re.I), context
        oom_claimed = "the kernel's OOM killer" in result.message
        if result.event_id == 2024:
            assert oom_claimed and who == "the kernel's OOM killer", context
        if oom_claimed:
            assert worker_end.oom_killed is True and worker_end.returncode == -signal.SIGKILL
            assert signal.SIGKILL not in worker_end.signals_sent, context
        if worker_end.oom_killed is None:
            assert "OOM" not in result.message
            if worker_end.ended_by != "memory_hard_limit":
                assert "memory" not in result.message
        # failures count, planned work does not (the table's last column)
        asked = worker_end.ended_by in PLANNED
        oom = (
            worker_end.oom_killed is True
            and worker_end.returncode == -signal.SIGKILL
            and signal.SIGKILL not in worker_end.signals_sent
        )
        if worker_end.startup_failure is not None or worker_end.ended_by in (
            "hang",
            "startup_time_limit",
        ):
            expected = True
        elif worker_end.ended_by == "orphan_reaped":
            expected = False  # counted once, when the orphan was kept
        elif oom:
            expected = not asked
        elif worker_end.channel_broken_while_alive:
            expected = True
        else:
            expected = not asked and worker_end.ended_by not in (
                "memory_hard_limit",
                "request_timeout",
            )
        assert result.counts_as_failure == expected, context
        # the fingerprint: only failures have one; nothing in it changes between repeats
        if result.event_id == 2023:
            assert result.fingerprint is None
        else:
            assert result.fingerprint, context
            assert str(PID) not in result.fingerprint and "0x" not in result.fingerprint
            assert "4321" not in result.fingerprint and "111222333" not in result.fingerprint
        # the evidence is JSON
        json.dumps(result.details)
        assert result.details.get("last_rss") == 111_222_333
        assert result.details["uptime"] == 4321.5 and result.details["requests_served"] == 77
    assert count == len(RETURNCODES) * len(ENDED_BY) * len(SIGNALS_SENT) * 2 * 2 * 2 * 3 * 2
    assert seen_ids == {2022, 2023, 2024, 2026, 2040, 5009, 5010, 5011, 5012, 5013}


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(list(itertools.islice(all_ends(), 0, None, 37))),
    pid=st.integers(1, 4_000_000),
    uptime=st.floats(0, 1e7),
    requests=st.integers(0, 10**9),
    rss=st.one_of(st.none(), st.integers(0, 1 << 40)),
    in_flight=st.lists(
        st.fixed_dictionaries(
            {"method": st.sampled_from(["GET", "POST"]), "path": st.text(max_size=20)}
        ),
        max_size=3,
    ),
)
def test_repeats_of_one_end_share_event_and_fingerprint(
    base: WorkerEnd,
    pid: int,
    uptime: float,
    requests: int,
    rss: int | None,
    in_flight: list[dict[str, Any]],
) -> None:
    repeat = msgspec.structs.replace(
        base, pid=pid, uptime=uptime, requests_served=requests, last_rss=rss, in_flight=in_flight
    )
    first, second = classify(base), classify(repeat)
    assert (first.event_id, first.fingerprint, first.counts_as_failure) == (
        second.event_id,
        second.fingerprint,
        second.counts_as_failure,
    )
    assert "\n" not in second.message


@given(st.text(max_size=200))
def test_normalized_lines_hold_no_numbers(line: str) -> None:
    normalized = normalize_line(line)
    assert not re.search(r"\d", normalized)
    assert "\n" not in normalized and len(normalized) <= 160


def test_paths_and_frame_keys() -> None:
    assert short_path("/srv/releases/2024/shop/views.py") == "shop/views.py"
    assert short_path("views.py") == "views.py"
    assert frame_key(Frame(filename="/a/b/c.py", lineno=3, name="f")) == "b/c.py:3 in f"
