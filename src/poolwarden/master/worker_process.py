"""One worker process as the master sees it: its state, and the pool's callbacks.

```
 Pool ──spawn, dispatch, drain, kill, abandon, stacks──▶ WorkerProcess ──on_ready, on_exit...──▶ Pool
                                                           │ delegates to
   ├─ worker_spawn.Spawned ........... Popen, inherited fds, crash file, output; reap, SIGKILL
   ├─ worker_channel.WorkerChannel ... SEQPACKET: Boot, Dispatch(+fd) ─▶ ◀─ Ready, Closed, Pong...
   ├─ custody.Custody ................ conn_id → the master's copy of each dispatched connection
   ├─ health_timer.HealthTimer ....... pings, the start-up time limit (activation.worker_health)
   ├─ diagnostics.WorkerDiagnostics .. stacks, an ASGI worker's tasks, attaching a debugger
   └─ death_evidence.DeathEvidence ... output tails, signals sent, crash dump, core, OOM count
 pidfd readable ─▶ the process ended: reap, classify (on_ended), custody answers its connections
```

This handle keeps the worker's own state (STARTING, READY, DRAINING,
ORPHANED, EXITED) and what the pool and the control API read of it; each
collaborator above does one job for it. A death is one more readiness
event beside the channel: the pidfd turns readable, the messages sent just
before the end are read, the evidence is completed, the event written, and
custody answers for the connections the worker held.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import psutil

from poolwarden import channel as ch
from poolwarden.events.classify import EndedBy, WorkerEnd
from poolwarden.master.custody import Custody
from poolwarden.master.death_evidence import DeathEvidence
from poolwarden.master.diagnostics import WorkerDiagnostics, WorkerStacks
from poolwarden.master.exits import describe_exit
from poolwarden.master.health_timer import HealthTimer
from poolwarden.master.worker_channel import WorkerChannel
from poolwarden.master.worker_spawn import Spawned, spawn_worker
from poolwarden.stacks import TaskStack, ThreadStack, render_threads

if TYPE_CHECKING:
    from poolwarden.settings import PoolSettings

log = logging.getLogger("poolwarden")

ABORT_GRACE = 2.0
"""Seconds a hung worker gets to write its stack dump and die of SIGABRT
before SIGKILL."""


def process_rss(pid: int) -> int | None:
    try:
        rss: int = psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None
    return rss


class WorkerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    ORPHANED = "orphaned"
    """Failed or hung, and kept stopped (SIGSTOP) for inspection: `orphan_worker`."""
    EXITED = "exited"


class WorkerProcess:
    """The master's handle on one worker process."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: PoolSettings,
        *,
        boot: ch.Boot,
        state_dir: str,
        access_log_fd: int,
        on_ready: Callable[[WorkerProcess], None],
        on_startup_failed: Callable[[WorkerProcess, ch.StartupFailure], None],
        on_exit: Callable[[WorkerProcess], None],
        on_hand_back: Callable[[socket.socket, ch.HandBack], None] = lambda sock, message: None,
        on_ended: Callable[[WorkerProcess], int | None] = lambda worker: None,
        on_thread_failed: Callable[[WorkerProcess, ch.ThreadFailed], None] = (
            lambda worker, message: None
        ),
        on_orphaned: Callable[[WorkerProcess, EndedBy, str], int | None] = (
            lambda worker, reason, stacks: None
        ),
        on_loop_lag: Callable[[WorkerProcess, ch.LoopLag], None] = lambda worker, message: None,
        on_debugged: Callable[[WorkerProcess], None] = lambda worker: None,
        on_recycle_request: Callable[[WorkerProcess, ch.RecycleRequest], None] = (
            lambda worker, message: None
        ),
        on_redispatch: Callable[[socket.socket, ch.Dispatch], None] = (
            lambda sock, message: sock.close()
        ),
        on_loop_stall: Callable[[WorkerProcess], None] = lambda worker: None,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.boot_template = boot
        self.state_dir = state_dir
        self.access_log_fd = access_log_fd
        self.on_ready = on_ready
        self.on_startup_failed = on_startup_failed
        self.on_exit = on_exit
        self.on_hand_back = on_hand_back
        self.on_ended = on_ended
        self.on_thread_failed = on_thread_failed
        self.on_orphaned = on_orphaned
        self.on_loop_lag = on_loop_lag
        self.on_loop_stall = on_loop_stall
        self.on_debugged = on_debugged
        self.on_recycle_request = on_recycle_request
        self.on_redispatch = on_redispatch
        """Where a connection it never touched goes when it ends: its pool."""
        self.orphaned_at: float | None = None
        self.debugging = boot.debug
        """The debug adapter holding this worker ("pdb", "debugpy"), or "":
        while it is debugged, its start-up time limit and pings are
        suspended and its failures do not count (`poolwarden debug`)."""
        self.debug_address: str | None = None
        self.debug_since: float | None = None
        self.state = WorkerState.STARTING
        self.custody = Custody(loop)
        """The master's copy of each connection dispatched to it, by conn_id."""
        self.death_evidence = DeathEvidence(settings.name)
        """What the event of its end will be made of (`evidence()`)."""
        self.tail = self.death_evidence.tail
        """The last lines of its stdout and stderr."""
        self.startup_failure: ch.StartupFailure | None = None
        self.returncode: int | None = None
        self.killed_by_master = False
        self.started_at = time.monotonic()
        self.pid = 0
        """The process the master started and reaps: the launch wrapper's, if any."""
        self.python_pid = 0
        """The Python worker's own pid (from `Ready`); `pid` until then. It
        differs from `pid` only under a launch wrapper that does not `exec`."""
        self.interface = ""
        self.ever_ready = False
        self.retiring = False
        """Being replaced by a recycle: it takes no new connections once its
        replacement is Ready."""
        self.timed_out = False
        """Killed for not being Ready within the start-up time limit."""
        self.served_at_exit = 0
        self.ended_by: EndedBy | None = None
        self.startup_seconds: float | None = None
        self.channel_broken = False
        self.runtime_failure: str | None = None
        self.last_rss: int | None = None
        jitter = 1.0 - settings.recycle_jitter * random.random()
        self.request_limit = int(settings.recycle_requests * jitter)
        self.time_limit = settings.recycle_time * jitter
        self.last_activity = time.monotonic()
        self.last_uss: int | None = None
        self._served_seen = 0
        self.handed = 0
        self.loop_blocked = False
        """Its event loop is blocked past `loop_lag_warning` (its watchdog's
        `LoopStall`): it takes no new connection until the loop runs again."""
        """Connections dispatched to it so far (the scoreboard's `settled`
        counts those it took up): what `in_use` starts from."""
        self.health_timer = HealthTimer(
            loop, settings, send_ping=lambda seq: self.send(ch.Ping(seq)), failed=self._unhealthy
        )
        self.started_wall = time.time()
        self.timed_out_requests: set[tuple[int, float]] = set()
        """(conn_id, start) of requests already handled as past request_timeout."""

    def spawn(self) -> None:
        """Start the process; an OSError means there is none."""
        evidence = self.death_evidence
        boot = self.boot_template
        if self.settings.recycle_requests > 0:
            # The worker counts its own requests and asks for its recycle at
            # this limit (`RecycleRequest`): the master's periodic look
            # would only notice a second later.
            boot = msgspec.structs.replace(boot, request_limit=max(1, self.request_limit))
        spawned = spawn_worker(
            self.loop,
            self.settings,
            boot,
            state_dir=self.state_dir,
            access_log_fd=self.access_log_fd,
            unique=id(self),
            tail=evidence.tail,
            stdout_tail=evidence.stdout_tail,
            stderr_tail=evidence.stderr_tail,
        )
        self._spawned: Spawned = spawned
        self.process = spawned.process
        self.scoreboard = spawned.scoreboard
        self.pid = self.python_pid = spawned.process.pid
        evidence.spawned(spawned.process.pid, spawned.crash_file)
        self.channel = WorkerChannel(
            self.loop,
            spawned.channel,
            on_message=self._on_message,
            alive=lambda: self.returncode is None,
            on_broken=self._channel_lost,
        )
        self.diagnostics = WorkerDiagnostics(
            self.loop,
            self.settings.name,
            stack_pipe=spawned.stack_pipe,
            scoreboard=spawned.scoreboard,
            send=self.send,
        )
        spawned.watch_exit(self.loop, self._on_process_exit)
        self.health_timer.spawned(self.pid, debugged=bool(self.debugging))
        self.channel.start()

    @property
    def crash_file(self) -> str:
        """Where faulthandler writes its dump when the worker crashes or is aborted."""
        return self.death_evidence.crash_file

    # connections

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        """Hand a connection over without waiting for the worker."""
        self.custody.keep(message.conn_id, sock, message)
        self.handed += 1
        self.channel.send_connection(message, sock)

    def abandon(self, conn_id: int, answer: bool, event_seq: int | None) -> None:
        """Take a connection back from the worker (its request ran too
        long): `504` if no response byte was sent, else just the end of it."""
        self.send(ch.Abandon(conn_id))
        self.custody.abandon(conn_id, answer, event_seq, self.settings.request_timeout)

    @property
    def load(self) -> int:
        """Connections this worker holds now: the measure of least busy."""
        return len(self.custody)

    def send(self, message: ch.ToWorker) -> None:
        self.channel.send(message)

    def in_use(self) -> int:
        """Connections it has in use: handed over and not taken up yet, or
        with a request in the app (an idle keep-alive one is not)."""
        return self.scoreboard.in_use(self.handed)

    @property
    def capacity(self) -> int | None:
        """Connections it may have in use at once: a WSGI worker's threads,
        an ASGI worker's `max_concurrency`; None: no limit."""
        interface = self.interface or self.settings.interface
        if interface == "asgi":
            return self.settings.max_concurrency or None
        return self.settings.threads

    def busy_count(self) -> int:
        """Requests in the app or responding now, from the scoreboard."""
        return self.scoreboard.busy_count()

    def note_activity(self, now: float) -> int:
        """Requests served so far; a change (or a request in flight) is activity."""
        served = self.scoreboard.served()
        if served != self._served_seen or self.busy_count():
            self._served_seen = served
            self.last_activity = now
        return served

    # events from the worker

    def _on_message(self, message: ch.ToMaster) -> None:
        if type(message) is ch.Closed:
            self.custody.release(message.conn_ids)
        elif type(message) is ch.Ready:
            self.interface = message.interface
            self.python_pid = message.pid
            if self.state is WorkerState.STARTING:
                self.state = WorkerState.READY
                self.ever_ready = True
                self.startup_seconds = round(time.monotonic() - self.started_at, 3)
                self.last_rss = process_rss(self.python_pid)
                self.health_timer.ready()
                self.on_ready(self)
        elif type(message) is ch.StartupFailed:
            self.startup_failure = message.failure
            self.on_startup_failed(self, message.failure)
        elif type(message) is ch.Pong:
            self.health_timer.pong(message.seq)
        elif type(message) is ch.RuntimeFailure:
            self.runtime_failure = message.traceback
        elif type(message) is ch.ThreadFailed:
            self.on_thread_failed(self, message)
        elif type(message) is ch.DebugWaiting:
            self._debugged(message.adapter)
            self.debug_address = message.address
        elif type(message) is ch.LoopLag:
            self.on_loop_lag(self, message)
        elif type(message) is ch.LoopStall:
            self.loop_blocked = message.blocked
            self.on_loop_stall(self)
        elif type(message) is ch.Tasks:
            self.diagnostics.tasks_answered(message)
        elif type(message) is ch.HandBack:
            sock = self.custody.take(message.conn_id)
            if sock is not None:
                self.on_hand_back(sock, message)
        elif type(message) is ch.RecycleRequest:
            self.on_recycle_request(self, message)

    def _channel_lost(self) -> None:
        """The channel is gone but the process lives: it can no longer be told
        anything, so it cannot be trusted (5011)."""
        self.channel_broken = True
        log.error("pool %s: worker %d: its channel broke; killing it", self.settings.name, self.pid)
        self._fail("drain")

    # debugging

    def _debugged(self, adapter: str) -> None:
        """A debugger holds (or is about to hold) the worker: a stopped
        thread is no hang, and a slow start no failure (the pool is told)."""
        self.debugging = self.debugging or adapter
        self.debug_since = self.debug_since or time.time()
        self.health_timer.debugged()
        self.on_debugged(self)

    def attach(self) -> None:
        """`poolwarden debug attach`: the worker opens a pdb server and stops
        its main thread once a client connects (`WorkerDiagnostics.attach`
        says which way it is asked)."""
        self._debugged("pdb")
        self.debug_address = None
        self.diagnostics.attach(
            self.python_pid,
            unanswered=lambda: (
                self.returncode is None and self.debugging == "pdb" and self.debug_address is None
            ),
        )

    async def stacks(self) -> list[ThreadStack]:
        """Every thread's Python stack now, each with the request it serves
        (from the scoreboard); empty if the worker did not answer in time."""
        return (await self.capture_stacks()).threads

    async def capture_stacks(self) -> WorkerStacks:
        """`stacks()`, and which way the dump came (`WorkerDiagnostics.capture`)."""
        if self.returncode is not None:
            return WorkerStacks([], "signal")
        return await self.diagnostics.capture(self.python_pid, self.interface)

    async def task_stacks(self) -> list[TaskStack] | None:
        """An ASGI worker's pending tasks, each with the request it serves;
        None if the loop did not answer (it is blocked)."""
        if self.returncode is not None or self.interface != "asgi":
            return None
        return await self.diagnostics.task_stacks()

    # ending it

    def drain(self, reason: EndedBy = "drain") -> None:
        """Ask the worker to finish what it serves and exit (`reason` is
        recorded: recycle, shutdown, administrator...)."""
        if self.state in (WorkerState.STARTING, WorkerState.READY):
            self.ended_by = self.ended_by or reason
            if self.state is WorkerState.STARTING:
                self.kill(reason)
            self.state = WorkerState.DRAINING
            self.health_timer.draining()
            self.send(ch.Drain())

    def kill(self, reason: EndedBy = "shutdown") -> None:
        if self.state is WorkerState.ORPHANED and reason != "orphan_reaped":
            return  # kept for inspection: only a reap ends it
        if self.returncode is None:
            self.killed_by_master = True
            self.ended_by = self.ended_by or reason
            self.death_evidence.sent(signal.SIGKILL)
            self._spawned.kill()

    def _unhealthy(self, reason: EndedBy) -> None:
        """The health policy gave up on it: a hang, or a start past its limit."""
        if reason == "startup_time_limit":
            self.timed_out = True
        self._fail(reason)

    def _fail(self, reason: EndedBy) -> None:
        """A worker poolwarden must take out of service: killed (a hang or a
        start-up past its limit with its stacks dumped first, so the event
        shows the line it was stuck on), or kept stopped when `orphan_worker`
        is on."""
        if self.settings.orphan_worker:
            self.loop.create_task(self.orphan(reason))
        elif reason == "hang" or reason == "startup_time_limit":
            self.abort(reason)
        else:
            self.kill(reason)

    async def orphan(self, reason: EndedBy) -> None:
        """IIS's orphanWorkerProcess: take its stacks while it still runs,
        stop it with SIGSTOP, and keep it for a debugger or the orphan
        action; it is out of service, and ends only when reaped."""
        if self.returncode is not None or self.state is WorkerState.ORPHANED:
            return
        self.state = WorkerState.ORPHANED
        self.orphaned_at = time.time()
        self.health_timer.ended()
        threads = await self.stacks()
        try:
            os.kill(self.python_pid, signal.SIGSTOP)
            if self.python_pid != self.pid:
                os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return  # it ended meanwhile: its exit is handled as any other
        self.death_evidence.sent(signal.SIGSTOP)
        seq = self.on_orphaned(self, reason, render_threads(threads) if threads else "")
        # Its failure is counted now; however it ends later is no new failure.
        self.ended_by = "orphan_reaped"
        self.death_evidence.final_busy = self.scoreboard.busy()
        self._answer_for_connections(seq)

    def reap(self) -> None:
        """End an orphan: SIGKILL (a stopped process dies of it too)."""
        self.ended_by = "orphan_reaped"
        self.kill("orphan_reaped")
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def abort(self, reason: EndedBy) -> None:
        """End a hung worker with its stacks: SIGABRT makes faulthandler dump
        every thread's Python stack into the crash file (it works even when a
        thread holds the GIL in C); SIGKILL follows if it is still there."""
        if self.returncode is not None:
            return
        self.killed_by_master = True
        self.ended_by = self.ended_by or reason
        self.death_evidence.sent(signal.SIGABRT)
        try:
            # The Python worker's stacks, not a launch wrapper's.
            os.kill(self.python_pid, signal.SIGABRT)
        except ProcessLookupError:
            return
        self.loop.call_later(ABORT_GRACE, self.kill, reason)

    def _on_process_exit(self) -> None:
        self.health_timer.ended()
        status = self._spawned.reap(self.loop)
        self.returncode = os.waitstatus_to_exitcode(status)
        if self.settings.core_dumps:
            self.death_evidence.collect_core(
                self.settings,
                status,
                pid=self.pid,
                python_pid=self.python_pid,
                since=self.started_wall,
                state_dir=self.state_dir,
            )
        # Messages sent just before the end still count (Closed, StartupFailed).
        self.channel.receive()
        self._spawned.read_output_to_end()
        self.state = WorkerState.EXITED
        self.served_at_exit = self.scoreboard.served()
        # The worker is reaped: nothing writes its slots any more.
        self.death_evidence.final_busy = self.scoreboard.busy(final=True)
        event_seq = self.on_ended(self)
        self._answer_for_connections(event_seq)
        self.channel.close()
        self.scoreboard.close()
        self._spawned.stack_pipe.close()
        self.death_evidence.remove_empty_crash_file()
        self.on_exit(self)

    def _answer_for_connections(self, event_seq: int | None) -> None:
        """Custody answers for what the worker held (502 or close); the
        connections not sent to it yet go with them."""
        untouched = self.custody.answer_for_ended(
            self.death_evidence.in_app(), event_seq, self.exit_text
        )
        self.channel.clear_backlog()
        for sock, message in untouched:
            self.on_redispatch(sock, message)

    def evidence(self) -> WorkerEnd:
        """What the event of this worker's end is made of (after it was reaped)."""
        return self.death_evidence.worker_end(self)

    @property
    def exit_text(self) -> str:
        if self.returncode is None:
            return "is running"
        return describe_exit(self.returncode)

    def __repr__(self) -> str:
        return f"<worker {self.settings.name} pid={self.pid} {self.state.value}>"
