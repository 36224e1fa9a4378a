"""`poolwarden events`: listing, showing and explaining events without a server.

The commands run in click's CliRunner on a fresh group (`register`) against a
real event log written by `EventStore`; `--follow` runs in a real process
while the test appends. The pure `format_*` functions of
`poolwarden.events.render` are tested on their own, with real source files.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from poolwarden.cli.events import register
from poolwarden.events.catalog import CATALOG, KNOWN_IDS
from poolwarden.events.classify import WorkerEnd, classify
from poolwarden.events.render import (
    EVENT_COLUMNS,
    format_age,
    format_bytes,
    format_event,
    format_event_line,
    format_events,
    format_groups,
    format_time,
    no_source,
    read_source_line,
    source_context,
    with_source_lines,
)
from poolwarden.events.store import Event, EventStore, new_event
from poolwarden.importer import AppLoadError, load_app

REPO = Path(__file__).resolve().parent.parent
CLEAN_ENV = {"POOLWARDEN_CONFIG": None, "POOLWARDEN_STATE_DIR": None, "COLUMNS": "200"}
DEADLINE = 10.0


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("poolwarden")
    register(group)
    return group


def invoke(cli: click.Group, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN_ENV, **(env or {})})


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """A state directory whose log holds a start, a crash, a warning and a recycle."""
    directory = tmp_path / "state"
    now = time.time()
    with EventStore.open(directory) as store:
        store.append(
            new_event(2020, "worker 11 of pool web started", pool="web", pid=11, time=now - 7200)
        )
        store.append(
            classify(
                WorkerEnd(pool="web", pid=11, returncode=-9, ever_ready=True, uptime=60.0)
            ).new_event(now - 3600)
        )
        store.append(
            new_event(
                2025,
                "thread died",
                pool="api",
                pid=12,
                fingerprint="thread_exception X",
                time=now - 600,
            )
        )
        store.append(
            classify(WorkerEnd(pool="web", pid=13, returncode=-9, ever_ready=True)).new_event(
                now - 60
            )
        )
    yield directory


def stdout_lines(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


# --- listing ---------------------------------------------------------------------------------


def test_events_lists_newest_last(cli: click.Group, state: Path) -> None:
    lines = stdout_lines(invoke(cli, "events", "--state-dir", str(state)))
    assert lines[0] == EVENT_COLUMNS
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert "another process (SIGKILL from outside)" in lines[2]


def test_events_filters(cli: click.Group, state: Path) -> None:
    def seqs(*args: str) -> list[str]:
        lines = stdout_lines(invoke(cli, "events", "--state-dir", str(state), *args))
        return [line.split()[0] for line in lines[1:]]

    assert seqs("--pool", "api") == ["3"]
    assert seqs("--id", "5009") == ["2", "4"]
    assert seqs("--level", "warning") == ["2", "3", "4"]
    assert seqs("--level", "error") == ["2", "4"]
    assert seqs("--since", "1h30m") == ["2", "3", "4"]
    assert seqs("--since", "5m") == ["4"]
    assert seqs("--pool", "web", "--level", "error", "--since", "30m") == ["4"]
    assert stdout_lines(invoke(cli, "events", "--state-dir", str(state), "--pool", "none")) == [
        "no events"
    ]


def test_limit_shows_the_newest_and_says_so(cli: click.Group, state: Path) -> None:
    result = invoke(cli, "events", "--state-dir", str(state), "-n", "2")
    assert [line.split()[0] for line in stdout_lines(result)[1:]] == ["3", "4"]
    assert result.stderr == "(the newest 2 of 4 events; -n 0 shows all)\n"
    everything = invoke(cli, "events", "--state-dir", str(state), "-n", "0")
    assert len(stdout_lines(everything)) == 5 and everything.stderr == ""


def test_json_lines(cli: click.Group, state: Path) -> None:
    lines = stdout_lines(invoke(cli, "events", "--state-dir", str(state), "--json", "--id", "5009"))
    events = [json.loads(line) for line in lines]
    assert [event["seq"] for event in events] == [2, 4]
    assert events[0]["name"] == "worker_ended_unexpectedly"
    assert events[0]["details"]["signal"] == "SIGKILL"
    assert events[0]["fingerprint"] == "SIGKILL from outside"


def test_groups(cli: click.Group, state: Path) -> None:
    lines = stdout_lines(invoke(cli, "events", "--state-dir", str(state), "--groups"))
    assert lines[0].split()[:3] == ["COUNT", "FIRST", "SEEN"]
    assert lines[1].split()[0] == "1" and lines[1].endswith("thread_exception X")
    assert lines[3].split()[0] == "2" and lines[3].endswith("SIGKILL from outside")
    assert lines[4].strip().startswith("last: 4: worker 13 of pool web ended unexpectedly")
    as_json = stdout_lines(invoke(cli, "events", "--state-dir", str(state), "--groups", "--json"))
    groups = [json.loads(line) for line in as_json]
    assert [(g["fingerprint"], g["count"], g["last_seq"]) for g in groups] == [
        ("thread_exception X", 1, 3),
        ("SIGKILL from outside", 2, 4),
    ]
    web = stdout_lines(
        invoke(cli, "events", "--state-dir", str(state), "--groups", "--pool", "web")
    )
    assert len(web) == 3


def test_usage_errors(cli: click.Group, state: Path, tmp_path: Path) -> None:
    at = ["--state-dir", str(state)]
    assert invoke(cli, "events", *at, "--groups", "--follow").exit_code == 2
    assert invoke(cli, "events", *at, "--level", "fatal").exit_code == 2
    result = invoke(cli, "events", *at, "--since", "yesterday")
    assert result.exit_code == 2 and "invalid duration" in result.stderr
    both = invoke(cli, "events", *at, "-c", str(tmp_path / "x.toml"))
    assert both.exit_code == 2 and "not both" in both.stderr


def test_without_a_log_it_says_where_it_looked(cli: click.Group, tmp_path: Path) -> None:
    result = invoke(cli, "events", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"poolwarden: no event log at {tmp_path}/events.db")
    assert list(tmp_path.iterdir()) == []  # reading never creates the log
    assert invoke(cli, "events", "show", "1", "--state-dir", str(tmp_path)).exit_code == 1


def test_the_state_directory_is_found_like_the_admin_commands(
    cli: click.Group, state: Path, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\nstate_dir = "state"\n')
    for args, env in [
        (["-c", str(config)], {}),
        ([], {"POOLWARDEN_CONFIG": str(config)}),
        ([], {"POOLWARDEN_STATE_DIR": str(state)}),
    ]:
        lines = stdout_lines(invoke(cli, "events", *args, env=env))
        assert len(lines) == 5, (args, env)


# --- show ----------------------------------------------------------------------------------------


def test_show_prints_the_whole_evidence_and_what_to_do(cli: click.Group, state: Path) -> None:
    lines = stdout_lines(invoke(cli, "events", "show", "2", "--state-dir", str(state)))
    text = "\n".join(lines)
    assert lines[0] == "event 2: 5009 worker_ended_unexpectedly (error)"
    assert "ended by         another process (SIGKILL from outside)" in text
    assert "OOM killer       unknown (no evidence either way)" in text
    assert "What to do next" in text
    assert "--groups --pool web" in text
    assert "`poolwarden events show 2`" not in text  # not a next step of itself
    # the group's options work for the subcommand too
    again = invoke(cli, "events", "--state-dir", str(state), "show", "2")
    assert again.stdout == "\n".join(lines) + "\n"


def test_show_json_and_missing_events(cli: click.Group, state: Path) -> None:
    at = ["--state-dir", str(state)]
    shown = invoke(cli, "events", "show", "4", "--json", *at)
    assert shown.exit_code == 0, shown.output
    event = json.loads(shown.stdout)
    assert event["seq"] == 4 and event["pid"] == 13 and event["level"] == "error"
    result = invoke(cli, "events", "show", "99", *at)
    assert (result.exit_code, result.stderr) == (
        1,
        "poolwarden: no event 99 in the log (not written yet; the newest is 4)\n",
    )
    with EventStore.open(state) as store:
        store.prune(max_age_seconds=1.0, max_bytes=None)
    pruned = invoke(cli, "events", "show", "1", *at)
    assert pruned.exit_code == 1 and "(pruned; the newest is 4)" in pruned.stderr


# --- explain ------------------------------------------------------------------------------------


def test_explain(cli: click.Group) -> None:
    text = invoke(cli, "events", "explain", "5009").stdout
    assert text.startswith(
        "5009 worker_ended_unexpectedly (error)\nA worker process ended unexpectedly\n"
    )
    assert "What to do next:" in text and "poolwarden events show SEQ" in text
    assert invoke(cli, "events", "explain", "worker_ended_unexpectedly").stdout == text
    entry = json.loads(invoke(cli, "events", "explain", "5002", "--json").stdout)
    assert entry["id"] == 5002 and entry["iis"] is True and entry["next_steps"]


def test_explain_unknown_is_an_error(cli: click.Group) -> None:
    result = invoke(cli, "events", "explain", "1234")
    assert result.exit_code == 1
    assert result.stderr == (
        "poolwarden: no event 1234 in the catalog (`poolwarden events explain` lists every id)\n"
    )


def test_explain_without_an_id_lists_the_catalog(cli: click.Group) -> None:
    lines = stdout_lines(invoke(cli, "events", "explain"))
    assert sorted(int(line.split()[0]) for line in lines) == sorted(KNOWN_IDS)
    for line in lines:
        assert line.endswith("(reserved)") == CATALOG[int(line.split()[0])].reserved, line
    as_json = stdout_lines(invoke(cli, "events", "explain", "--json"))
    assert {json.loads(line)["id"] for line in as_json} == KNOWN_IDS


# --- registration --------------------------------------------------------------------------------


def test_register_refuses_a_taken_name(cli: click.Group) -> None:
    with pytest.raises(ValueError, match="'events' is already defined"):
        register(cli)


def test_register_beside_the_admin_commands() -> None:
    from poolwarden.cli.admin import register as register_admin

    group = click.Group("poolwarden")
    register_admin(group)
    register(group)
    assert "events" in group.commands and "pools" in group.commands


# --- follow -----------------------------------------------------------------------------------------

FOLLOWER = """
import click, sys
from poolwarden.cli.events import register
group = click.Group("poolwarden")
register(group)
group(sys.argv[1:], prog_name="poolwarden")
"""


class LineReader:
    """Lines from a pipe, each with a deadline (select on the fd, then os.read:
    a buffered reader would hide lines select cannot see)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def until(self, wanted: str, deadline: float) -> list[str]:
        """The lines up to (and including) the first that contains `wanted`."""
        lines: list[str] = []
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                lines.append(raw.decode())
                if wanted in lines[-1]:
                    return lines
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {wanted!r} in time; got {lines}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                data = os.read(self.fd, 65536)
                if not data:
                    raise AssertionError(f"the follower ended; got {lines}")
                self.buffer += data


