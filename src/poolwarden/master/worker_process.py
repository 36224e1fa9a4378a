"""One worker process as the master sees it: spawn, channel, custody, exit.

```
 WorkerProcess ──Popen──▶ [LAUNCH WRAPPER...] python -m poolwarden.worker
      │                         CHANNEL SCOREBOARD LOG MASTER CRASH STACKS
      │ channel (SEQPACKET): Boot, Dispatch(+fd) ─▶   ◀─ Ready|StartupFailed, Closed
      │ pidfd readable ─▶ the process ended: classify, answer its connections
      │ stdout/stderr pipes ─▶ OutputReader (prefixed lines, kept tail)
      └ custody: conn_id → the master's copy of each dispatched connection
```

Custody is what lets the master answer for a worker that died: a connection
whose request was in the app, with no response byte sent (the scoreboard
says so), gets a `502` instead of a reset; any other is closed.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import psutil

from poolwarden import channel as ch
from poolwarden.activation import worker_health as health
from poolwarden.events.classify import EndedBy, WorkerEnd
from poolwarden.http.responses import simple_response
from poolwarden.master import remote_exec
from poolwarden.master.answer import answer_and_close
from poolwarden.master.core_dumps import CollectedCore, collect_core
from poolwarden.master.exits import describe_exit
from poolwarden.master.output import OutputReader
from poolwarden.master.remote_exec import RemoteExec
from poolwarden.master.stack_capture import StackPipe, Via
from poolwarden.scoreboard import Phase, Scoreboard, SlotView
from poolwarden.signals import ATTACH_SIGNAL
from poolwarden.stacks import (
    RequestInfo,
    StackFrame,
    TaskStack,
    ThreadStack,
    parse_faulthandler,
    render_threads,
    with_source,
)

if TYPE_CHECKING:
    from poolwarden.settings import PoolSettings

log = logging.getLogger("poolwarden")

OUTPUT_TAIL_LINES = 200
"""Lines of a worker's stdout and stderr kept for its crash report."""
MAX_CRASH_DUMP = 256 * 1024
ABORT_GRACE = 2.0
"""Seconds a hung worker gets to write its stack dump and die of SIGABRT
before SIGKILL."""
CHANNEL_GRACE = 1.0
"""Seconds between a worker's channel closing and the conclusion that it
broke while the process lives (an exiting process closes it first)."""
OOM_EVENTS = "/sys/fs/cgroup/memory.events"


def process_rss(pid: int) -> int | None:
    try:
        rss: int = psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return None
    return rss


def health_config(settings: PoolSettings) -> health.HealthConfig:
    """The settings a worker's health policy (`activation.worker_health`) decides by."""
    return health.HealthConfig(
        startup_time_limit=settings.startup_time_limit,
        pinging=settings.pinging_enabled,
        ping_interval=settings.ping_interval,
        ping_response_time=settings.ping_response_time,
    )


def _request_info(slot: SlotView | None) -> RequestInfo | None:
    if slot is None:
        return None
    return RequestInfo(
        method=slot.method,
        path=slot.path,
        client=slot.client,
        elapsed=round(max(0.0, time.time() - slot.started), 3),
        response_started=slot.phase is Phase.RESPONDING,
    )


