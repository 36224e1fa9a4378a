"""What a worker leaves behind for the event of its end.

```
 OutputReader (stdout, stderr) ──lines──▶ tails ─────────────┐
 WorkerProcess: kill, abort, orphan ──▶ signals sent ─────────┤
 faulthandler ──▶ crash file (STATE_DIR/crash/POOL-PID.txt) ──┤
 its memory cgroup's oom_kill, the kernel log (oom.OomWatch) ─┼─▶ DeathEvidence.worker_end(worker)
 the kernel's core file ──collect_core──▶ STATE_DIR/dumps ────┤      │ + what the handle knows of
 the scoreboard at the end: the requests in flight ───────────┘      │   its life (`Departed`)
                                                                     ▼
                                           WorkerEnd ──▶ events.classify ──▶ the event
```

It is gathered while the worker lives (output, signals) and when it is
reaped (core, scoreboard); `worker_end` reads the rest (crash dump, the
OOM verdict) then. The requests in the app at the end are also the ones custody
answers with a 502.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from poolwarden import channel as ch
from poolwarden.events.classify import EndedBy, WorkerEnd
from poolwarden.master.core_dumps import CollectedCore, collect_core
from poolwarden.master.oom import OomWatch
from poolwarden.scoreboard import Phase, SlotView

if TYPE_CHECKING:
    from poolwarden.settings import PoolSettings

OUTPUT_TAIL_LINES = 200
"""Lines of a worker's stdout and stderr kept for its crash report."""
MAX_CRASH_DUMP = 256 * 1024


class Departed(Protocol):
    """What the worker's handle (`WorkerProcess`) knows of the worker's life."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    @property
    def ended_by(self) -> EndedBy | None: ...
    @property
    def startup_failure(self) -> ch.StartupFailure | None: ...
    @property
    def ever_ready(self) -> bool: ...
    @property
    def channel_broken(self) -> bool: ...
    @property
    def runtime_failure(self) -> str | None: ...
    @property
    def last_rss(self) -> int | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def served_at_exit(self) -> int: ...


class DeathEvidence:
    """One worker's evidence, gathered from its spawn to its reaping."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        """The last lines of stdout and stderr together, as they came."""
        self.stdout_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.stderr_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.signals_sent: list[int] = []
        """Every signal poolwarden sent it: an end by one of them is poolwarden's doing."""
        self.crash_file = ""
        """Where faulthandler writes (known once it is spawned)."""
        self.core = CollectedCore()
        self.final_busy: list[SlotView] = []
        """The scoreboard's busy slots when it ended or was taken out of service."""
        self.oom: OomWatch | None = None
        """Taken once the worker runs: its own memory cgroup's count now."""

    def spawned(self, pid: int, crash_file: str) -> None:
        self.crash_file = crash_file
        self.oom = OomWatch(pid)

    def sent(self, signum: int) -> None:
        self.signals_sent.append(signum)

    def in_app(self) -> set[int]:
        """The connections whose request was in the app, no response begun, at the end."""
        return {slot.conn_id for slot in self.final_busy if slot.phase is Phase.APP}

    def collect_core(
        self,
        settings: PoolSettings,
        status: int,
        *,
        pid: int,
        python_pid: int,
        since: float,
        state_dir: str,
    ) -> None:
        """Move the core the reaped process (wait `status`) left into the dumps."""
        self.core = collect_core(
            pool=settings.name,
            pid=pid,
            other_pids=(python_pid,) if python_pid != pid else (),
            cwd=settings.working_dir or os.getcwd(),
            dumped=os.WIFSIGNALED(status) and os.WCOREDUMP(status),
            signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            since=since,
            state_dir=state_dir,
        )

    def worker_end(self, worker: Departed) -> WorkerEnd:
        """What the event of this worker's end is made of (after it was reaped)."""
        assert worker.returncode is not None
        return WorkerEnd(
            pool=self.pool,
            pid=worker.pid,
            returncode=worker.returncode,
            ended_by=worker.ended_by,
            signals_sent=list(self.signals_sent),
            startup_failure=worker.startup_failure,
            ever_ready=worker.ever_ready,
            channel_broken_while_alive=worker.channel_broken,
            unexpected_exception=worker.runtime_failure,
            stdout_tail=list(self.stdout_tail),
            stderr_tail=list(self.stderr_tail),
            crash_dump=self._read_crash_dump(),
            oom_killed=self.oom.verdict() if self.oom is not None else None,
            oom_evidence=self.oom.evidence if self.oom is not None else None,
            last_rss=worker.last_rss,
            uptime=time.monotonic() - worker.started_at,
            requests_served=worker.served_at_exit,
            in_flight=self._in_flight(),
            core_dump=self.core.path,
            core_dump_elsewhere=self.core.elsewhere,
        )

    def _in_flight(self) -> list[dict[str, Any]]:
        return [
            {
                "method": slot.method,
                "path": slot.path,
                "client": slot.client,
                "elapsed": round(max(0.0, time.time() - slot.started), 3),
                "response_started": slot.phase is Phase.RESPONDING,
            }
            for slot in self.final_busy
        ]

    def _read_crash_dump(self) -> str | None:
        try:
            with open(self.crash_file, errors="replace") as dump:
                text = dump.read(MAX_CRASH_DUMP)
        except OSError:
            return None
        return text or None

    def remove_empty_crash_file(self) -> None:
        """Nothing crashed: no file to look at."""
        try:
            if os.path.getsize(self.crash_file) == 0:
                os.unlink(self.crash_file)
        except OSError:
            pass
