"""Asking a worker to run one line of Python through `sys.remote_exec` (PEP 768).

```
 master                                       worker (the same interpreter, 3.14+)
   read_facts(pid) ─▶ decide(facts): usable?
   SCRIPT: a new 0600 file in the temp directory
   sys.remote_exec(pid, SCRIPT) ── writes into the worker's memory ──▶ a "run SCRIPT"
        (ptrace's permission: process_vm_writev)                      flag on its
                                                                      main thread
                             at the main thread's next eval-breaker check it runs:
                               import poolwarden.worker.bootstrap as b
                               b.dump_stacks(...)  |  b.attach_debugger(...)
```

Why beside the signals (`signals.py`): a signal works only while the worker
still handles it: nothing blocked it in every thread, and no library
replaced the handler poolwarden installed. `sys.remote_exec` needs none of
that. What it cannot do is reach a main thread that does not come back to
the eval loop: one stuck in C code holding the GIL, one waiting for the GIL
a thread spinning in C holds, one blocked in a system call (scripts run only
between bytecodes, and nothing wakes the thread). faulthandler's signal
handler, in C, needs no GIL. So each way in tries remote_exec first when it
is usable, and sends the signal when the worker has not acted within
`REMOTE_WAIT`: `stack_capture.StackPipe.capture` (its answer says which one
came: `via`) and `WorkerProcess.attach`. Python 3.11 to 3.13 have no
`sys.remote_exec` and send the signal straight away.

Why remote_exec first and not the signal: either order waits `REMOTE_WAIT`
when the first way fails, but a failed signal (blocked, handler replaced)
says nothing, while remote_exec's failures are mostly known before it is
tried (`decide`) or raised by the call, and cost no wait. Its dump is also
taken holding the GIL, a consistent picture of every thread, where the
signal handler reads other threads' frames while they run. The price: an
idle worker answers at its main thread's next wake-up (0.1 s at most, see
`REMOTE_WAIT`) rather than at once.

Three rules keep the two ways out of each other's way:

- A request carries its deadline, `not_after` (CLOCK_MONOTONIC: one clock
  for every process on the host), when the master sends the signal
  instead. A worker that gets to the request later does nothing, so a late
  run cannot add a second dump or stop the worker for a debugger nobody
  waits for.
- The script removes its own file when it runs. A file whose script never
  ran is removed when its `RemoteExec` goes (with its worker, or when the
  master exits), not before: CPython reports a vanished script on the
  worker's stderr.
- A stack dump comes in an envelope (`stack_envelope`), told apart from a
  signal's dump in the same pipe.

Whether remote_exec is usable is a pure function, `decide`, of `Facts` that
`read_facts` gathers from /proc. The call may still fail (the kernel has the
last word); the signal is then sent at once.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec
import psutil

from poolwarden.stacks import StackFrame, ThreadStack

SUPPORTED = hasattr(sys, "remote_exec")
"""This interpreter has `sys.remote_exec` (3.14+); without it only the signals work."""

REMOTE_WAIT = 0.5
"""Seconds a worker has to act on a remote_exec request before the master
sends the signal instead. An idle WSGI worker's main thread wakes every
0.1 s (`wsgi.MAIN_THREAD_WAKE`) and an ASGI worker's loop beats as often
(`loop_watch.BEAT_INTERVAL`); a busy one hands the main thread the GIL
within the switch interval (5 ms). It leaves 1.5 s of `stack`'s 2 s to the
signal, which faulthandler answers in milliseconds."""

SCRIPT_PREFIX = "poolwarden-remote-"
"""How the script files are named, in the temp directory: a short path (the
worker's buffer for it holds 511 bytes) that a worker running as another
user can reach once the file is given to it (the directory is sticky, so no
one else can replace the file)."""

DISABLE_ENV = "PYTHON_DISABLE_REMOTE_DEBUG"
DISABLE_XOPTION = "disable_remote_debug"
PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
CAP_SYS_PTRACE = 19
"""The capability's bit in /proc/PID/status `CapEff`."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What decides whether `sys.remote_exec` can reach one worker."""

    has_remote_exec: bool
    """The master's interpreter has `sys.remote_exec` (3.14+)."""
    master_enabled: bool
    """`sys.is_remote_debug_enabled()` in the master: the caller needs it too."""
    master_version: tuple[int, int]
    worker_version: tuple[int, int] | None
    """None when the worker does not run the master's interpreter binary, so
    its version is not known."""
    worker_argv: tuple[str, ...]
    """The worker's command line (/proc/PID/cmdline), for its -X and -E/-I."""
    worker_disable_env: str | None
    """PYTHON_DISABLE_REMOTE_DEBUG in the worker's start-up environment."""
    ptrace_scope: int | None
    """kernel.yama.ptrace_scope; None without Yama (ptrace's own rules only)."""
    same_user: bool
    """The worker's real, effective and saved uids and gids are the master's
    real uid and gid (ptrace's rule for a process without CAP_SYS_PTRACE)."""
    cap_sys_ptrace: bool
    """The master holds CAP_SYS_PTRACE (root, usually)."""
    descendant: bool
    """The worker descends from the master (its child, or a launch wrapper's)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    usable: bool
    reason: str
    """One sentence: why not, or "usable"."""


@dataclass(frozen=True, slots=True)
class PythonOptions:
    """The interpreter options on a command line that bear on remote debugging."""

    ignore_environment: bool
    """-E or -I: PYTHON* variables, PYTHON_DISABLE_REMOTE_DEBUG among them, are ignored."""
    xoptions: frozenset[str]
    """The names of the -X options (`-X name=value` gives `name`)."""


def python_options(argv: Sequence[str]) -> PythonOptions:
    """The options of `python [OPTIONS] -m MODULE ...` up to the first argument
    that is not one (`-m`, `-c`, `-`, a script)."""
    ignore = False
    xoptions: set[str] = set()
    args = iter(argv[1:])
    for arg in args:
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                next(args, None)
            continue
        letters = arg[1:]
        for index, letter in enumerate(letters):
            if letter in "XW":
                value = letters[index + 1 :] or next(args, "")
                if letter == "X":
                    xoptions.add(value.partition("=")[0])
                break
            if letter in "mc":
                return PythonOptions(ignore, frozenset(xoptions))
            if letter in "EI":
                ignore = True
    return PythonOptions(ignore, frozenset(xoptions))


def decide(facts: Facts) -> Verdict:
    """Whether the master can run a script in the worker through
    `sys.remote_exec`; when not, the first reason found.

    The ptrace rules are the kernel's: without Yama, or at ptrace_scope 0,
    the same user or CAP_SYS_PTRACE; at 1, also an ancestor (or
    CAP_SYS_PTRACE); at 2, CAP_SYS_PTRACE only; at 3, nobody.
    """
    major, minor = facts.master_version
    if not facts.has_remote_exec:
        return Verdict(
            False, f"sys.remote_exec is new in Python 3.14; the master runs {major}.{minor}"
        )
    if not facts.master_enabled:
        return Verdict(
            False,
            "remote debugging is off in the master (PYTHON_DISABLE_REMOTE_DEBUG, "
            "-X disable_remote_debug, or an interpreter built without it)",
        )
    if facts.worker_version is None:
        return Verdict(
            False,
            "the worker does not run the master's interpreter, so its Python version "
            "is not known to match",
        )
    if facts.worker_version != facts.master_version:
        theirs = ".".join(str(part) for part in facts.worker_version)
        return Verdict(False, f"the worker runs Python {theirs}, the master {major}.{minor}")
    options = python_options(facts.worker_argv)
    if DISABLE_XOPTION in options.xoptions:
        return Verdict(False, f"the worker was started with -X {DISABLE_XOPTION}")
    if facts.worker_disable_env and not options.ignore_environment:
        return Verdict(False, f"the worker was started with {DISABLE_ENV} set")
    scope = facts.ptrace_scope
    if scope is not None and scope >= 3:
        return Verdict(False, f"kernel.yama.ptrace_scope is {scope}: no process may ptrace another")
    if facts.cap_sys_ptrace:
        return Verdict(True, "usable")
    if scope == 2:
        return Verdict(
            False, "kernel.yama.ptrace_scope is 2: only a process with CAP_SYS_PTRACE may ptrace"
        )
    if not facts.same_user:
        return Verdict(
            False, "the worker runs as another user, and the master lacks CAP_SYS_PTRACE"
        )
    if scope == 1 and not facts.descendant:
        return Verdict(
            False,
            "kernel.yama.ptrace_scope is 1 and the worker does not descend from the master",
        )
    return Verdict(True, "usable")


# --- the scripts -------------------------------------------------------------------


def stack_script(path: str, token: str, not_after: float) -> str:
    """Write every thread's stack to the stack pipe, in `token`'s envelope."""
    return (
        "import poolwarden.worker.bootstrap as b\n"
        f"b.dump_stacks({token!r}, {not_after!r}, {path!r})\n"
    )


def attach_script(path: str, not_after: float) -> str:
    """Open the pdb server and stop the main thread, as ATTACH_SIGNAL does."""
    return f"import poolwarden.worker.bootstrap as b\nb.attach_debugger({not_after!r}, {path!r})\n"


def without_script_frames(threads: Iterable[ThreadStack]) -> list[ThreadStack]:
    """A remote_exec dump as the signal's would read: the main thread wrote
    it from the script, so its innermost frames are `dump_stacks` and the
    script's `<module>` (CPython runs it as "<string>"); they go, and the
    frame the script interrupted is innermost again."""
    result = []
    for thread in threads:
        frames = thread.frames
        if thread.current and frames and _is_dump_stacks(frames[0]):
            frames = frames[1:]
            if frames and frames[0].filename == "<string>" and frames[0].name == "<module>":
                frames = frames[1:]
            thread = msgspec.structs.replace(thread, frames=frames)
        result.append(thread)
    return result


def _is_dump_stacks(frame: StackFrame) -> bool:
    return frame.name == "dump_stacks" and frame.filename.endswith(
        os.path.join("poolwarden", "worker", "bootstrap.py")
    )


# --- the edge: /proc, files, the call ---------------------------------------------


def read_facts(pid: int) -> Facts:
    """The `Facts` about worker `pid` and this master, from /proc. Whatever
    cannot be read counts against remote_exec (the signal still works)."""
    enabled = getattr(sys, "is_remote_debug_enabled", None)
    environment = _read_nul_list(f"/proc/{pid}/environ")
    disable = next(
        (item.partition("=")[2] for item in environment if item.startswith(DISABLE_ENV + "=")),
        None,
    )
    same_user = descendant = False
    try:
        process = psutil.Process(pid)
        uid, gid = os.getuid(), os.getgid()
        same_user = set(process.uids()) == {uid} and set(process.gids()) == {gid}
        descendant = any(parent.pid == os.getpid() for parent in process.parents())
    except psutil.Error:
        pass
    return Facts(
        has_remote_exec=SUPPORTED,
        master_enabled=bool(enabled()) if callable(enabled) else False,
        master_version=(sys.version_info.major, sys.version_info.minor),
        worker_version=_worker_version(pid),
        worker_argv=tuple(_read_nul_list(f"/proc/{pid}/cmdline")),
        worker_disable_env=disable,
        ptrace_scope=parse_ptrace_scope(_read_text(PTRACE_SCOPE)),
        same_user=same_user,
        cap_sys_ptrace=has_capability(_read_text("/proc/self/status"), CAP_SYS_PTRACE),
        descendant=descendant,
    )


def _worker_version(pid: int) -> tuple[int, int] | None:
    """The master's version if the worker runs the same interpreter binary
    (a venv's python is a link to it), else None."""
    try:
        mine = os.stat(sys.executable)
        theirs = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
        return None
    return (sys.version_info.major, sys.version_info.minor)


def parse_ptrace_scope(text: str) -> int | None:
    """kernel.yama.ptrace_scope from its file's text; "" (no such file: no
    Yama) is None, and anything but a number counts as the strictest, 3."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return 3


def has_capability(status: str, bit: int) -> bool:
    """Whether /proc/PID/status text shows capability `bit` in `CapEff`."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "CapEff":
            try:
                return bool(int(value.strip(), 16) >> bit & 1)
            except ValueError:
                return False
    return False


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return ""


def _read_nul_list(path: str) -> list[str]:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError:
        return []
    return [os.fsdecode(item) for item in data.split(b"\0") if item]


def write_script(build: Callable[[str], str], owner: tuple[int, int] | None = None) -> str:
    """A new file holding `build(path)`, readable only by its owner: this
    user, or `owner` (uid, gid), the worker's, when the master runs as root
    and the worker as another user. Returns its absolute path."""
    fd, path = tempfile.mkstemp(prefix=SCRIPT_PREFIX, suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(build(path))
            if owner is not None:
                os.fchown(file.fileno(), *owner)
    except BaseException:
        _remove_quietly(path)
        raise
    return path


def _owner(pid: int) -> tuple[int, int] | None:
    """The worker's (uid, gid) when a root master must give it the script."""
    if os.geteuid() != 0:
        return None
    try:
        process = psutil.Process(pid)
        uid, gid = process.uids().real, process.gids().real
    except psutil.Error:
        return None
    return None if uid == 0 else (uid, gid)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_all(paths: set[str]) -> None:
    for path in list(paths):
        _remove_quietly(path)
    paths.clear()


class RemoteExec:
    """PEP 768's way into one worker: decide, write the script, ask.

    Script files whose script never ran are removed when this object goes
    (with its worker) or when the master exits; the others removed
    themselves when they ran.
    """

    def __init__(self) -> None:
        self._files: set[str] = set()
        self._lock = threading.Lock()
        weakref.finalize(self, _remove_all, self._files)

    def run(self, pid: int, build: Callable[[str], str]) -> Verdict:
        """Have worker `pid` run the script `build(path)` returns, at its main
        thread's next chance; usable=True when it was asked, else why not.

        It blocks for the /proc reads and the call (milliseconds): run it in a
        thread, off the master's event loop.
        """
        verdict = decide(read_facts(pid))
        if not verdict.usable:
            return verdict
        path = write_script(build, _owner(pid))
        with self._lock:
            self._files.difference_update([p for p in self._files if not os.path.exists(p)])
            self._files.add(path)
        remote_exec: Callable[[int, str], None] = getattr(sys, "remote_exec")  # noqa: B009
        try:
            remote_exec(pid, path)
        except (OSError, RuntimeError, ValueError) as error:
            with self._lock:
                self._files.discard(path)
            _remove_quietly(path)
            return Verdict(False, f"sys.remote_exec failed: {error}")
        return verdict
