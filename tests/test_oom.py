"""The OOM verdict: the worker's own memory cgroup and the kernel log, never a guess.

The parsers run on small cgroup and /proc trees written by the tests; the
verdict itself runs on the kernel's: a real poolwarden whose worker is put in a
real memory cgroup with a limit, and a request that outgrows it, so the kernel's
OOM killer ends the worker and the event says so (2024), with its evidence. That
test needs root and a writable memory cgroup (v1 or v2); elsewhere it skips,
saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolwarden.events import catalog
from poolwarden.master.oom import MemoryCgroup, OomWatch, memory_cgroup_of, read_oom_kill_count
from tests.conftest import ServerFactory, events_of, wait_until

# --- finding the worker's memory cgroup ---------------------------------------------------


def _proc(tmp_path: Path, pid: int, listing: str) -> str:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(listing)
    return str(proc)


def _counter(directory: Path, name: str, kills: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    other = "oom_kill_disable 0\nunder_oom 0\n" if name == "memory.oom_control" else "low 0\n"
    (directory / name).write_text(f"{other}oom_kill {kills}\n")


def test_a_systemd_service_on_cgroup_v2_is_judged_by_its_own_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root).mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    _counter(root, "memory.events", 0)  # the host's root: not the worker's
    service = root / "system.slice" / "shop.service"
    _counter(service, "memory.events", 3)
    proc = _proc(tmp_path, 42, "0::/system.slice/shop.service\n")
    found = memory_cgroup_of(42, proc=proc, root=str(root))
    assert found == MemoryCgroup(str(service), 2)
    assert found.oom_kills() == 3


def test_cgroup_v1_reads_the_memory_controllers_oom_control(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    group = root / "memory" / "system.slice" / "shop.service"
    _counter(group, "memory.oom_control", 2)
    (root / "unified").mkdir(parents=True)
    (root / "unified" / "cgroup.controllers").write_text("")
    listing = "4:memory:/system.slice/shop.service\n1:name=systemd:/x\n0::/system.slice/shop\n"
    found = memory_cgroup_of(7, proc=_proc(tmp_path, 7, listing), root=str(root))
    assert found == MemoryCgroup(str(group), 1)
    assert found.counter_file.endswith("memory.oom_control") and found.oom_kills() == 2


def test_a_container_without_its_own_cgroup_namespace_is_its_mount(tmp_path: Path) -> None:
    """Docker on v1: /proc says /docker/ID, but the container's cgroup is the mount."""
    root = tmp_path / "cgroup"
    _counter(root / "memory", "memory.oom_control", 5)
    proc = _proc(tmp_path, 9, "4:memory:/docker/0123abcd\n")
    assert memory_cgroup_of(9, proc=proc, root=str(root)) == MemoryCgroup(str(root / "memory"), 1)


def test_nothing_readable_is_unknown_not_no(tmp_path: Path) -> None:
    assert memory_cgroup_of(1, proc=str(tmp_path / "none"), root=str(tmp_path)) is None
    proc = _proc(tmp_path, 3, "0::/a\n")
    assert memory_cgroup_of(3, proc=proc, root=str(tmp_path / "no-mount")) is None
    assert read_oom_kill_count(str(tmp_path / "missing")) is None
    (tmp_path / "garbled").write_text("oom_kill many\n")
    assert read_oom_kill_count(str(tmp_path / "garbled")) is None


# --- the kernel's word: a real memory cgroup ----------------------------------------------


def _writable_memory_cgroup_parent() -> tuple[Path, int] | str:
    """Where a test may make a memory cgroup (and its version), or why not."""
    if os.geteuid() != 0:
        return "needs root to make a memory cgroup"
    with open("/proc/self/cgroup") as listing:
        lines = listing.read().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory")
            for parent in (base / path.lstrip("/"), base):
                if (parent / "memory.oom_control").exists() and os.access(parent, os.W_OK):
                    return parent, 1
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        own = next((line[3:] for line in lines if line.startswith("0::")), "/")
        parent = root / own.lstrip("/")
        if "memory" in (parent / "cgroup.subtree_control").read_text(errors="replace").split():
            return parent, 2
        return "cgroup v2 without the memory controller delegated to this cgroup"
    return "no writable memory cgroup on this machine"


@pytest.fixture
def memory_cgroup() -> Iterator[tuple[Path, int]]:
    """A fresh memory cgroup limited to 192 MiB, with no swap to escape to."""
    found = _writable_memory_cgroup_parent()
    if isinstance(found, str):
        pytest.skip(found)
    parent, version = found
    group = parent / f"poolwarden-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"cannot make a memory cgroup under {parent}: {error}")
    limit = str(192 * 1024 * 1024)
    if version == 1:
        (group / "memory.limit_in_bytes").write_text(limit)
        swappiness = group / "memory.swappiness"
        if swappiness.exists():
            swappiness.write_text("0")
    else:
        (group / "memory.max").write_text(limit)
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
    try:
        yield group, version
    finally:
        procs = group / "cgroup.procs"
        home = parent / "cgroup.procs"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = procs.read_text().split()
            if not pids:
                break
            for pid in pids:
                try:
                    home.write_text(pid)
                except OSError:
                    pass  # it ended meanwhile
        group.rmdir()


def _join(group: Path, pid: int) -> None:
    (group / "cgroup.procs").write_text(str(pid))


def test_the_kernel_log_alone_names_an_oom_killed_process(
    memory_cgroup: tuple[Path, int], tmp_path: Path
) -> None:
    """With no cgroup to read, the kernel log is the witness; with neither, None."""
    group, _ = memory_cgroup
    code = "import sys, time; sys.stdin.read(1); h = [bytearray(1 << 20) for _ in range(1024)]"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        _join(group, child.pid)
        blind = OomWatch(child.pid, root=str(tmp_path / "nothing"))
        deaf = OomWatch(child.pid, root=str(tmp_path / "nothing"), kernel_log=str(tmp_path / "no"))
        assert blind.cgroup is None
        assert child.stdin is not None
        child.stdin.write(b"x")
        child.stdin.close()
        assert child.wait(timeout=30) == -9
    finally:
        child.kill()
        child.wait()
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("the kernel log (/dev/kmsg) is not readable here")
    assert blind.verdict() is True
    assert blind.evidence == f"kernel log: Killed process {child.pid} ({blind.command})"
    assert deaf.verdict() is None and deaf.evidence is None


def test_an_oom_killed_worker_is_event_2024_with_its_cgroup_as_evidence(
    memory_cgroup: tuple[Path, int], start_server: ServerFactory
) -> None:
    group, version = memory_cgroup
    # The server runs in the cgroup, as under a systemd unit's MemoryMax: the
    # OOM killer chooses the largest process there, the worker that allocates.
    server = start_server("tests.apps.crash_apps:app", preexec_fn=lambda: _join(group, os.getpid()))
    [worker] = server.wait_for_workers(1)
    status, headers, _ = server.get("/allocate?mib=1024")
    assert status == 502
    [event] = wait_until(lambda: events_of(server, catalog.WORKER_OOM_KILLED), what="event 2024")
    assert event.pid == worker
    assert "was killed by the kernel's OOM killer" in event.message
    assert event.details["oom_killed"] is True
    counter = "memory.oom_control" if version == 1 else "memory.events"
    assert event.details["oom_evidence"] == f"cgroup v{version} {group / counter}: oom_kill 0 -> 1"
    assert headers["x-poolwarden-event"] == str(event.seq)
    # a new worker serves, the master lives
    status, _, _ = server.get("/")
    assert status == 200 and server.process.poll() is None