def _ignore_sigint() -> None:
    """As a shell starts a background job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(("as_json", "started_in_background"), [(False, False), (True, True)])
def test_follow_prints_new_events_until_interrupted(
    state: Path, as_json: bool, started_in_background: bool
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "200"}
    for key in ("POOLWARDEN_CONFIG", "POOLWARDEN_STATE_DIR"):
        env.pop(key, None)
    args = ["events", "--follow", "--pool", "web", "--state-dir", str(state)]
    process = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, *args, *(["--json"] if as_json else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_ignore_sigint if started_in_background else None,
    )
    assert process.stdout is not None and process.stderr is not None
    reader = LineReader(process.stdout.fileno())
    try:
        deadline = time.monotonic() + DEADLINE
        first = reader.until("worker 13 of pool web", deadline)  # the backlog
        assert len(first) == (3 if as_json else 4)
        with EventStore.open(state) as store:
            store.append(new_event(2025, "elsewhere", pool="api"))  # filtered out
            store.append(new_event(2021, "worker 14 of pool web is ready", pool="web", pid=14))
        (line,) = reader.until("worker 14", deadline)
        if as_json:
            assert json.loads(line)["seq"] == 6
        else:
            assert line.split()[0] == "6" and "elsewhere" not in line
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=DEADLINE)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        process.stderr.close()
    assert "Traceback" not in stderr


# --- render, pure -------------------------------------------------------------------------------------


def make_event(**fields: object) -> Event:
    base: dict[str, object] = {
        "seq": 7,
        "time": 1714557603.25,
        "event_id": 5009,
        "level": "error",
        "pool": "web",
        "pid": 1234,
        "message": "boom",
        "details": {},
        "fingerprint": None,
    }
    return Event(**{**base, **fields})


def test_event_lines_are_columns() -> None:
    line = format_event_line(make_event(), UTC)
    assert line == "     7  2024-05-01 10:00:03  error    5009  web              1234  boom"
    assert format_event_line(make_event(pool=None, pid=None), UTC).split()[5:7] == ["-", "-"]
    assert format_events([], UTC) == "no events"
    assert format_time(1714557603.25, UTC, precise=True) == "2024-05-01 10:00:03.250 +0000"


def test_small_formats() -> None:
    assert [format_age(s) for s in (None, 0.25, 12.34, 125, 3 * 3600 + 420, 2 * 86400 + 3600)] == [
        "-",
        "0.25s",
        "12.3s",
        "2m05s",
        "3h07m",
        "2d01h",
    ]
    assert [format_bytes(b) for b in (None, 512, 2048, 45 * 1024**2, 3 * 1024**3)] == [
        "-",
        "512B",
        "2.00KiB",
        "45.0MiB",
        "3.00GiB",
    ]


def test_group_lines() -> None:
    from poolwarden.events.store import Group

    group = Group(
        fingerprint="SIGSEGV a/b.py:3 in f",
        event_id=5009,
        level="error",
        count=3,
        first_seen=1714557603.0,
        last_seen=1714557663.0,
        last_seq=9,
        message="worker 1 crashed",
        pools=["api", "web"],
    )
    lines = format_groups([group], UTC).splitlines()
    assert lines[1] == (
        "     3  2024-05-01 10:00:03  2024-05-01 10:01:03  5009  api,web       SIGSEGV a/b.py:3 in f"
    )
    assert lines[2] == "        last: 9: worker 1 crashed"
    assert format_groups([], UTC) == "no failures"


APP_SOURCE = """\
import ctypes