def read_oom_kills(path: str = OOM_EVENTS) -> int | None:
    """The cgroup's count of OOM kills (cgroup v2), None when unreadable."""
    try:
        with open(path) as events:
            for line in events:
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class WorkerStacks(msgspec.Struct, frozen=True):
    """A worker's threads at one moment, and which way their dump came."""

    threads: list[ThreadStack]
    via: Via


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
        self.orphaned_at: float | None = None
        self.debugging = boot.debug
        """The debug adapter holding this worker ("pdb", "debugpy"), or "":
        while it is debugged, its start-up time limit and pings are
        suspended and its failures do not count (`poolwarden debug`)."""
        self.debug_address: str | None = None
        self.debug_since: float | None = None
        self.on_loop_lag = on_loop_lag
        self.on_debugged = on_debugged
        self.state = WorkerState.STARTING
        self.custody: dict[int, socket.socket] = {}
        self.tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.startup_failure: ch.StartupFailure | None = None
        self.returncode: int | None = None
        self.killed_by_master = False
        self.started_at = time.monotonic()
        self.pid = 0
        """The process the master started and reaps: the launch wrapper's, if any."""
        self.python_pid = 0
        """The Python worker's own pid (from `Ready`); `pid` until then. It
        differs from `pid` only under a launch wrapper that does not `exec`."""
        self.core = CollectedCore()
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
        self.signals_sent: list[int] = []
        self.channel_broken = False
        self.runtime_failure: str | None = None
        self.last_rss: int | None = None
        self.stdout_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.stderr_tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self._final_busy: list[SlotView] = []
        self._oom_kills_at_start = read_oom_kills()
        jitter = 1.0 - settings.recycle_jitter * random.random()
        self.request_limit = int(settings.recycle_requests * jitter)
        self.time_limit = settings.recycle_time * jitter
        self.last_activity = time.monotonic()
        self.last_uss: int | None = None
        self._served_seen = 0
        self.health = health.WorkerHealth(health_config(settings))
        """When to ping it, and whether it is hung or too slow to start."""
        self._health_timer: asyncio.TimerHandle | None = None
        self._health_wake_at: float | None = None
        self.started_wall = time.time()
        self._backlog: deque[tuple[bytes, socket.socket]] = deque()
        self._readers: list[OutputReader] = []
        self._task_dumps: dict[int, asyncio.Future[ch.Tasks]] = {}
        self._task_dump_seq = 0
        self.timed_out_requests: set[tuple[int, float]] = set()
        """(conn_id, start) of requests already handled as past request_timeout."""

    def spawn(self) -> None:
        settings = self.settings
        slots = settings.threads if settings.interface == "wsgi" else settings.scoreboard_slots
        slots = max(slots, settings.threads)
        self.scoreboard = Scoreboard.create(slots, f"poolwarden-{settings.name}")
        master_end, worker_end = ch.channel_pair()
        # The master opens the crash file and the worker inherits it: a worker
        # running as another user need not reach into the state directory.
        crash_dir = os.path.join(self.state_dir, "crash")
        spawning = os.path.join(crash_dir, f"{settings.name}-starting-{id(self)}.txt")
        crash_fd = os.open(spawning, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        env = dict(os.environ)
        env.update(settings.env)
        env["PYTHONUNBUFFERED"] = "1"
        self.stack_pipe = StackPipe(self.loop)
        wrapper = list(settings.launch_wrapper)
        command = [
            *wrapper,
            settings.python,
            "-m",
            "poolwarden.worker",
            str(worker_end.fileno()),
            str(self.scoreboard.fd),
            str(self.access_log_fd),
            # Under a wrapper the worker's parent may not be the master (0: see
            # bootstrap.die_with_parent).
            str(0 if wrapper else os.getpid()),
            str(crash_fd),
            str(self.stack_pipe.write_fd),
        ]
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(
                    worker_end.fileno(),
                    self.scoreboard.fd,
                    self.access_log_fd,
                    crash_fd,
                    self.stack_pipe.write_fd,
                ),
                cwd=settings.working_dir,
                env=env,
                process_group=0,
                user=settings.user,
                group=settings.group,
            )
        except BaseException:
            # No process: nothing else would ever close these.
            master_end.close()
            self.scoreboard.close()
            self.stack_pipe.close()
            os.unlink(spawning)
            raise
        finally:
            worker_end.close()
            os.close(crash_fd)
            self.stack_pipe.close_write_end()
        self.pid = self.python_pid = self.process.pid
        self.channel = master_end
        self.crash_file = os.path.join(crash_dir, f"{settings.name}-{self.pid}.txt")
        os.replace(spawning, self.crash_file)
        boot = msgspec.structs.replace(self.boot_template, crash_file=self.crash_file)
        master_end.send(ch.encode(boot))
        master_end.setblocking(False)
        prefix = f"[{settings.name} {self.pid}] "
        assert self.process.stdout is not None and self.process.stderr is not None
        for pipe, own_tail in (
            (self.process.stdout, self.stdout_tail),
            (self.process.stderr, self.stderr_tail),
        ):
            fd = os.dup(pipe.fileno())
            pipe.close()
            self._readers.append(OutputReader(self.loop, fd, prefix, self.tail, own_tail))
        self.pidfd = os.pidfd_open(self.pid)
        self.loop.add_reader(self.pidfd, self._on_process_exit)
        self._follow_health(self.health.spawned(self.loop.time(), debugged=bool(self.debugging)))
        self.loop.add_reader(self.channel.fileno(), self._on_channel)

    # connections

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        """Hand a connection over without waiting for the worker."""
        self.custody[message.conn_id] = sock
        payload = ch.encode(message)
        if self._backlog:
            self._backlog.append((payload, sock))
            return
        try:
            socket.send_fds(self.channel, [payload], [sock.fileno()])
        except BlockingIOError:
            self._backlog.append((payload, sock))
            self.loop.add_writer(self.channel.fileno(), self._flush_backlog)
        except OSError:
            # The worker is dying; its exit handler answers for the connection.
            pass

    def abandon(self, conn_id: int, answer: bool, event_seq: int | None) -> None:
        """Take a connection back from the worker (its request ran too
        long): `504` if no response byte was sent, else just the end of it.
        Shutting it for writing means nothing the app sends later arrives."""
        sock = self.custody.pop(conn_id, None)
        self.send(ch.Abandon(conn_id))
        if sock is None:
            return
        if not answer:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            return
        extra = (("X-Poolwarden-Event", str(event_seq)),) if event_seq is not None else ()
        see = f" See `poolwarden events show {event_seq}`." if event_seq is not None else ""
        answer_and_close(
            self.loop,
            sock,
            simple_response(
                504,
                f"Gateway Timeout: the app did not answer within the request time-out "
                f"({self.settings.request_timeout:g}s).{see}\n",
                reason_code="request_timeout",
                extra_headers=extra,
            ),
        )

    def _flush_backlog(self) -> None:
        while self._backlog:
            payload, sock = self._backlog[0]
            try:
                socket.send_fds(self.channel, [payload], [sock.fileno()])
            except BlockingIOError:
                return
            except OSError:
                break
            self._backlog.popleft()
        self.loop.remove_writer(self.channel.fileno())

    @property
    def load(self) -> int:
        """Connections this worker holds now: the measure of least busy."""
        return len(self.custody)

    def send(self, message: ch.ToWorker) -> None:
        try:
            self.channel.send(ch.encode(message))
        except OSError:
            pass

    def drain(self, reason: EndedBy = "drain") -> None:
        """Ask the worker to finish what it serves and exit (`reason` is
        recorded: recycle, shutdown, administrator...)."""
        if self.state in (WorkerState.STARTING, WorkerState.READY):
            self.ended_by = self.ended_by or reason
            if self.state is WorkerState.STARTING:
                self.kill(reason)
            self.state = WorkerState.DRAINING
            self._follow_health(self.health.draining())
            self.send(ch.Drain())

    def kill(self, reason: EndedBy = "shutdown") -> None:
        if self.state is WorkerState.ORPHANED and reason != "orphan_reaped":
            return  # kept for inspection: only a reap ends it
        if self.returncode is None:
            self.killed_by_master = True
            self.ended_by = self.ended_by or reason
            self.signals_sent.append(signal.SIGKILL)
            try:
                if self.settings.launch_wrapper:
                    # The wrapper leads the worker's process group
                    # (process_group=0): its program goes too.
                    os.killpg(self.pid, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def evidence(self) -> WorkerEnd:
        """What the event of this worker's end is made of (after it was reaped)."""
        assert self.returncode is not None
        in_flight = [
            {
                "method": slot.method,
                "path": slot.path,
                "client": slot.client,
                "elapsed": round(max(0.0, time.time() - slot.started), 3),
                "response_started": slot.phase is Phase.RESPONDING,
            }
            for slot in self._final_busy
        ]
        return WorkerEnd(
            pool=self.settings.name,
            pid=self.pid,
            returncode=self.returncode,
            ended_by=self.ended_by,
            signals_sent=list(self.signals_sent),
            startup_failure=self.startup_failure,
            ever_ready=self.ever_ready,
            channel_broken_while_alive=self.channel_broken,
            unexpected_exception=self.runtime_failure,
            stdout_tail=list(self.stdout_tail),
            stderr_tail=list(self.stderr_tail),
            crash_dump=self._read_crash_dump(),
            oom_killed=self._oom_killed(),
            last_rss=self.last_rss,
            uptime=time.monotonic() - self.started_at,
            requests_served=self.served_at_exit,
            in_flight=in_flight,
            core_dump=self.core.path,
            core_dump_elsewhere=self.core.elsewhere,
        )

    def _read_crash_dump(self) -> str | None:
        try:
            with open(self.crash_file, errors="replace") as dump:
                text = dump.read(MAX_CRASH_DUMP)
        except OSError:
            return None
        return text or None

    def _oom_killed(self) -> bool | None:
        """Whether the kernel's OOM killer struck in our cgroup while this
        worker lived (its `oom_kill` count went up); None when unknowable."""
        if self._oom_kills_at_start is None:
            return None
        now = read_oom_kills()
        if now is None:
            return None
        return now > self._oom_kills_at_start

    # events from the worker

    def _on_channel(self) -> None:
        while True:
            try:
                payload, fd = ch.receive(self.channel)
            except BlockingIOError:
                return
            except OSError:
                payload, fd = b"", None
            if fd is not None:
                os.close(fd)  # a handed-back connection: the master has its own copy
            if not payload:
                self.loop.remove_reader(self.channel.fileno())
                if self.returncode is None:
                    # A worker that exits closes its channel a moment before
                    # it can be reaped; one that still lives after a grace
                    # period has lost its channel while running.
                    self.loop.call_later(CHANNEL_GRACE, self._channel_lost)
                return
            message = ch.decode_to_master(payload)
            if type(message) is ch.Closed:
                custody = self.custody
                for conn_id in message.conn_ids:
                    sock = custody.pop(conn_id, None)
                    if sock is not None:
                        sock.close()
            elif type(message) is ch.Ready:
                self.interface = message.interface
                self.python_pid = message.pid
                if self.state is WorkerState.STARTING:
                    self.state = WorkerState.READY
                    self.ever_ready = True
                    self.startup_seconds = round(time.monotonic() - self.started_at, 3)
                    self.last_rss = process_rss(self.python_pid)
                    self._follow_health(self.health.ready(self.loop.time()))
                    self.on_ready(self)
            elif type(message) is ch.StartupFailed:
                self.startup_failure = message.failure
                self.on_startup_failed(self, message.failure)
            elif type(message) is ch.Pong:
                self._follow_health(self.health.pong(message.seq))
            elif type(message) is ch.RuntimeFailure:
                self.runtime_failure = message.traceback
            elif type(message) is ch.ThreadFailed:
                self.on_thread_failed(self, message)
            elif type(message) is ch.DebugWaiting:
                self._debugged(message.adapter)
                self.debug_address = message.address
            elif type(message) is ch.LoopLag:
                self.on_loop_lag(self, message)
            elif type(message) is ch.Tasks:
                waiter = self._task_dumps.pop(message.seq, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
            elif type(message) is ch.HandBack:
                sock = self.custody.pop(message.conn_id, None)
                if sock is not None:
                    self.on_hand_back(sock, message)

    # health: pings, answered by the worker's own loop or serving threads

    def _debugged(self, adapter: str) -> None:
        """A debugger holds (or is about to hold) the worker: a stopped
        thread is no hang, and a slow start no failure (the pool is told)."""
        self.debugging = self.debugging or adapter
        self.debug_since = self.debug_since or time.time()
        self._follow_health(self.health.debugged())
        self.on_debugged(self)

    def attach(self) -> None:
        """`poolwarden debug attach`: the worker opens a pdb server and stops
        its main thread once a client connects.

        Through `sys.remote_exec` where usable (Python 3.14+: no signal
        handling needed), else with ATTACH_SIGNAL; a remote request the worker
        has not acted on within REMOTE_WAIT (its main thread is blocked) is
        followed by the signal, and the worker acts on the first of the two
        only (`debugger.attach_handler`). The way taken is logged.
        """
        self._debugged("pdb")
        self.debug_address = None
        pid = self.python_pid
        if not remote_exec.SUPPORTED:
            self._attach_by_signal(pid, "sys.remote_exec is new in Python 3.14")
            return
        self._attaching = self.loop.create_task(self._attach_remotely(pid))

    async def _attach_remotely(self, pid: int) -> None:
        not_after = time.monotonic() + remote_exec.REMOTE_WAIT
        verdict = await asyncio.to_thread(
            self.remote.run, pid, lambda path: remote_exec.attach_script(path, not_after)
        )
        if not verdict.usable:
            self._attach_by_signal(pid, verdict.reason)
            return
        log.info(
            "pool %s: worker %d: attaching a debugger via remote_exec", self.settings.name, pid
        )
        self.loop.call_later(max(0.0, not_after - time.monotonic()), self._attach_fallback, pid)

    def _attach_fallback(self, pid: int) -> None:
        """REMOTE_WAIT is over: unless the worker listens for a debugger by
        now, its main thread did not run the script; the signal may reach it."""
        if self.returncode is None and self.debugging == "pdb" and self.debug_address is None:
            self._attach_by_signal(
                pid, f"no answer to remote_exec within {remote_exec.REMOTE_WAIT:g}s"
            )

    def _attach_by_signal(self, pid: int, why: str) -> None:
        log.info(
            "pool %s: worker %d: attaching a debugger via signal (%s)", self.settings.name, pid, why
        )
        try:
            os.kill(pid, ATTACH_SIGNAL)
        except ProcessLookupError:
            pass  # it ended: its exit is handled as any other

    @functools.cached_property
    def remote(self) -> RemoteExec:
        """PEP 768's way into this worker (`stacks`, `attach`), made at first use."""
        return RemoteExec()

    def _follow_health(self, actions: list[health.HealthAction]) -> None:
        """Perform what the health policy (`activation.worker_health`) decided,
        and wake it again at its next deadline: one loop timer per worker."""
        for action in actions:
            match action:
                case health.SendPing(seq=seq):
                    self.send(ch.Ping(seq))
                case health.DeclareHung():
                    log.error(
                        "pool %s: worker %d did not answer a ping within %gs: hung; dumping its "
                        "stacks (SIGABRT), then killing it",
                        self.settings.name,
                        self.pid,
                        self.settings.ping_response_time,
                    )
                    self._fail("hang")
                case health.StartupTimedOut():
                    self.timed_out = True
                    log.error(
                        "pool %s: worker %d was not ready within the start-up time limit (%gs)",
                        self.settings.name,
                        self.pid,
                        self.settings.startup_time_limit,
                    )
                    self._fail("startup_time_limit")
        deadline = self.health.deadline
        if deadline == self._health_wake_at:
            return
        if self._health_timer is not None:
            self._health_timer.cancel()
            self._health_timer = None
        self._health_wake_at = deadline
        if deadline is not None:
            self._health_timer = self.loop.call_at(deadline, self._health_due)

    def _health_due(self) -> None:
        """The health timer fired: its deadline has come by the loop's clock
        (which may run it a clock resolution early, hence the max)."""
        assert self._health_wake_at is not None
        now = max(self.loop.time(), self._health_wake_at)
        self._health_timer = self._health_wake_at = None
        self._follow_health(self.health.tick(now))

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
        self._follow_health(self.health.ended())
        threads = await self.stacks()
        try:
            os.kill(self.python_pid, signal.SIGSTOP)
            if self.python_pid != self.pid:
                os.kill(self.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return  # it ended meanwhile: its exit is handled as any other
        self.signals_sent.append(signal.SIGSTOP)
        seq = self.on_orphaned(self, reason, render_threads(threads) if threads else "")
        # Its failure is counted now; however it ends later is no new failure.
        self.ended_by = "orphan_reaped"
        self._final_busy = self.scoreboard.busy()
        self._answer_orphaned_connections(seq)

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
        self.signals_sent.append(signal.SIGABRT)
        try:
            # The Python worker's stacks, not a launch wrapper's.
            os.kill(self.python_pid, signal.SIGABRT)
        except ProcessLookupError:
            return
        self.loop.call_later(ABORT_GRACE, self.kill, reason)

    def _channel_lost(self) -> None:
        """The channel is gone but the process lives: it can no longer be told
        anything, so it cannot be trusted (5011)."""
        if self.returncode is not None:
            return
        self.channel_broken = True
        log.error("pool %s: worker %d: its channel broke; killing it", self.settings.name, self.pid)
        self._fail("drain")

    async def stacks(self) -> list[ThreadStack]:
        """Every thread's Python stack now, each with the request it serves
        (from the scoreboard); empty if the worker did not answer in time."""
        return (await self.capture_stacks()).threads

    async def capture_stacks(self) -> WorkerStacks:
        """`stacks()`, and which way the dump came: through `sys.remote_exec`
        when usable (Python 3.14+), else, or when the worker's main thread did
        not run it within REMOTE_WAIT, with STACK_SIGNAL (`StackPipe.capture`)."""
        if self.returncode is not None:
            return WorkerStacks([], "signal")
        pid = self.python_pid
        request = functools.partial(self._request_stacks, pid) if remote_exec.SUPPORTED else None
        capture = await self.stack_pipe.capture(pid, request)
        if not capture.dump:
            return WorkerStacks([], capture.via)
        threads = parse_faulthandler(capture.dump)
        if capture.via == "remote_exec":
            threads = remote_exec.without_script_frames(threads)
        serving = {slot.thread: slot for slot in self.scoreboard.busy() if slot.thread}
        if self.interface == "asgi":
            serving = {}  # one loop thread serves every request: see task_stacks()
        return WorkerStacks(
            [
                msgspec.structs.replace(
                    thread,
                    frames=with_source(thread.frames),
                    request=_request_info(serving.get(thread.ident)),
                )
                for thread in threads
            ],
            capture.via,
        )

    async def _request_stacks(self, pid: int, token: str, not_after: float) -> bool:
        verdict = await asyncio.to_thread(
            self.remote.run, pid, lambda path: remote_exec.stack_script(path, token, not_after)
        )
        if not verdict.usable:
            log.debug("worker %d: stacks via signal: %s", pid, verdict.reason)
        return verdict.usable

    async def task_stacks(self) -> list[TaskStack] | None:
        """An ASGI worker's pending tasks, each with the request it serves;
        None if the loop did not answer (it is blocked)."""
        dump = await self.tasks()
        if dump is None:
            return None
        serving = {slot.conn_id: slot for slot in self.scoreboard.busy()}
        return [
            TaskStack(
                name=task.name,
                frames=with_source([StackFrame(f.filename, f.lineno, f.name) for f in task.frames]),
                request=_request_info(serving.get(task.conn_id)) if task.conn_id else None,
            )
            for task in dump.tasks
        ]

    async def tasks(self, timeout: float = 1.0) -> ch.Tasks | None:
        """An ASGI worker's pending tasks and where each waits; None when its
        loop did not answer in time (blocked: its thread's stack says by what)."""
        if self.returncode is not None or self.interface != "asgi":
            return None
        self._task_dump_seq += 1
        seq = self._task_dump_seq
        waiter: asyncio.Future[ch.Tasks] = self.loop.create_future()
        self._task_dumps[seq] = waiter
        self.send(ch.DumpTasks(seq))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._task_dumps.pop(seq, None)

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

    def _on_process_exit(self) -> None:
        self._follow_health(self.health.ended())
        self.loop.remove_reader(self.pidfd)
        os.close(self.pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        if self.settings.core_dumps:
            self.core = collect_core(
                pool=self.settings.name,
                pid=self.pid,
                other_pids=(self.python_pid,) if self.python_pid != self.pid else (),
                cwd=self.settings.working_dir or os.getcwd(),
                dumped=os.WIFSIGNALED(status) and os.WCOREDUMP(status),
                signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                since=self.started_wall,
                state_dir=self.state_dir,
            )
        self.process.returncode = self.returncode
        # Messages sent just before the end still count (Closed, StartupFailed).
        self._on_channel()
        for reader in self._readers:
            reader.read_available()
            reader.close()
        self.state = WorkerState.EXITED
        self.served_at_exit = self.scoreboard.served()
        # The worker is reaped: nothing writes its slots any more.
        self._final_busy = self.scoreboard.busy(final=True)
        event_seq = self.on_ended(self)
        self._answer_orphaned_connections(event_seq)
        try:
            self.loop.remove_reader(self.channel.fileno())
            self.loop.remove_writer(self.channel.fileno())
        except (OSError, ValueError):
            pass
        self.channel.close()
        self.scoreboard.close()
        self.stack_pipe.close()
        self._remove_empty_crash_file()
        self.on_exit(self)

    def _answer_orphaned_connections(self, event_seq: int | None) -> None:
        """A request whose response had not started gets a 502 naming the
        event that explains it; an idle keep-alive connection is closed."""
        in_app = {slot.conn_id for slot in self._final_busy if slot.phase is Phase.APP}
        extra = (("X-Poolwarden-Event", str(event_seq)),) if event_seq is not None else ()
        see = f" See `poolwarden events show {event_seq}`." if event_seq is not None else ""
        for conn_id, sock in self.custody.items():
            if conn_id in in_app:
                answer_and_close(
                    self.loop,
                    sock,
                    simple_response(
                        502,
                        "Bad Gateway: the worker serving this request ended before it"
                        f" answered ({self.exit_text}).{see}\n",
                        reason_code="worker_died",
                        extra_headers=extra,
                    ),
                )
            else:
                sock.close()
        self.custody.clear()
        self._backlog.clear()

    def _remove_empty_crash_file(self) -> None:
        try:
            if os.path.getsize(self.crash_file) == 0:
                os.unlink(self.crash_file)
        except OSError:
            pass

    @property
    def exit_text(self) -> str:
        if self.returncode is None:
            return "is running"
        return describe_exit(self.returncode)

    def __repr__(self) -> str:
        return f"<worker {self.settings.name} pid={self.pid} {self.state.value}>"
