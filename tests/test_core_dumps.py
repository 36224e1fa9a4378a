"""`core_dumps = true` and `poolwarden dumps`: the pure parts, then real crashes.

The real-process tests need a kernel that writes cores into the crashing
process's directory (a relative `core_pattern`) and a hard core limit above
0; elsewhere they are skipped and say why.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poolwarden.cli.dumps import Dump, format_dumps
from poolwarden.events import catalog
from poolwarden.events.store import Event
from poolwarden.master.core_dumps import (
    CoreTarget,
    collect_core,
    core_dumps_warning,
    core_file_glob,
    dump_name,
    parse_core_pattern,
    parse_dump_name,
    read_core_target,
    where_to_look,
)
from tests.conftest import POOLWARDEN, REPO, Server, events_of, wait_until

# --- core_pattern ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "uses_pid", "kind", "handler"),
    [
        ("core\n", False, "cwd", ""),
        ("core.%e.%p", False, "cwd", ""),
        ("cores/core-%p", True, "cwd", ""),
        ("/var/crash/core.%e.%p.%t", False, "path", ""),
        ("|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", False, "pipe", "systemd-coredump"),
        ("|/usr/share/apport/apport -p%p -s%s -c%c -d%d -P%P -u%u -g%g -- %E", False, "pipe", "apport"),
        ("| /usr/bin/my-helper %p", False, "pipe", "my-helper"),
        ("", False, "none", ""),
    ],
)  # fmt: skip
def test_where_the_kernel_writes_cores(
    pattern: str, uses_pid: bool, kind: str, handler: str
) -> None:
    target = parse_core_pattern(pattern, uses_pid)
    assert (target.kind, target.handler) == (kind, handler)
    assert target.collectable is (kind == "cwd")


@pytest.mark.parametrize(
    ("pattern", "uses_pid", "glob"),
    [
        ("core", False, "core"),
        ("core", True, "core.4242"),
        ("core.%p", True, "core.4242"),
        ("core.%e.%p", False, "core.*.4242"),
        ("core-%e-%s-%t-%h", False, "core-*-11-*-*"),
        ("core.%%p", True, "core.%p.4242"),
        ("cores/%p/core[1]", False, "cores/4242/core[[]1]"),
        ("core%", False, "core"),
        ("core.%Z.%p", False, "core..4242"),
        ("/var/crash/%e.%p.%t", False, "/var/crash/*.4242.*"),
    ],
)
def test_the_core_file_name_of_a_pid(pattern: str, uses_pid: bool, glob: str) -> None:
    assert core_file_glob(parse_core_pattern(pattern, uses_pid), 4242, signal.SIGSEGV) == glob


def test_the_signal_is_a_wildcard_when_unknown() -> None:
    assert core_file_glob(CoreTarget("cwd", "core.%s.%p"), 7) == "core.*.7"


def test_warnings_name_where_cores_go() -> None:
    assert core_dumps_warning(parse_core_pattern("core"), -1) is None
    systemd = core_dumps_warning(parse_core_pattern("|/lib/systemd/systemd-coredump %P"), -1)
    assert systemd == (
        "the system's core_pattern sends cores to systemd-coredump; see `coredumpctl list`"
    )
    apport = core_dumps_warning(parse_core_pattern("|/usr/share/apport/apport %p"), -1)
    assert apport is not None and "/var/crash" in apport
    absolute = core_dumps_warning(parse_core_pattern("/cores/core.%p"), -1)
    assert absolute is not None and "/cores" in absolute
    no_limit = core_dumps_warning(parse_core_pattern("core"), 0)
    assert no_limit is not None and "RLIMIT_CORE" in no_limit
    assert "cannot be read" in (core_dumps_warning(None, -1) or "")
    assert "empty" in (core_dumps_warning(parse_core_pattern(""), -1) or "")


def test_the_event_of_an_uncollected_core_says_where_to_look() -> None:
    systemd = parse_core_pattern("|/usr/lib/systemd/systemd-coredump %P %u")
    assert where_to_look(systemd, 99) == "sent to systemd-coredump: see `coredumpctl info 99`"
    absolute = parse_core_pattern("/var/crash/core.%p")
    assert where_to_look(absolute, 99) == "written by the kernel as /var/crash/core.99"


def test_dump_names_carry_the_pool_and_the_pid() -> None:
    assert dump_name("web", 12) == "web-12.core"
    assert parse_dump_name("web-12.core") == ("web", 12)
    assert parse_dump_name(dump_name("api-2", 345, 2)) == ("api-2", 345)
    assert parse_dump_name("web-12.core.partial") is None
    assert parse_dump_name("notes.txt") is None


# --- collecting a core (real files, a given core_pattern) ---------------------------------


def fake_core(directory: Path, name: str, age: float = 0.0) -> Path:
    path = directory / name
    path.write_bytes(b"\x7fELF core")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_a_core_in_the_working_directory_is_moved_to_the_dumps(tmp_path: Path) -> None:
    work, state = tmp_path / "work", tmp_path / "state"
    work.mkdir()
    fake_core(work, "core.77")
    collected = collect_core(
        pool="web", pid=77, cwd=str(work), dumped=True, signal=signal.SIGSEGV,
        since=time.time() - 5, state_dir=str(state),
        read_target=lambda: parse_core_pattern("core", uses_pid=True),
    )  # fmt: skip
    assert collected.path == str(state / "dumps" / "web-77.core")
    assert Path(collected.path).read_bytes() == b"\x7fELF core"
    assert list(work.iterdir()) == []
    # The same pid again (reused): the first dump stays.
    fake_core(work, "core.77")
    again = collect_core(
        pool="web", pid=77, cwd=str(work), dumped=True, signal=signal.SIGSEGV,
        since=time.time() - 5, state_dir=str(state),
        read_target=lambda: parse_core_pattern("core", uses_pid=True),
    )  # fmt: skip
    assert again.path == str(state / "dumps" / "web-77.2.core")


def test_a_core_older_than_the_worker_is_not_its_own(tmp_path: Path) -> None:
    fake_core(tmp_path, "core", age=3600)
    collected = collect_core(
        pool="web", pid=5, cwd=str(tmp_path), dumped=True, signal=signal.SIGSEGV,
        since=time.time() - 10, state_dir=str(tmp_path / "state"),
        read_target=lambda: parse_core_pattern("core"),
    )  # fmt: skip
    assert collected.path is None
    assert collected.elsewhere == f"the kernel wrote one, but no core was found in {tmp_path}"
    assert (tmp_path / "core").exists()


def test_nothing_is_looked_for_without_a_core_or_where_the_kernel_keeps_it(
    tmp_path: Path,
) -> None:
    fake_core(tmp_path, "core")
    common = {"pool": "web", "pid": 5, "cwd": str(tmp_path), "signal": None}
    state = str(tmp_path / "state")
    plain = collect_core(
        **common, dumped=False, since=0.0, state_dir=state,  # type: ignore[arg-type]
        read_target=lambda: parse_core_pattern("core"),
    )  # fmt: skip
    assert (plain.path, plain.elsewhere) == (None, None)
    piped = collect_core(
        **common, dumped=True, since=0.0, state_dir=state,  # type: ignore[arg-type]
        read_target=lambda: parse_core_pattern("|/usr/lib/systemd/systemd-coredump %P"),
    )  # fmt: skip
    assert piped.path is None
    assert piped.elsewhere == "sent to systemd-coredump: see `coredumpctl info 5`"
    assert (tmp_path / "core").exists()


def test_under_a_wrapper_the_python_workers_core_is_looked_for_too(tmp_path: Path) -> None:
    fake_core(tmp_path, "core.901")
    collected = collect_core(
        pool="web", pid=900, other_pids=(901,), cwd=str(tmp_path), dumped=False, signal=None,
        since=time.time() - 5, state_dir=str(tmp_path / "state"),
        read_target=lambda: parse_core_pattern("core.%p"),
    )  # fmt: skip
    assert collected.path == str(tmp_path / "state" / "dumps" / "web-900.core")


# --- the listing (pure) ------------------------------------------------------------------


def test_no_dumps_says_how_to_turn_them_on() -> None:
    text = format_dumps([], "/srv/state/dumps")
    assert text.startswith("no core dumps in /srv/state/dumps")
    assert "core_dumps = true" in text


def test_a_dump_line_names_its_event_and_the_gdb_command() -> None:
    dump = Dump(
        path="/s/dumps/web-7.core", pool="web", pid=7, time=0.0, size=5 * 1024 * 1024,
        event_seq=12, event_id=5009, message="worker 7 of pool web ended unexpectedly",
        python="/venv/bin/python", gdb="gdb /venv/bin/python /s/dumps/web-7.core",
    )  # fmt: skip
    lines = format_dumps([dump], "/s/dumps", copying=1).splitlines()
    assert lines[0].split() == ["TIME", "SIZE", "POOL", "PID", "EVENT", "FILE"]
    assert lines[1].split()[2:] == ["5.00MiB", "web", "7", "#12", "/s/dumps/web-7.core"]
    assert lines[2].strip() == "worker 7 of pool web ended unexpectedly"
    assert lines[3].strip() == "open it: gdb /venv/bin/python /s/dumps/web-7.core"
    assert lines[4] == "(1 more core is still being copied into /s/dumps)"


# --- real crashes ---------------------------------------------------------------------------


def cores_in_cwd_unavailable() -> str | None:
    target = read_core_target()
    if target is None or target.kind != "cwd":
        pattern = target.pattern if target else "unreadable"
        return f"the kernel's core_pattern ({pattern!r}) does not write cores into the cwd"
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0:
        return "the hard RLIMIT_CORE is 0: no process here may write a core"
    return None


def dump_config(workdir: Path, keys: str = "") -> str:
    """One pool running the dump app from `workdir` (imported through PYTHONPATH),
    so that a core the kernel writes lands in the test's own directory."""
    return f"""
[server]
state_dir = "{{state_dir}}"

[sites.main]
bindings = ["127.0.0.1:0"]

[[sites.main.applications]]
path = "/"
pool = "web"

[pools.web]
app = "tests.apps.dump_apps:app"
working_dir = "{workdir}"
start_mode = "always_running"
{keys}
"""