def render_chart(data):
    total = sum(data)
    ctypes.string_at(0)
    return total
"""


def test_source_lines_are_added_to_dumps_and_tracebacks(tmp_path: Path) -> None:
    app = tmp_path / "charts.py"
    app.write_text(APP_SOURCE)
    dump = (
        "Fatal Python error: Segmentation fault\n\n"
        "Current thread 0x00007f0000000001 (most recent call first):\n"
        f'  File "{app}", line 6 in render_chart\n'
        '  File "/nonexistent/x.py", line 1 in <module>\n'
    )
    shown = with_source_lines(dump).splitlines()
    assert shown[4] == "      ctypes.string_at(0)"
    assert shown[5] == '  File "/nonexistent/x.py", line 1 in <module>'
    assert len(shown) == 6
    traceback_text = f'Traceback (most recent call last):\n  File "{app}", line 5, in render_chart\n    total = sum(data)\nTypeError: x\n'
    assert with_source_lines(traceback_text) == traceback_text.rstrip("\n")  # already has its line
    assert with_source_lines(dump, no_source) == dump.rstrip("\n")
    assert source_context(str(app), 6) == [
        "  4 | def render_chart(data):",
        "  5 |     total = sum(data)",
        "> 6 |     ctypes.string_at(0)",
        "  7 |     return total",
    ]
    assert source_context("/nonexistent.py", 3) == []
    assert read_source_line("<string>", 1) is None


def test_show_renders_a_startup_failure_with_the_apps_source(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_app("tests.apps.broken_nested:app")
    failure = caught.value.failure
    result = classify(WorkerEnd(pool="web", pid=55, returncode=3, startup_failure=failure))
    with EventStore.open(tmp_path) as store:
        event = store.append(result.new_event(1714557603.0))
    text = format_event(event, UTC)
    assert text.splitlines()[0] == f"event {event.seq}: 2022 worker_startup_failed (error)"
    assert "Start-up failure" in text
    assert "  module     tests.apps.broken_helper, line" in text
    assert 'raise RuntimeError("the helper exploded")' in text
    assert f'> {failure.lineno} |     raise RuntimeError("the helper exploded")' in text
    assert "`poolwarden pool start web`" in text
    assert "More about 2022: poolwarden events explain 2022" in text


def test_show_renders_a_crash_with_in_flight_requests_and_tails(tmp_path: Path) -> None:
    app = tmp_path / "charts.py"
    app.write_text(APP_SOURCE)
    dump = (
        "Fatal Python error: Segmentation fault\n\n"
        "Current thread 0x00007f0000000001 (most recent call first):\n"
        f'  File "{app}", line 6 in render_chart\n'
    )
    result = classify(
        WorkerEnd(
            pool="web",
            pid=77,
            returncode=-11,
            ever_ready=True,
            crash_dump=dump,
            uptime=185.0,
            requests_served=120,
            last_rss=47_395_635,
            oom_killed=False,
            in_flight=[
                {
                    "method": "GET",
                    "path": "/chart?id=3",
                    "client": "10.0.0.7:5511",
                    "elapsed": 0.02,
                    "response_started": False,
                },
            ],
            stderr_tail=["warming up", "about to render"],
        )
    )
    event = make_event(
        details=result.details, message=result.message, fingerprint=result.fingerprint
    )
    text = format_event(event, UTC)
    assert "  ended by         the worker itself (crashed with SIGSEGV)" in text
    assert "  signal           SIGSEGV" in text
    assert "  uptime           3m05s" in text
    assert "  last RSS         45.2MiB" in text
    assert "  OOM killer       no: the kernel's OOM kill count did not change" in text
    assert "Crash dump (faulthandler): Fatal Python error: Segmentation fault" in text
    assert f"  app frame  {app}, line 6, in render_chart" in text
    assert "    > 6 |     ctypes.string_at(0)" in text
    assert "        ctypes.string_at(0)" in text  # below the frame in the dump itself
    assert "In flight (1 request)" in text
    assert "  GET /chart?id=3  client 10.0.0.7:5511  elapsed 0.02s  response not started" in text
    assert "Last stderr lines (2 lines)\n  | warming up\n  | about to render" in text
    without_files = format_event(event, UTC, source=no_source)
    assert "> 6 |" not in without_files


def test_show_of_a_disable_renders_the_last_failures_evidence_as_its_own_event_does() -> None:
    with pytest.raises(AppLoadError) as caught:
        load_app("tests.apps.broken_nested:app")
    failure = caught.value.failure
    last = classify(WorkerEnd(pool="web", pid=55, returncode=3, startup_failure=failure))
    event = make_event(
        event_id=5002,
        details={
            "failures": 5,
            "last_failure_seq": 9,
            "last_failure": last.message,
            "last_failure_details": last.details,
        },
    )
    text = format_event(event, UTC)
    section = text.split("The last failure (event 9)\n", 1)[1]
    assert section.startswith(f"  {last.message}\n")
    assert "How it ended\n  ended by         the worker itself (exit status 3)" in section
    assert "  module     tests.apps.broken_helper, line" in section
    assert 'raise RuntimeError("the helper exploded")' in section
    other = text.split("Other details\n", 1)[1].split("\n\n", 1)[0]
    assert other == "  failures: 5\n  last_failure_seq: 9"
    assert "`poolwarden debug startup web --start`" in text


def test_show_lists_details_it_has_no_section_for() -> None:
    event = make_event(
        event_id=5002, details={"crashes": [3, 5, 8], "interval": 300.0, "note": "x"}
    )
    text = format_event(event, UTC)
    assert "Other details\n  crashes: [3, 5, 8]\n  interval: 300.0\n  note: x" in text


def test_every_catalog_id_renders() -> None:
    for event_id, entry in CATALOG.items():
        text = format_event(make_event(event_id=event_id, level=entry.level), UTC)
        assert f"{event_id} {entry.name}" in text.splitlines()[0]
