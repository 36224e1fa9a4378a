"""Core dumps of crashed workers: where the kernel puts them, and collecting them.

```
 worker (core_dumps = true): RLIMIT_CORE soft = hard, set at boot from Boot.core_dumps
    │ SIGSEGV ─▶ faulthandler dump ─▶ signal re-raised ─▶ kernel writes the core
    ▼                                     (where: /proc/sys/kernel/core_pattern)
 master reaps it: WCOREDUMP(status)?
    ├ pattern is a relative name ("core", "core.%p"): the file is in the
    │   worker's working directory ─▶ moved to STATE_DIR/dumps/POOL-PID.core,
    │   named in the event's details (`core_dump`)
    └ a pipe (systemd-coredump, apport) or an absolute path: left where it
        is; the event says where to look (`core_dump_elsewhere`)
```

The kernel decides where a core goes, for the whole machine; poolwarden only
raises the worker's soft limit and picks up what the kernel wrote in the
worker's directory. A pattern that sends cores elsewhere is reported at
start (and by `poolwarden config check`) rather than changed: it belongs to
the administrator, and a container cannot change it anyway.

Pure (the pattern, file names, messages) apart from the few functions at the
end, which read `/proc`, the resource limit, and move the file.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import resource
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

CORE_PATTERN = "/proc/sys/kernel/core_pattern"
CORE_USES_PID = "/proc/sys/kernel/core_uses_pid"
DUMPS_DIR = "dumps"
"""Under the state directory: the cores poolwarden collected."""
PARTIAL_SUFFIX = ".partial"
"""A core still being copied (from another file system) into the dumps directory."""
MTIME_SLACK = 2.0
"""Seconds of clock and timestamp granularity allowed when telling a fresh core
from one left by an earlier crash: a core older than its worker is not its."""

CoreKind = Literal["cwd", "path", "pipe", "none"]


@dataclass(frozen=True, slots=True)
class CoreTarget:
    """Where the kernel writes a core, read from `core_pattern`.

    `cwd`: a relative name, in the crashing process's working directory
    (poolwarden collects these); `path`: an absolute path; `pipe`: a program
    the kernel pipes the core to (`handler` is its name); `none`: an empty
    pattern, no core files at all.
    """

    kind: CoreKind
    pattern: str
    uses_pid: bool = False
    handler: str = ""

    @property
    def collectable(self) -> bool:
        return self.kind == "cwd"


def parse_core_pattern(pattern: str, uses_pid: bool = False) -> CoreTarget:
    """`core_pattern`'s text (and `core_uses_pid`) as a `CoreTarget`; see core(5)."""
    pattern = pattern.rstrip("\n")
    if pattern.startswith("|"):
        program = pattern[1:].strip().split(" ", 1)[0]
        return CoreTarget("pipe", pattern, handler=os.path.basename(program))
    if not pattern.strip():
        return CoreTarget("none", pattern)
    kind: CoreKind = "path" if pattern.startswith("/") else "cwd"
    return CoreTarget(kind, pattern, uses_pid=uses_pid)


_SPECIFIER = re.compile(r"%(.)?", re.DOTALL)


