"""How a worker's end is classified: which event, who ended it, and the evidence.

```
 master: reap (pidfd) ─┐
   channel: StartupFailed, EOF  ├─▶ WorkerEnd ──classify()──▶ Classification ──▶ EventStore
   pipes: stdout/stderr tails   │    (data)      (pure)       (event id, who, details,
   crash file, cgroup oom_kill  │                              fingerprint, counts?)
   scoreboard: in-flight ───────┘
```

Pure: no I/O, no clock. The master collects the evidence into a `WorkerEnd`
and writes what `classify` returns; rapid-fail protection reads
`counts_as_failure`. The rules, first match wins (`sig` is the signal that
ended the process; "poolwarden's" means `sig in signals_sent`):

| # | evidence                                              | event | who ended it                 | counts |
|---|-------------------------------------------------------|-------|------------------------------|--------|
| 1 | the worker reported a start-up failure                | 2022  | the worker itself            | yes    |
| 1b| ended_by = orphan_reaped (counted when it was kept)   | 2023  | poolwarden                   | no     |
| 2 | malformed data on the channel                         | 5127  | poolwarden                   | yes    |
| 3 | ended_by = hang (no answer to a ping)                 | 5010  | poolwarden                   | yes    |
| 4 | ended_by = startup_time_limit                         | 5012  | poolwarden                   | yes    |
| 5 | SIGKILL, not poolwarden's, oom_killed is True         | 2024  | the kernel's OOM killer      | if not asked |
| 6 | channel broke while the process lived                 | 5011  | poolwarden / as it ended     | yes    |
| 7 | ended_by = memory_hard_limit                          | 2026  | poolwarden                   | no     |
| 7b| ended_by = request_timeout (action `kill`)            | 2040  | poolwarden                   | no     |
| 8 | asked to end; exit 0 or poolwarden's SIGTERM          | 2023  | poolwarden (the reason)      | no     |
| 8b| ended_by = signal (SIGTERM from outside), drained     | 2023  | poolwarden (SIGTERM from outside) | no |
| 9 | asked to end; poolwarden's SIGKILL or SIGABRT         | 5013  | poolwarden (time limit)      | no     |
| 10| not asked, never ready, ended by itself               | 2022  | the worker itself            | yes    |
| 11| anything else                                         | 5009  | itself / another process     | if not asked |

"Asked to end" is `ended_by` in recycle, shutdown, idle, drain,
administrator, signal (a SIGTERM from outside the worker reported before it
drained): a worker that dies some other way while draining is still
5009 (or 2024), with the reason in the message, but does not count toward
rapid-fail protection: planned work must never stop a pool.

It never guesses. A SIGKILL it did not send is "from outside" unless the
master has evidence (`oom_killed is True`) that the OOM killer sent it;
`oom_killed = None` (unknown) is recorded as unknown and the message says
nothing about memory. A crash signal (SIGSEGV, SIGBUS, SIGFPE, SIGABRT,
SIGILL) is the worker's own unless the master knows the sender.

The fingerprint groups repeats of one failure and holds nothing that changes
between repeats (no pid, time, address, counter): exception type, app
module and line for exceptions; signal and innermost app frame (from the
faulthandler dump) for native crashes; exit status and the last stderr line
(numbers masked) for plain exits.
"""

from __future__ import annotations

import math
import os
import re
import signal
from typing import Any, Literal

import msgspec

from poolwarden.channel import Frame, StartupFailure
from poolwarden.events import catalog as ids
from poolwarden.events.catalog import CATALOG, Level
from poolwarden.events.store import NewEvent, one_line
from poolwarden.importer import is_app_frame
from poolwarden.units import format_duration

EndedBy = Literal[
    "recycle",
    "hang",
    "startup_time_limit",
    "shutdown",
    "idle",
    "drain",
    "administrator",
    "memory_hard_limit",
    "request_timeout",
    "orphan_reaped",
    "signal",
]
"""Why poolwarden asked (or forced) a worker to end; "signal": the worker
got SIGTERM from outside, told the master, and was drained."""

PLANNED: frozenset[str] = frozenset(
    {"recycle", "shutdown", "idle", "drain", "administrator", "signal"}
)
"""Endings poolwarden asked for that are not failures (the worker is drained)."""