def crash(server: Server) -> Event:
    [pid] = server.wait_for_workers(1)
    assert server.get("/segv")[0] == 502
    found = wait_until(
        lambda: [e for e in events_of(server, catalog.WORKER_ENDED_UNEXPECTEDLY) if e.pid == pid],
        what="the crash's event",
    )
    assert isinstance(found, list)
    return found[-1]


def limits_of_the_worker(server: Server) -> dict[str, int]:
    status, _, body = server.get("/")
    assert status == 200
    answer: dict[str, int] = json.loads(body)
    return answer


@pytest.mark.skipif(bool(cores_in_cwd_unavailable()), reason=cores_in_cwd_unavailable() or "")
def test_a_crashing_worker_leaves_its_core_in_the_dumps(
    start_serve: object, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    server = start_serve(dump_config(workdir, "core_dumps = true"))  # type: ignore[operator]
    assert isinstance(server, Server)
    limits = limits_of_the_worker(server)
    assert limits["core_soft"] == limits["core_hard"] == resource.getrlimit(resource.RLIMIT_CORE)[1]
    event = crash(server)
    dump = server.state_dir / "dumps" / f"web-{event.pid}.core"
    wait_until(dump.exists, what=str(dump))
    assert dump.stat().st_size > 0
    assert event.details["core_dump"] == str(dump)
    assert event.details["signal"] == "SIGSEGV"
    assert list(workdir.iterdir()) == []  # moved, not copied
    listed = subprocess.run(
        [*POOLWARDEN, "dumps", "--json", "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["path"] == str(dump)
    assert (row["pool"], row["pid"], row["event_seq"]) == ("web", event.pid, event.seq)
    assert row["gdb"] == shlex.join(["gdb", sys.executable, str(dump)])
    shown = subprocess.run(
        [*POOLWARDEN, "events", "show", str(event.seq), "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert f"core dump        {dump}" in shown.stdout
    table = subprocess.run(
        [*POOLWARDEN, "dumps", "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert f"open it: {row['gdb']}" in table.stdout


def test_without_core_dumps_the_inherited_limit_stays_and_no_core_is_collected(
    start_serve: object, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    server = start_serve(dump_config(workdir))  # type: ignore[operator]
    assert isinstance(server, Server)
    inherited = resource.getrlimit(resource.RLIMIT_CORE)
    limits = limits_of_the_worker(server)
    assert (limits["core_soft"], limits["core_hard"]) == inherited
    event = crash(server)
    assert "core_dump" not in event.details
    assert not (server.state_dir / "dumps").exists()
    if inherited[0] == 0:
        assert list(workdir.iterdir()) == []
    listed = subprocess.run(
        [*POOLWARDEN, "dumps", "--state-dir", str(server.state_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert listed.stdout.startswith("no core dumps in ")
    assert "core_dumps = true" in listed.stdout


def test_config_check_warns_when_cores_would_go_elsewhere(tmp_path: Path) -> None:
    config = tmp_path / "poolwarden.toml"
    config.write_text(dump_config(tmp_path, "core_dumps = true").format(state_dir="state"))
    checked = subprocess.run(
        [*POOLWARDEN, "config", "check", str(config), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    warnings = json.loads(checked.stdout)["warnings"]
    why = core_dumps_warning(read_core_target(), resource.getrlimit(resource.RLIMIT_CORE)[1])
    expected = (
        []
        if why is None
        else [{"path": "pools.web.core_dumps", "message": f"core_dumps is on but {why}"}]
    )
    assert warnings == expected