def core_file_glob(target: CoreTarget, pid: int, signal: int | None = None) -> str:
    """A glob for the core file of process `pid` under `target` (relative or absolute).

    `%p` is the pid and `%s` the signal, when known; what the master cannot
    know for sure (the crashing thread's name `%e`, the time `%t`, the
    thread id `%i`, the pid in the initial namespace `%P`...) matches
    anything. An unknown specifier is dropped, as the kernel drops it; with
    `core_uses_pid` and no `%p`, the kernel appends `.PID`.
    """
    known = {"p": str(pid), "%": "%"}
    if signal is not None:
        known["s"] = str(signal)
    wildcards = set("PiIuUgdsteEhcCfF") - set(known)

    def replace(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter in known:
            return glob.escape(known[letter])
        return "*" if letter in wildcards else ""

    parts: list[str] = []
    position = 0
    for match in _SPECIFIER.finditer(target.pattern):
        parts.append(glob.escape(target.pattern[position : match.start()]))
        parts.append(replace(match))
        position = match.end()
    parts.append(glob.escape(target.pattern[position:]))
    name = "".join(parts)
    if target.uses_pid and "%p" not in target.pattern.replace("%%", ""):
        name += f".{pid}"
    # Several `*` in a row mean the same as one.
    return re.sub(r"\*+", "*", name)


def where_cores_go(target: CoreTarget) -> str:
    """Where this machine's cores go, as the end of a sentence."""
    if target.kind == "cwd":
        return f"into the worker's working directory (core_pattern {target.pattern!r})"
    if target.kind == "none":
        return "nowhere: the system's core_pattern is empty"
    if target.kind == "pipe":
        return f"to {target.handler or 'a program'} ({_look_for(target)})"
    return f"to {os.path.dirname(target.pattern) or '/'} (core_pattern {target.pattern!r})"


def _look_for(target: CoreTarget, pid: int | None = None) -> str:
    handler = target.handler
    if handler == "systemd-coredump":
        return f"see `coredumpctl info {pid}`" if pid else "see `coredumpctl list`"
    if handler.startswith("apport"):
        return "see /var/crash (apport)"
    return f"see the program of core_pattern {target.pattern!r}"


def where_to_look(target: CoreTarget, pid: int, signal: int | None = None) -> str:
    """For the event of a worker whose core the master did not collect."""
    if target.kind == "pipe":
        return f"sent to {target.handler or 'a program'}: {_look_for(target, pid)}"
    if target.kind == "path":
        return f"written by the kernel as {core_file_glob(target, pid, signal)}"
    if target.kind == "none":
        return "none written: the system's core_pattern is empty"
    return f"in the worker's working directory, as {core_file_glob(target, pid, signal)}"


def core_dumps_warning(target: CoreTarget | None, hard_limit: int) -> str | None:
    """Why `core_dumps = true` will not fill `STATE_DIR/dumps` on this machine,
    as the end of "core_dumps is on but ..."; None when it will."""
    if hard_limit == 0:
        return (
            "the hard limit on core size (RLIMIT_CORE) is 0, so no core can be written; "
            "raise it (`ulimit -Hc unlimited`, systemd's LimitCORE=infinity) before "
            "starting poolwarden"
        )
    if target is None:
        return f"{CORE_PATTERN} cannot be read: where the kernel writes cores is unknown"
    if target.collectable:
        return None
    if target.kind == "none":
        return "the system's core_pattern is empty: the kernel writes no cores"
    if target.kind == "pipe":
        return (
            f"the system's core_pattern sends cores to {target.handler or 'a program'}; "
            f"{_look_for(target)}"
        )
    return f"the system's core_pattern writes cores {where_cores_go(target)}; they stay there"


def dump_name(pool: str, pid: int, attempt: int = 0) -> str:
    """`web-1234.core`; `web-1234.2.core` if an older core of a reused pid is there."""
    return f"{pool}-{pid}.core" if attempt == 0 else f"{pool}-{pid}.{attempt}.core"


_DUMP_NAME = re.compile(r"^(?P<pool>[A-Za-z0-9_-]+)-(?P<pid>\d+)(?:\.\d+)?\.core\Z")


def parse_dump_name(name: str) -> tuple[str, int] | None:
    """(pool, pid) of a file `dump_name` made; None for any other file."""
    match = _DUMP_NAME.match(name)
    return (match["pool"], int(match["pid"])) if match else None


# --- I/O -------------------------------------------------------------------------------


def read_core_target(
    pattern_path: str = CORE_PATTERN, uses_pid_path: str = CORE_USES_PID
) -> CoreTarget | None:
    """This machine's `CoreTarget`; None if `/proc` cannot be read."""
    try:
        with open(pattern_path) as file:
            pattern = file.read()
    except OSError:
        return None
    try:
        with open(uses_pid_path) as file:
            uses_pid = file.read().strip() not in ("", "0")
    except OSError:
        uses_pid = False
    return parse_core_pattern(pattern, uses_pid)


def hard_core_limit() -> int:
    """The hard RLIMIT_CORE the workers inherit (RLIM_INFINITY is -1)."""
    return resource.getrlimit(resource.RLIMIT_CORE)[1]


def system_warning() -> str | None:
    """`core_dumps_warning` for this machine, now."""
    return core_dumps_warning(read_core_target(), hard_core_limit())


@dataclass(frozen=True, slots=True)
class CollectedCore:
    """What the event of a worker's end says about its core."""

    path: str | None = None
    """Where the master put the core (`STATE_DIR/dumps/POOL-PID.core`)."""
    elsewhere: str | None = None
    """Where to look instead, when the core was not collected."""


def collect_core(
    *,
    pool: str,
    pid: int,
    other_pids: tuple[int, ...] = (),
    cwd: str,
    dumped: bool,
    signal: int | None,
    since: float,
    state_dir: str,
    read_target: Callable[[], CoreTarget | None] = read_core_target,
) -> CollectedCore:
    """Move a reaped worker's core from its working directory into the dumps.

    `dumped` is `WCOREDUMP` of the reaped process `pid`. `other_pids` are
    processes whose status the master cannot see (the Python worker under a
    launch wrapper that does not `exec`): their cores are looked for too.
    A core on another file system is copied by a thread (into a `.partial`
    file, renamed when complete), so a large core does not stall the master;
    the returned path is where it will be. `read_target` reads the
    system's `core_pattern` (tests pass their own).
    """
    target = read_target()
    if target is None or (not dumped and not other_pids):
        return CollectedCore()
    if not target.collectable:
        return CollectedCore(elsewhere=where_to_look(target, pid, signal) if dumped else None)
    found = None
    for each in (pid, *other_pids):
        found = _newest(os.path.join(glob.escape(cwd), core_file_glob(target, each, signal)), since)
        if found:
            break
    if found is None:
        if dumped:
            where = core_file_glob(target, pid, signal)
            return CollectedCore(
                elsewhere=f"the kernel wrote one, but no {where} was found in {cwd}"
            )
        return CollectedCore()
    directory = os.path.join(state_dir, DUMPS_DIR)
    try:
        os.makedirs(directory, exist_ok=True)
        destination = _free_name(directory, pool, pid)
        _move(found, destination)
    except OSError as error:
        return CollectedCore(elsewhere=f"{found} (could not be moved: {error.strerror or error})")
    return CollectedCore(path=destination)


def _newest(pattern: str, since: float) -> str | None:
    best: tuple[float, str] | None = None
    for path in glob.glob(pattern):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_mtime < since - MTIME_SLACK:
            continue  # not a file the kernel wrote, or one older than the worker
        if best is None or info.st_mtime > best[0]:
            best = (info.st_mtime, path)
    return best[1] if best else None


def _free_name(directory: str, pool: str, pid: int) -> str:
    attempt = 0
    while True:
        path = os.path.join(directory, dump_name(pool, pid, attempt))
        if not os.path.exists(path) and not os.path.exists(path + PARTIAL_SUFFIX):
            return path
        attempt += 1 if attempt else 2


def _move(source: str, destination: str) -> None:
    try:
        os.rename(source, destination)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    partial = destination + PARTIAL_SUFFIX

    def copy() -> None:
        try:
            shutil.copy2(source, partial)
            os.replace(partial, destination)
            os.unlink(source)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(partial)

    # Not a daemon: a master that exits waits for the copy to finish.
    threading.Thread(target=copy, name=f"copy {os.path.basename(destination)}").start()