REASONS: dict[str, str] = {
    "recycle": "recycle",
    "hang": "no answer to a ping",
    "startup_time_limit": "start-up time limit",
    "shutdown": "server shutdown",
    "idle": "idle time-out",
    "drain": "drain",
    "administrator": "an administrator",
    "memory_hard_limit": "memory hard limit",
    "request_timeout": "a request past request_timeout",
    "orphan_reaped": "an orphan reaped",
    "signal": "SIGTERM from outside; drained",
}
"""How each `ended_by` reads in a message: `ended by poolwarden (recycle)`."""

CRASH_SIGNALS: frozenset[int] = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT, signal.SIGILL}
)
"""Signals a process raises on itself when it crashes; faulthandler dumps on each."""

FORCED_SIGNALS: frozenset[int] = frozenset({signal.SIGKILL, signal.SIGABRT})
"""poolwarden's signals that end a worker without its consent (at a time limit;
SIGABRT first, so faulthandler dumps the stacks). SIGTERM asks; these force."""

FATAL_ERRORS: dict[str, str] = {
    "Segmentation fault": "SIGSEGV",
    "Bus error": "SIGBUS",
    "Floating point exception": "SIGFPE",
    "Floating-point exception": "SIGFPE",  # Python 3.13's spelling
    "Aborted": "SIGABRT",
    "Illegal instruction": "SIGILL",
}
"""faulthandler's `Fatal Python error: ...` wording, by signal."""

MAX_DUMP = 256 * 1024
"""Characters of a crash dump kept in an event (the start: the crashing thread)."""
MAX_TAIL_LINES = 200
MAX_TAIL_LINE = 2000


# --- the evidence ---------------------------------------------------------------------


