"""Evidence that the kernel's OOM killer ended a worker, never a guess.

`WorkerProcess` makes an `OomWatch` when its worker starts and asks it for a
verdict when a worker that poolwarden did not kill dies of SIGKILL; the
verdict becomes `WorkerEnd.oom_killed` (event 2024 rather than 5009 "from
outside").

Two witnesses, each the kernel's own word:

- **The worker's memory cgroup**, found from `/proc/PID/cgroup` while the
  worker is alive: under cgroup v2 its `memory.events` `oom_kill` count,
  under cgroup v1 its `memory.oom_control` `oom_kill` count. A count that
  went up while the worker lived says the OOM killer struck in its cgroup.
  This is the worker's *own* cgroup: a systemd service, a v1 host, a
  container with or without its own cgroup namespace, not just the root of
  `/sys/fs/cgroup`.
- **The kernel log** (`/dev/kmsg`, readable by root), whose OOM report names
  the process it killed (`Killed process 1234 (python)`, and the
  `oom-kill:...,pid=1234,...` summary), at a time after the worker started.

`True` when either witness says so, `False` when the cgroup's count is known
and did not move (and the kernel log does not name the worker), `None` when
neither can be read.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"
KERNEL_LOG = "/dev/kmsg"
KERNEL_LOG_BUDGET = 4 * 1024 * 1024
"""The most of the kernel log read for one verdict (its ring is far smaller)."""
KERNEL_LOG_DEADLINE = 0.25
"""Seconds one verdict may spend reading the kernel log."""


@dataclass(frozen=True, slots=True)
class MemoryCgroup:
    """A memory cgroup directory and the file that counts its OOM kills."""

    path: str
    version: int

    @property
    def counter_file(self) -> str:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        return os.path.join(self.path, name)

    def oom_kills(self) -> int | None:
        """The cgroup's `oom_kill` count, None when it cannot be read."""
        return read_oom_kill_count(self.counter_file)


def read_oom_kill_count(path: str) -> int | None:
    """The `oom_kill N` line of a `memory.events` or `memory.oom_control` file."""
    try:
        with open(path) as counters:
            for line in counters:
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


def memory_cgroup_of(
    pid: int, *, proc: str = "/proc", root: str = CGROUP_ROOT
) -> MemoryCgroup | None:
    """The memory cgroup process `pid` is in, as this process sees the mounts.

    `/proc/PID/cgroup` lines are `ID:CONTROLLERS:PATH`; cgroup v1's memory
    controller has its own line, v2 is the single `0::PATH` line. A v1 line
    wins: on a hybrid host the v2 tree has no memory controller. The path is
    relative to the hierarchy's root, which is the mount's root unless this
    process is in another cgroup namespace; then (Docker without a cgroup
    namespace mounts the container's own cgroup at the root) the mount itself
    is the cgroup.
    """
    try:
        with open(os.path.join(proc, str(pid), "cgroup")) as listing:
            lines = listing.read().splitlines()
    except OSError:
        return None
    v1_path: str | None = None
    v2_path: str | None = None
    for line in lines:
        _, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            v1_path = path
        elif controllers == "":
            v2_path = path
    if v1_path is not None:
        return _existing(os.path.join(root, "memory"), v1_path, version=1)
    if v2_path is not None:
        for mount in (root, os.path.join(root, "unified")):
            if os.path.exists(os.path.join(mount, "cgroup.controllers")):
                return _existing(mount, v2_path, version=2)
    return None


def _existing(mount: str, path: str, *, version: int) -> MemoryCgroup | None:
    full = os.path.join(mount, path.lstrip("/"))
    counter = "memory.events" if version == 2 else "memory.oom_control"
    for candidate in (full, mount):
        if os.path.exists(os.path.join(candidate, counter)):
            return MemoryCgroup(candidate, version)
    return None


def kernel_log_names(
    pid: int, command: str, since: float, *, path: str = KERNEL_LOG
) -> bool | None:
    """Whether the kernel log says its OOM killer killed `pid` after `since`.

    The report must name both the pid and the command (`Killed process 1234
    (python3)`). `since` is a `time.monotonic()` reading: the kernel stamps
    each record in microseconds of the same clock, so a record from before
    the worker started (a reused pid) is not taken for it. None when the log
    cannot be read (not root, no `/dev/kmsg`). The kernel prints pids as the
    initial PID namespace sees them: in a container the cgroup is the witness.
    """
    killed = re.compile(rf"Killed process {pid} \({re.escape(command)}\)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    deadline = time.monotonic() + KERNEL_LOG_DEADLINE
    read = 0
    try:
        while read < KERNEL_LOG_BUDGET and time.monotonic() < deadline:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False  # the end of the log
            except OSError as error:
                if error.errno == errno.EPIPE:  # records were overwritten meanwhile
                    continue
                return None
            if not record:
                return False
            read += len(record)
            prefix, _, message = record.partition(b";")
            fields = prefix.split(b",")
            if len(fields) < 3 or not killed.search(message.decode("utf-8", "replace")):
                continue
            try:
                stamp = int(fields[2]) / 1_000_000
            except ValueError:
                continue
            if stamp >= since - 1.0:
                return True
    finally:
        os.close(fd)
    return False


class OomWatch:
    """What one worker's OOM verdict is judged against, taken at its start."""

    __slots__ = (
        "cgroup",
        "command",
        "evidence",
        "kernel_log",
        "kills_at_start",
        "pid",
        "started",
    )

    def __init__(self, pid: int, *, root: str = CGROUP_ROOT, kernel_log: str = KERNEL_LOG) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.kernel_log = kernel_log
        self.command = _command_of(pid)
        self.cgroup = memory_cgroup_of(pid, root=root)
        self.kills_at_start = self.cgroup.oom_kills() if self.cgroup is not None else None
        self.evidence: str | None = None
        """What the last verdict rests on, for the event's details."""

    def verdict(self) -> bool | None:
        """True if the kernel says its OOM killer ended the worker, False if
        its cgroup's count did not move, None when nothing can be read."""
        cgroup_says: bool | None = None
        self.evidence = None
        if self.cgroup is not None and self.kills_at_start is not None:
            now = self.cgroup.oom_kills()
            if now is not None:
                cgroup_says = now > self.kills_at_start
                self.evidence = (
                    f"cgroup v{self.cgroup.version} {self.cgroup.counter_file}: "
                    f"oom_kill {self.kills_at_start} -> {now}"
                )
        if cgroup_says:
            return True
        if self.command and kernel_log_names(
            self.pid, self.command, self.started, path=self.kernel_log
        ):
            self.evidence = f"kernel log: Killed process {self.pid} ({self.command})"
            return True
        return cgroup_says


def _command_of(pid: int) -> str | None:
    """The process's command name as the kernel reports it (`/proc/PID/comm`)."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip() or None
    except OSError:
        return None