class WorkerEnd(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the master knows about a worker process that has ended."""

    pool: str
    pid: int
    returncode: int
    """As `subprocess` reports it: negative for the signal that killed it."""
    ended_by: EndedBy | None = None
    """Why poolwarden asked or forced it to end; None if it never did."""
    signals_sent: list[int] = []
    """Every signal poolwarden sent the process (e.g. SIGABRT for a stack dump,
    then SIGKILL): an exit by one of them is poolwarden's doing."""
    signal_sender: str | None = None
    """Who sent the signal that ended it, when the master knows (e.g. from
    the kernel log), as a description: `pid 4242 (deploy.sh)`."""
    startup_failure: StartupFailure | None = None
    """The start-up failure the worker itself reported (`StartupFailed`); not one
    the master made up for a time-out or a silent death."""
    ever_ready: bool = False
    channel_broken_while_alive: bool = False
    malformed_channel_data: str | None = None
    """What was wrong with a message that could not be decoded."""
    unexpected_exception: str | None = None
    """Traceback text of an exception that escaped into poolwarden's worker runtime."""
    stdout_tail: list[str] = []
    stderr_tail: list[str] = []
    crash_dump: str | None = None
    """The faulthandler crash file's text."""
    oom_killed: bool | None = None
    """True: the kernel says its OOM killer killed it; False: it says not; None: unknown."""
    oom_evidence: str | None = None
    """What `oom_killed` rests on: `cgroup v2 .../memory.events: oom_kill 0 -> 1`,
    or `kernel log: Killed process 4242 (python3)`."""
    last_rss: int | None = None
    uptime: float = 0.0
    requests_served: int = 0
    in_flight: list[dict[str, Any]] = []
    """From the scoreboard: method, path, client, elapsed, response_started."""
    core_dump: str | None = None
    """Where the master put the worker's core file (`STATE_DIR/dumps/...`)."""
    core_dump_elsewhere: str | None = None
    """Where to look for a core the master did not collect (systemd-coredump...)."""


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    """Which event a worker's end is, in one line and with its evidence."""

    event_id: int
    level: Level
    message: str
    """One line; says who ended the process."""
    who: str | None
    """`the worker itself (exit status 3)`, `poolwarden (recycle)`, `another
    process (SIGKILL from outside)`, `the kernel's OOM killer`."""
    counts_as_failure: bool
    """Whether rapid-fail protection counts it."""
    details: dict[str, Any]
    fingerprint: str | None
    """Groups repeats; None for events that are not failures."""
    pool: str
    pid: int

    def new_event(self, time: float | None = None) -> NewEvent:
        """The event to append to the store."""
        return NewEvent(
            event_id=self.event_id,
            message=self.message,
            pool=self.pool,
            pid=self.pid,
            details=self.details,
            fingerprint=self.fingerprint,
            time=time,
        )


# --- faulthandler dumps and tracebacks --------------------------------------------------


class DumpThread(msgspec.Struct, frozen=True, kw_only=True):
    """One thread of a faulthandler dump; frames innermost first, as printed."""

    ident: str
    current: bool
    frames: list[Frame]


class CrashDump(msgspec.Struct, frozen=True, kw_only=True):
    """A parsed faulthandler dump."""

    fatal_error: str | None
    """`Segmentation fault`, `Aborted`...; None for a dump without that line."""
    signal: str | None
    """The signal the fatal error names (`SIGSEGV`), if it names one."""
    threads: list[DumpThread]

    @property
    def current_thread(self) -> DumpThread | None:
        """The thread that crashed (or received the signal)."""
        for thread in self.threads:
            if thread.current:
                return thread
        return self.threads[0] if self.threads else None

    def app_frame(self) -> Frame | None:
        """The innermost frame of the app's own code: in the crashing thread,
        else (a dump on a signal sent from outside, which the main thread
        receives while another thread is stuck in the app) in any thread."""
        thread = self.current_thread
        if thread is not None:
            found = next((f for f in thread.frames if is_app_frame(f.filename)), None)
            if found is not None:
                return found
        for other in self.threads:
            found = next((f for f in other.frames if is_app_frame(f.filename)), None)
            if found is not None:
                return found
        return None

    def innermost_frame(self) -> Frame | None:
        thread = self.current_thread
        return thread.frames[0] if thread and thread.frames else None


_FATAL = re.compile(r"^Fatal Python error: (?P<error>.+?)\s*$")
_THREAD = re.compile(
    r"^(?:(?P<current>Current thread)|Thread) (?P<ident>0x[0-9a-fA-F]+)\b.*"
    r"\(most recent call first\):\s*$"
)
_STACK = re.compile(r"^Stack \(most recent call first\):\s*$")
_DUMP_FRAME = re.compile(
    r'^\s+File (?:"(?P<file>.*)"|\?\?\?), line (?P<line>\d+|\?\?\?) in (?P<name>.*?)\s*$'
)


def parse_crash_dump(text: str) -> CrashDump | None:
    """The crash in a faulthandler file, or None if it holds no dump.

    A file can hold several dumps (stack dumps on request, then the crash):
    the last `Fatal Python error` is the one that ended the process.
    """
    lines = text.splitlines()
    start = 0
    for index, line in enumerate(lines):
        if _FATAL.match(line):
            start = index
    fatal_error: str | None = None
    threads: list[DumpThread] = []
    ident: str | None = None
    current = False
    frames: list[Frame] = []

    def flush() -> None:
        if ident is not None:
            threads.append(DumpThread(ident=ident, current=current, frames=frames))

    for line in lines[start:]:
        if (match := _FATAL.match(line)) and fatal_error is None:
            fatal_error = match["error"]
        elif match := _THREAD.match(line):
            flush()
            ident, current, frames = match["ident"], bool(match["current"]), []
        elif _STACK.match(line):
            flush()
            ident, current, frames = "stack", True, []
        elif (match := _DUMP_FRAME.match(line)) and ident is not None:
            lineno = match["line"]
            frames.append(
                Frame(
                    filename=match["file"] if match["file"] is not None else "???",
                    lineno=int(lineno) if lineno.isdigit() else 0,
                    name=match["name"],
                )
            )
    flush()
    if fatal_error is None and not threads:
        return None
    return CrashDump(
        fatal_error=fatal_error,
        signal=FATAL_ERRORS.get(fatal_error or ""),
        threads=threads,
    )


class ParsedTraceback(msgspec.Struct, frozen=True, kw_only=True):
    """A Python traceback's text, read back: frames outermost first, as printed."""

    exception_type: str | None
    message: str
    frames: list[Frame]

    def app_frame(self) -> Frame | None:
        """The innermost frame of the app's own code."""
        return next((f for f in reversed(self.frames) if is_app_frame(f.filename)), None)


_TB_FRAME = re.compile(r'^\s+File "(?P<file>[^"]*)", line (?P<line>\d+)(?:, in (?P<name>.+?))?\s*$')
_TB_HEADER = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")


def parse_traceback(text: str) -> ParsedTraceback:
    """The last exception of a traceback printed by Python (`traceback.format_exc()`).

    Chained exceptions print the last one last; its frames follow the last
    `Traceback (most recent call last):` line.
    """
    lines = text.splitlines()
    start = 0
    for index, line in enumerate(lines):
        if line.startswith(_TB_HEADER):
            start = index + 1
    frames: list[Frame] = []
    exception_line: str | None = None
    rest: list[str] = []
    for index in range(start, len(lines)):
        line = lines[index]
        if match := _TB_FRAME.match(line):
            source = ""
            if index + 1 < len(lines) and lines[index + 1].startswith("    "):
                source = lines[index + 1].strip()
            frames.append(
                Frame(
                    filename=match["file"],
                    lineno=int(match["line"]),
                    name=match["name"] or "<module>",
                    line=source,
                )
            )
        elif line and not line[0].isspace():
            exception_line = line
            rest = lines[index + 1 :]
            break
    if exception_line is None or (start == 0 and not frames):
        return ParsedTraceback(exception_type=None, message=text.strip(), frames=frames)
    match = _EXCEPTION_LINE.match(exception_line)
    if match is None:
        return ParsedTraceback(
            exception_type=None, message="\n".join([exception_line, *rest]), frames=frames
        )
    message = "\n".join([match["message"] or "", *rest]).strip()
    return ParsedTraceback(exception_type=match["type"], message=message, frames=frames)


# --- the classification ------------------------------------------------------------------


def signal_name(number: int) -> str:
    """`SIGSEGV`; `signal 42` for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def short_path(filename: str) -> str:
    """The last two parts of a path (`app/views.py`): stable across deploys into
    new release directories, yet telling `views.py` files apart."""
    parts = filename.replace(os.sep, "/").split("/")
    return "/".join(parts[-2:])


def frame_key(frame: Frame) -> str:
    """`app/views.py:12 in crash`, for fingerprints and messages."""
    return f"{short_path(frame.filename)}:{frame.lineno} in {frame.name}"


_HEX = re.compile(r"0x[0-9a-fA-F]+")
_NUMBER = re.compile(r"\d+")


def normalize_line(line: str, limit: int = 160) -> str:
    """A log line with what changes between repeats masked (addresses, numbers)."""
    masked = _NUMBER.sub("N", _HEX.sub("ADDR", line))
    return one_line(masked, limit)


def _last_line(lines: list[str]) -> str | None:
    return next((line for line in reversed(lines) if line.strip()), None)


def _tail(lines: list[str]) -> list[str]:
    return [line[:MAX_TAIL_LINE] for line in lines[-MAX_TAIL_LINES:]]


def _frame_data(frame: Frame | None) -> dict[str, Any] | None:
    if frame is None:
        return None
    return {"filename": frame.filename, "lineno": frame.lineno, "name": frame.name}


class _Ending:
    """How the process ended, worked out once from the evidence."""

    def __init__(self, end: WorkerEnd) -> None:
        self.end = end
        rc = end.returncode
        self.signal = -rc if rc < 0 else None
        self.signal_name = signal_name(self.signal) if self.signal is not None else None
        self.by_poolwarden = self.signal is not None and self.signal in end.signals_sent
        self.dump = parse_crash_dump(end.crash_dump) if end.crash_dump else None
        self.exception = (
            parse_traceback(end.unexpected_exception) if end.unexpected_exception else None
        )
        self.oom = (
            self.signal == signal.SIGKILL and not self.by_poolwarden and end.oom_killed is True
        )
        self.asked = end.ended_by in PLANNED
        self.reason = REASONS.get(end.ended_by or "", "no reason given")

    def natural_who(self) -> str:
        """Who ended it, from the exit alone (poolwarden's own signals aside)."""
        end = self.end
        if self.by_poolwarden:
            reason = f"{self.reason}; " if end.ended_by else ""
            return f"poolwarden ({reason}{self.signal_name})"
        if self.oom:
            return "the kernel's OOM killer"
        if self.signal is not None:
            if end.signal_sender:
                return f"another process ({self.signal_name} from {end.signal_sender})"
            if self.signal in CRASH_SIGNALS:
                return f"the worker itself (crashed with {self.signal_name})"
            not_oom = (
                "; not the OOM killer"
                if self.signal == signal.SIGKILL and end.oom_killed is False
                else ""
            )
            return f"another process ({self.signal_name} from outside{not_oom})"
        if self.exception is not None and self.exception.exception_type:
            return (
                f"the worker itself (an unhandled {self.exception.exception_type}, "
                f"exit status {end.returncode})"
            )
        return f"the worker itself (exit status {end.returncode})"

    def ended_itself(self) -> bool:
        return (
            not self.by_poolwarden
            and not self.oom
            and not self.end.signal_sender
            and (self.signal is None or self.signal in CRASH_SIGNALS)
        )

    def how(self) -> str:
        """What happened, for the message: the crash site, exception or last output."""
        end = self.end
        if self.exception is not None and self.exception.exception_type:
            frame = self.exception.app_frame()
            where = f" at {frame_key(frame)}" if frame else ""
            text = f"{self.exception.exception_type}: {self.exception.message}".rstrip(": ")
            return f"{text}{where}"
        if self.signal is not None and self.signal in CRASH_SIGNALS and self.dump is not None:
            frame = self.dump.app_frame() or self.dump.innermost_frame()
            where = f" at {frame_key(frame)}" if frame else ""
            return f"crashed with {self.signal_name}{where}"
        if self.signal is not None:
            return f"killed by {self.signal_name}"
        last = _last_line(end.stderr_tail)
        suffix = f"; last stderr line: {last.strip()}" if last else ""
        return f"exit status {end.returncode}{suffix}"

    def fingerprint(self) -> str:
        """The failure's identity, from how it ended."""
        end = self.end
        if self.exception is not None and self.exception.exception_type:
            frame = self.exception.app_frame()
            where = frame_key(frame) if frame else "no app frame"
            return f"exception {self.exception.exception_type} {where}"
        if self.oom:
            return "oom_kill"
        if self.signal is not None:
            if self.by_poolwarden:
                return f"{self.signal_name} from poolwarden ({self.reason})"
            if self.signal in CRASH_SIGNALS and not end.signal_sender:
                return f"{self.signal_name} {self._dump_location()}"
            source = "another process" if end.signal_sender else "outside"
            return f"{self.signal_name} from {source}"
        last = _last_line(end.stderr_tail)
        return f"exit {end.returncode}" + (f": {normalize_line(last)}" if last else "")

    def _dump_location(self) -> str:
        if self.dump is None:
            return "no crash dump"
        frame = self.dump.app_frame() or self.dump.innermost_frame()
        return frame_key(frame) if frame else "no Python frame"

    def details(self, who: str) -> dict[str, Any]:
        end = self.end
        details: dict[str, Any] = {
            "who": who,
            "ended_by": end.ended_by,
            "exit_code": end.returncode if end.returncode >= 0 else None,
            "signal": self.signal_name,
            "signals_sent": [signal_name(number) for number in end.signals_sent],
            "signal_sender": end.signal_sender,
            "ever_ready": end.ever_ready,
            "uptime": end.uptime,
            "requests_served": end.requests_served,
            "last_rss": end.last_rss,
            "oom_killed": end.oom_killed,
            "oom_evidence": end.oom_evidence,
            "in_flight": [dict(request) for request in end.in_flight],
            "stdout_tail": _tail(end.stdout_tail),
            "stderr_tail": _tail(end.stderr_tail),
        }
        if end.startup_failure is not None:
            failure = end.startup_failure
            details["startup_failure"] = msgspec.to_builtins(failure)
        if self.exception is not None:
            details["exception"] = {
                "type": self.exception.exception_type,
                "message": self.exception.message,
                "frame": _frame_data(self.exception.app_frame()),
                "traceback": end.unexpected_exception,
            }
        if end.crash_dump:
            dump = end.crash_dump
            details["crash"] = {
                "fatal_error": self.dump.fatal_error if self.dump else None,
                "signal": self.dump.signal if self.dump else None,
                "frame": _frame_data(self.dump.app_frame()) if self.dump else None,
                "innermost_frame": _frame_data(self.dump.innermost_frame()) if self.dump else None,
                "dump": dump if len(dump) <= MAX_DUMP else dump[:MAX_DUMP] + "\n[truncated]\n",
            }
        if end.core_dump is not None:
            details["core_dump"] = end.core_dump
        if end.core_dump_elsewhere is not None:
            details["core_dump_elsewhere"] = end.core_dump_elsewhere
        if end.channel_broken_while_alive:
            details["channel_broken_while_alive"] = True
        if end.malformed_channel_data is not None:
            details["malformed_channel_data"] = end.malformed_channel_data
        return details


def _worker(end: WorkerEnd) -> str:
    return f"worker {end.pid} of pool {end.pool}"


def _life(end: WorkerEnd) -> str:
    """`after 3m5s and 120 requests`."""
    seconds = end.uptime
    if not math.isfinite(seconds) or seconds < 0:
        uptime = "an unknown time"
    else:
        uptime = format_duration(round(seconds, 3) if seconds < 10 else round(seconds))
    plural = "" if end.requests_served == 1 else "s"
    return f"after {uptime} and {end.requests_served} request{plural}"


def classify(end: WorkerEnd) -> Classification:
    """The event for a worker's end (see the table in the module docstring)."""
    ending = _Ending(end)
    name = _worker(end)

    def result(
        event_id: int, what: str, who: str, counts: bool, fingerprint: str | None
    ) -> Classification:
        return Classification(
            event_id=event_id,
            level=CATALOG[event_id].level,
            message=one_line(f"{what}; ended by {who}"),
            who=who,
            counts_as_failure=counts,
            details=ending.details(who),
            fingerprint=fingerprint,
            pool=end.pool,
            pid=end.pid,
        )

    def dump_suffix() -> str:
        frame = ending.dump.app_frame() if ending.dump else None
        return f" {frame_key(frame)}" if frame else ""

    # 1. The worker said why it could not start.
    if end.startup_failure is not None:
        failure = end.startup_failure
        where = f"{failure.module}:{failure.lineno}" if failure.module else failure.app
        return result(
            ids.WORKER_STARTUP_FAILED,
            f"{name} failed to start: {failure.headline()}",
            ending.natural_who(),
            True,
            f"startup {failure.phase} {failure.exception_type} {where}",
        )
    # An orphan's failure was counted when it was kept; its end is no news.
    if end.ended_by == "orphan_reaped":
        return result(
            ids.WORKER_EXITED,
            f"{name}, kept stopped as an orphan, was reaped {_life(end)}",
            f"poolwarden ({ending.reason})",
            False,
            None,
        )
    # 2.-4. poolwarden ended it because something was wrong.
    if end.malformed_channel_data is not None:
        return result(
            ids.WORKER_MALFORMED_DATA,
            f"{name} sent malformed data on its channel ({end.malformed_channel_data})",
            _forced(ending, "malformed channel data"),
            True,
            "malformed_channel_data",
        )
    if end.ended_by == "hang":
        return result(
            ids.WORKER_PING_FAILED,
            f"{name} did not answer a ping in time {_life(end)}",
            _forced(ending, ending.reason),
            True,
            "hang" + dump_suffix(),
        )
    if end.ended_by == "startup_time_limit":
        return result(
            ids.WORKER_STARTUP_TIME_LIMIT,
            f"{name} was not ready within the start-up time limit",
            _forced(ending, ending.reason),
            True,
            "startup_time_limit" + dump_suffix(),
        )
    # 5. The kernel's word beats what follows from the death (a broken channel).
    if ending.oom:
        while_asked_oom = f" while being asked to end ({ending.reason})" if ending.asked else ""
        rss = f"; last RSS {end.last_rss} bytes" if end.last_rss is not None else ""
        return result(
            ids.WORKER_OOM_KILLED,
            f"{name} was killed by the kernel's OOM killer{while_asked_oom} {_life(end)}{rss}",
            ending.natural_who(),
            not ending.asked,
            "oom_kill",
        )
    if end.channel_broken_while_alive:
        return result(
            ids.WORKER_CHANNEL_BROKEN,
            f"{name}: its channel broke while it was alive {_life(end)}",
            _forced(ending, "the channel broke"),
            True,
            "channel_broken",
        )
    if end.ended_by == "memory_hard_limit":
        rss = f" ({end.last_rss} bytes resident)" if end.last_rss is not None else ""
        return result(
            ids.WORKER_MEMORY_HARD_LIMIT,
            f"{name} exceeded the memory hard limit{rss} {_life(end)}",
            _forced(ending, ending.reason),
            False,
            "memory_hard_limit",
        )
    if end.ended_by == "request_timeout":
        return result(
            ids.REQUEST_TIMEOUT,
            f"{name} was killed because a request ran past request_timeout {_life(end)}",
            _forced(ending, ending.reason),
            False,
            "request_timeout_kill",
        )
    # 8.-9. Asked to end, and it did (or was made to at the time limit).
    if ending.asked and (end.returncode == 0 or ending.by_poolwarden):
        if ending.signal in FORCED_SIGNALS:
            return result(
                ids.WORKER_SHUTDOWN_TIME_LIMIT,
                f"{name} did not finish within the shut-down time limit ({ending.reason}) "
                f"and was killed; {len(end.in_flight)} request(s) in flight",
                f"poolwarden ({ending.reason}; {ending.signal_name} at the shut-down time limit)",
                False,
                "shutdown_time_limit" + dump_suffix(),
            )
        return result(
            ids.WORKER_EXITED,
            f"{name} exited as asked ({ending.reason}) {_life(end)}",
            f"poolwarden ({ending.reason})"
            + (f"; {ending.signal_name}" if ending.by_poolwarden else ""),
            False,
            None,
        )
    # 10.-11. It ended on its own, or something outside ended it.
    while_asked = f" while being asked to end ({ending.reason})" if ending.asked else ""
    who = ending.natural_who()
    if not end.ever_ready and not ending.asked and ending.ended_itself():
        return result(
            ids.WORKER_STARTUP_FAILED,
            f"{name} ended before it was ready: {ending.how()}",
            who,
            True,
            f"startup {ending.fingerprint()}",
        )
    return result(
        ids.WORKER_ENDED_UNEXPECTEDLY,
        f"{name} ended unexpectedly{while_asked} {_life(end)}: {ending.how()}",
        who,
        not ending.asked,
        ending.fingerprint(),
    )


def _forced(ending: _Ending, reason: str) -> str:
    """Who ended a worker poolwarden decided to end: poolwarden, if its signal
    did it; otherwise whatever did (it may have died on its own first)."""
    if ending.by_poolwarden:
        return f"poolwarden ({reason}; {ending.signal_name})"
    return ending.natural_who()


def classify_thread_exception(
    pool: str,
    pid: int,
    thread_name: str,
    traceback_text: str,
    *,
    exception_type: str | None = None,
    message: str | None = None,
) -> Classification:
    """An exception that escaped a thread the app started (`threading.excepthook`;
    the worker's `ThreadFailed` message carries these fields).

    The worker lives on: a warning (2025), not a failure. The fingerprint is
    the exception type and the app frame, never the thread's name (names
    carry counters: `Thread-7 (poll)`). Without `exception_type` and
    `message`, they are read from the traceback's last line.
    """
    parsed = parse_traceback(traceback_text)
    frame = parsed.app_frame()
    exception_type = exception_type or parsed.exception_type or "exception"
    message = parsed.message if message is None else message
    text = f"{exception_type}: {message}".rstrip(": ")
    where = f" at {frame_key(frame)}" if frame else ""
    return Classification(
        event_id=ids.APP_THREAD_EXCEPTION,
        level=CATALOG[ids.APP_THREAD_EXCEPTION].level,
        message=one_line(
            f"worker {pid} of pool {pool}: thread {thread_name!r} ended with {text}{where}; "
            "the worker lives on"
        ),
        who=None,
        counts_as_failure=False,
        details={
            "thread": thread_name,
            "exception": {
                "type": exception_type,
                "message": message,
                "frame": _frame_data(frame),
                "traceback": traceback_text,
            },
        },
        fingerprint=f"thread_exception {exception_type} "
        + (frame_key(frame) if frame else "no app frame"),
        pool=pool,
        pid=pid,
    )
