"""An application pool: its workers, its queue, and where a connection goes.

A connection routed to the pool goes to the Ready worker with the fewest
requests in flight (read from the scoreboard); while no worker is Ready it
waits in the pool's bounded queue (IIS's per-pool `queueLength`), and past
the bound it is answered `503 queue_full`. An on-demand pool starts its
first worker when the first request arrives, and grows up to
`processes` (IIS's maxProcesses) while every worker is busy.

A worker that ends unexpectedly is replaced; one that fails at start-up (or
is not Ready within the start-up time limit) is replaced after a back-off
(immediately, then 1 s doubling to 30 s, as systemd and PM2 do); while no
worker can start, a request waits for the next attempt and gets `503
startup_failed` (or `startup_timeout`) if that one fails too. What to do is
decided by the pure `activation.pool_policy.PoolMachine`; this class performs
it on real processes and sockets.

States:

```
 started ──stop──▶ stopping ──last worker gone──▶ stopped ──start──▶ started
    │  ▲                                                         (503 pool_stopped
    ▼  │ a worker becomes Ready, start, new settings              while stopping/stopped)
 startup_failed
 any state ──max_crashes failures within interval──▶ disabled ──start──▶ started
                                                      (503 pool_disabled)
```

A recycle is overlapped: replacements start first, and each old worker is
drained only once a replacement is Ready, so no request waits and none
fails; if a replacement cannot start, the old workers keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.activation.pool_policy import PoolConfig, PoolMachine, PoolState, StopReason
from poolwarden.activation.rapid_fail import FailureWindow, RapidFailPolicy, standing
from poolwarden.activation.recycling import Action, Limits, WorkerFacts, decide, last_scheduled
from poolwarden.events import catalog
from poolwarden.events.classify import EndedBy, classify
from poolwarden.http.error_page import startup_failure_page
from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close
from poolwarden.master.commands import run_bounded
from poolwarden.master.event_log import EventLog
from poolwarden.master.worker_process import WorkerProcess, WorkerState
from poolwarden.scoreboard import Phase, SlotView
from poolwarden.settings import PoolSettings, ServerSettings
from poolwarden.stacks import (
    StackFrame,
    ThreadStack,
    innermost_app_frame,
    render_tasks,
    render_threads,
    with_source,
)

log = logging.getLogger("poolwarden")

QUEUE_RECHECK = 0.005
"""Seconds between looks at a busy pool's workers while connections wait."""


_RECYCLE_EVENTS = {
    "requests": catalog.RECYCLE_REQUESTS,
    "time": catalog.RECYCLE_TIME,
    "memory": catalog.RECYCLE_MEMORY,
    "private_memory": catalog.RECYCLE_PRIVATE_MEMORY,
    "schedule": catalog.RECYCLE_SCHEDULE,
}

__all__ = ["Pool", "PoolState", "StopReason", "Waiting"]


def policy_config(settings: PoolSettings) -> PoolConfig:
    """The settings the pool's policy (`activation.pool_policy`) decides by."""
    return PoolConfig(
        processes=settings.processes,
        always_running=settings.start_mode == "always_running",
        overlapping=settings.recycle_overlapping,
        auto_start=settings.auto_start,
        queue_length=settings.queue_length,
        auto_restart_after=settings.auto_restart_after,
        rapid_fail=RapidFailPolicy(
            enabled=settings.rapid_fail_enabled,
            max_crashes=settings.rapid_fail_max_crashes,
            interval=settings.rapid_fail_interval,
        ),
        auto_shutdown_command=bool(settings.auto_shutdown_command),
        orphan_action_command=bool(settings.orphan_action_command),
    )


@dataclass(frozen=True, slots=True)
class DebugArm:
    """What `poolwarden debug startup` armed: a debug server the next worker
    opens before it loads the app, a command it starts under (IIS's Image
    File Execution Options `Debugger`), or both."""

    adapter: str | None
    keep: bool
    since: float
    wrapper: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"under `{shlex.join(self.wrapper)}`"] if self.wrapper else []
        if self.adapter:
            parts.append(f"waiting for {self.adapter}")
        return " and ".join(parts)


@dataclass(slots=True)
class Waiting:
    """A connection waiting in the pool's queue for a worker."""

    sock: socket.socket
    message: ch.Dispatch
    since: float = 0.0
    """When it joined the queue (monotonic)."""


class Pool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: PoolSettings,
        server: ServerSettings,
        *,
        access_log_fd: int,
        on_startup_failure: Callable[[Pool, ch.StartupFailure], None],
        on_stopped: Callable[[Pool], None],
        on_refused: Callable[[ch.Dispatch, int, str, str], None] = lambda *args: None,
        on_hand_back: Callable[[socket.socket, ch.HandBack], None] = lambda sock, message: None,
        routes: list[dict[str, object]] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.loop = loop
        self.machine = PoolMachine(policy_config(settings))
        """The pool's lifecycle policy: this class performs what it decides."""
        self.settings = settings
        self.server = server
        self.access_log_fd = access_log_fd
        self.on_startup_failure = on_startup_failure
        self.on_stopped = on_stopped
        self.on_refused = on_refused
        self.on_hand_back = on_hand_back
        self.routes = routes
        self.events = events or EventLog(None)
        self.workers: list[WorkerProcess] = []
        self.orphans: list[WorkerProcess] = []
        """Failed workers kept stopped for inspection (`orphan_worker`)."""
        self.debug_armed: DebugArm | None = None
        """`poolwarden debug startup`: the next worker starts under a debugger."""
        self.queue: deque[Waiting] = deque()
        self.dispatched = 0
        self._turn = 0
        self.last_failure: ch.StartupFailure | None = None
        self.last_failure_seq: int | None = None
        """The event of the last start-up failure, named in 503 startup_failed."""
        self.disabled_seq: int | None = None
        """The 5002 event that disabled the pool, named in its 503s."""
        self._auto_restart: asyncio.TimerHandle | None = None
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self.requests_served_by_gone_workers = 0
        self.last_event: str | None = None
        self._boot = self._make_boot(settings, server, routes)
        os.makedirs(os.path.join(server.state_dir, "crash"), exist_ok=True)

    @staticmethod
    def _make_boot(
        settings: PoolSettings, server: ServerSettings, routes: list[dict[str, object]] | None
    ) -> ch.Boot:
        return ch.Boot(
            pool=settings.name,
            app=settings.app,
            factory=settings.factory,
            interface=settings.interface,
            threads=settings.threads,
            crash_file="",
            access_log=settings.access_log,
            access_log_format=settings.access_log_format,
            keepalive_timeout=settings.keepalive_timeout,
            head_limits={
                name: getattr(server.head_limits, name)
                for name in server.head_limits.__struct_fields__
            },
            scoreboard_slots=settings.scoreboard_slots,
            multiprocess=settings.processes > 1,
            graceful_timeout=settings.shutdown_time_limit,
            routes=routes,
            core_dumps=settings.core_dumps,
            debug_dir=os.path.abspath(os.path.join(server.state_dir, "debug")),
            loop_lag_warning=settings.loop_lag_warning,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def settings(self) -> PoolSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: PoolSettings) -> None:
        """New settings apply to the next decisions and the next workers."""
        self._settings = settings
        self.machine.config = policy_config(settings)

    @property
    def state(self) -> PoolState:
        return self.machine.state

    @property
    def stop_reason(self) -> StopReason | None:
        return self.machine.stop_reason

    @property
    def consecutive_failures(self) -> int:
        return self.machine.consecutive_failures

    @property
    def failures(self) -> FailureWindow:
        """Rapid-fail protection's window."""
        return self.machine.failures

    @property
    def serving_workers(self) -> list[WorkerProcess]:
        """Workers that count as capacity: not exited, not being replaced."""
        return [
            worker
            for worker in self.workers
            if not worker.retiring and worker.state in (WorkerState.STARTING, WorkerState.READY)
        ]

    def start(self) -> None:
        """Start the pool: an always-running pool starts its workers now."""
        self._apply(self.machine.handle(policy.Start()))

    def resume(self) -> None:
        """`poolwarden pool start`: serve again after a stop, or after rapid-fail
        protection disabled the pool, or try again at once after start-ups
        failed (its failure window starts afresh)."""
        if self.state is PoolState.STARTED:
            return
        self.disabled_seq = None
        if self._auto_restart is not None:
            self._auto_restart.cancel()
            self._auto_restart = None
        try:
            actions = self.machine.handle(policy.Resume())
        except policy.IllegalTransition:
            raise ValueError(f"pool {self.name!r} is shutting down") from None
        if self._kill_timer:
            self._kill_timer.cancel()
            self._kill_timer = None
        self.last_event = "started by an administrator"
        log.info("pool %s: started by an administrator", self.name)
        self.events.emit(
            catalog.POOL_STARTED_BY_ADMINISTRATOR,
            f"pool {self.name!r} was started by an administrator",
            pool=self.name,
        )
        self._apply(actions)

    def stop(self) -> None:
        """`poolwarden pool stop`: drain the workers; requests get 503 pool_stopped."""
        if self.state in (PoolState.STOPPING, PoolState.STOPPED):
            return
        self.last_event = "stopped by an administrator"
        log.info("pool %s: stopped by an administrator", self.name)
        self.events.emit(
            catalog.POOL_STOPPED_BY_ADMINISTRATOR,
            f"pool {self.name!r} was stopped by an administrator",
            pool=self.name,
        )
        self.drain(self.settings.shutdown_time_limit, StopReason.ADMINISTRATOR)

    def recycle(
        self,
        reason: str = "requested by an administrator",
        event_id: int = catalog.RECYCLE_ADMINISTRATOR,
        kind: str = "on_demand",
    ) -> None:
        """Replace every worker with overlap: new ones first, old ones drained
        as each replacement becomes Ready."""
        try:
            actions = self.machine.handle(policy.RecycleRequested())
        except policy.IllegalTransition:
            raise ValueError(f"pool {self.name!r} is {self.state.value}, not started") from None
        retired = {action.id for action in actions if isinstance(action, policy.Retire)}
        old = [worker for worker in self.workers if worker.pid in retired]
        self.last_event = f"recycled ({reason})"
        log.info("pool %s: recycling %d worker(s): %s", self.name, len(old), reason)
        for worker in old if kind in self.settings.log_event_on_recycle else ():
            self.events.emit(
                event_id,
                f"worker {worker.pid} of pool {self.name!r} is recycled: {reason}",
                pool=self.name,
                pid=worker.pid,
                details={"reason": reason},
            )
        self._apply(actions)

    def recycle_worker(self, worker: WorkerProcess, reason: str, kind: str, event_id: int) -> None:
        """Replace one worker with overlap (a limit it reached): its
        replacement starts first, and it drains once the replacement is Ready."""
        self._note_recycle(worker, reason, kind, event_id)
        self._apply(self.machine.handle(policy.RecycleRequested((worker.pid,))))

    def _note_recycle(self, worker: WorkerProcess, reason: str, kind: str, event_id: int) -> None:
        """Log one worker's recycle, and write its event if the pool logs that kind."""
        log.info("pool %s: recycling worker %d: %s", self.name, worker.pid, reason)
        self.last_event = f"worker {worker.pid} recycled ({kind})"
        if kind in self.settings.log_event_on_recycle:
            self.events.emit(
                event_id,
                f"worker {worker.pid} of pool {self.name!r} is recycled: {reason}",
                pool=self.name,
                pid=worker.pid,
                details={"reason": kind, "why": reason},
            )

    def check_workers(self, now: float) -> None:
        """The periodic look at every worker: what `activation.recycling.decide`
        says (memory hard limit, recycle limits, idleness), done here."""
        self._expire_queue(now)
        if self.state is not PoolState.STARTED:
            return
        settings = self.settings
        facts = []
        by_pid = {}
        for worker in self.workers:
            if worker.returncode is not None:
                continue
            served = worker.note_activity(now)
            by_pid[worker.pid] = worker
            facts.append(
                WorkerFacts(
                    pid=worker.pid,
                    age=now - worker.started_at,
                    served=served,
                    idle_for=now - worker.last_activity,
                    connections=len(worker.custody),
                    rss=worker.last_rss,
                    uss=worker.last_uss,
                    request_limit=worker.request_limit,
                    time_limit=worker.time_limit if settings.recycle_time else 0.0,
                    replaceable=worker.state is WorkerState.READY and not worker.retiring,
                    started_at=worker.started_wall,
                )
            )
        scheduled = last_scheduled(datetime.now(), settings.recycle_schedule)
        limits = Limits(
            memory=settings.recycle_memory,
            private_memory=settings.recycle_private_memory,
            memory_hard_limit=settings.memory_hard_limit,
            idle_timeout=settings.idle_timeout if settings.start_mode == "on_demand" else 0.0,
            scheduled_at=scheduled.timestamp() if scheduled is not None else 0.0,
        )
        for action in decide(facts, limits, recycling=self.machine.recycling):
            self._perform(by_pid[action.pid], action)
        if settings.request_timeout > 0:
            for worker in by_pid.values():
                self._check_request_times(worker)

    def _expire_queue(self, now: float) -> None:
        """A request does not wait for a worker longer than a worker may take
        to start: past `startup_time_limit` in the queue, it gets 503:
        `startup_failed` if start-ups failed, `startup_timeout` if one is
        slow, `queue_timeout` if every worker stayed busy all that time."""
        limit = self.settings.startup_time_limit
        if not self.queue or limit <= 0 or now - self.queue[0].since <= limit:
            return
        expired = self.machine.handle(policy.QueueWaitExpired())
        if not expired:
            return  # a debugger holds a start: requests wait up to the queue bound
        (refuse,) = expired
        assert isinstance(refuse, policy.RefuseExpired)
        reason = refuse.reason
        while self.queue and now - self.queue[0].since > limit:
            waiting = self.queue.popleft()
            self._refuse(waiting.sock, waiting.message, reason)

    def _check_request_times(self, worker: WorkerProcess) -> None:
        """A request past `request_timeout` is hung: its stack is taken, its
        client answered 504 by the master, and the worker dealt with as
        `request_timeout_action` says."""
        limit = self.settings.request_timeout
        now = time.time()
        for slot in worker.scoreboard.busy():
            key = (slot.conn_id, slot.started)
            if now - slot.started > limit and key not in worker.timed_out_requests:
                worker.timed_out_requests.add(key)
                self.loop.create_task(self._request_timed_out(worker, slot))

    async def _request_timed_out(self, worker: WorkerProcess, slot: SlotView) -> None:
        settings = self.settings
        tasks = await worker.task_stacks() if worker.interface == "asgi" else None
        threads = await worker.stacks()
        now = time.time()
        current = worker.scoreboard.read(slot.index) if worker.returncode is None else None
        if current is None or (current.conn_id, current.started) != (slot.conn_id, slot.started):
            return  # it finished while its stack was taken
        stack: str | None = None
        frames: list[StackFrame] = []
        task = next(
            (
                t
                for t in tasks or ()
                if t.request is not None and t.name.endswith(f"-{slot.conn_id}")
            ),
            None,
        )
        if task is not None:
            stack, frames = render_tasks([task]), task.frames
        elif worker.interface == "asgi":
            # No answer from the loop: it is blocked, and its thread (the one
            # that writes the scoreboard; a worker has others) shows by what.
            thread = next((t for t in threads if t.ident == slot.thread), None)
            if thread is not None:
                stack, frames = render_threads([thread]), thread.frames
        else:
            thread = next((t for t in threads if t.ident == slot.thread), None)
            if thread is not None:
                stack, frames = render_threads([thread]), thread.frames
        frame = innermost_app_frame(frames)
        where = f" in {frame.name} ({frame.filename}:{frame.lineno})" if frame else ""
        elapsed = round(now - slot.started, 3)
        action = settings.request_timeout_action
        seq = self.events.emit(
            catalog.REQUEST_TIMEOUT,
            f"{slot.method} {slot.path} from {slot.client} ran {elapsed:g}s, past "
            f"request_timeout ({settings.request_timeout:g}s), in worker {worker.pid} of pool "
            f"{self.name!r}{where}; action: {action}",
            pool=self.name,
            pid=worker.pid,
            details={
                "method": slot.method,
                "path": slot.path,
                "client": slot.client,
                "elapsed": elapsed,
                "request_timeout": settings.request_timeout,
                "action": action,
                "response_started": current.phase is Phase.RESPONDING,
                "stack": stack,
                "threads": render_threads(threads) if threads else None,
                "tasks": render_tasks(tasks) if tasks else None,
            },
            fingerprint=f"2040 {self.name} {frame.filename}:{frame.lineno}" if frame else None,
        )
        log.warning(
            "pool %s: worker %d: %s %s ran past request_timeout (%gs)%s; action: %s",
            self.name,
            worker.pid,
            slot.method,
            slot.path,
            settings.request_timeout,
            where,
            action,
        )
        self.last_event = f"{catalog.REQUEST_TIMEOUT} #{seq}" if seq is not None else None
        worker.abandon(slot.conn_id, current.phase is Phase.APP, seq)
        if action == "kill":
            worker.kill("request_timeout")
        elif action == "recycle" and not worker.retiring and self.state is PoolState.STARTED:
            self.recycle_worker(
                worker,
                f"a request ran past request_timeout ({settings.request_timeout:g}s)",
                "request_timeout",
                catalog.RECYCLE_UNHEALTHY,
            )

    def _perform(self, worker: WorkerProcess, action: Action) -> None:
        if action.reason == "memory_hard_limit":
            log.error("pool %s: killing worker %d: %s", self.name, worker.pid, action.why)
            worker.kill("memory_hard_limit")
        elif action.reason == "idle":
            log.info("pool %s: worker %d: %s; shutting it down", self.name, worker.pid, action.why)
            self.events.emit(
                catalog.WORKER_IDLE_SHUTDOWN,
                f"worker {worker.pid} of pool {self.name!r} {action.why} and is shut down; "
                "the next request starts one",
                pool=self.name,
                pid=worker.pid,
                details={"idle_timeout": self.settings.idle_timeout},
            )
            self.last_event = f"worker {worker.pid} shut down (idle)"
            self._apply(self.machine.handle(policy.IdleTimeout(worker.pid)))
        else:
            self.recycle_worker(worker, action.why, action.reason, _RECYCLE_EVENTS[action.reason])

    def arm_debug(self, adapter: str | None, keep: bool, wrapper: tuple[str, ...] = ()) -> None:
        """`poolwarden debug startup`: the next worker waits for a debugger
        before it loads the app, or starts under `wrapper` (or both). An
        always-running pool gets that worker now (it replaces the oldest, with
        overlap); an on-demand pool when the next request arrives."""
        try:
            actions = self.machine.handle(policy.DebugArmed())
        except policy.IllegalTransition:
            raise ValueError(
                f"pool {self.name!r} is disabled by rapid-fail protection; "
                "start it again with the debugger armed (--start)"
            ) from None
        armed = DebugArm(adapter, keep, time.time(), wrapper)
        self.debug_armed = armed
        self.last_event = f"debug startup armed ({armed.describe()})"
        log.info("pool %s: the next worker starts %s", self.name, armed.describe())
        for action in actions:
            replaced = self._worker(action.id) if isinstance(action, policy.Retire) else None
            if replaced is not None:
                self._note_recycle(
                    replaced, "debug startup", "on_demand", catalog.RECYCLE_ADMINISTRATOR
                )
        self._apply(actions)

    def disarm_debug(self) -> None:
        self.debug_armed = None

    def debug_status(self) -> dict[str, object]:
        armed = self.debug_armed
        return {
            "pool": self.name,
            "armed": None
            if armed is None
            else {
                "adapter": armed.adapter,
                "keep": armed.keep,
                "since": armed.since,
                "wrapper": list(armed.wrapper) or None,
            },
            "workers": [
                {
                    "pid": worker.pid,
                    "python_pid": worker.python_pid,
                    "adapter": worker.debugging,
                    "wrapper": list(worker.settings.launch_wrapper) or None,
                    "address": worker.debug_address,
                    "since": worker.debug_since,
                    "state": worker.state.value,
                }
                for worker in self.workers
                if worker.debugging and worker.returncode is None
            ],
        }

    def update_settings(self, settings: PoolSettings) -> None:
        """A reload changed the pool: new workers get the new settings, and
        the running ones are recycled with overlap."""
        self.settings = settings
        self._boot = self._make_boot(settings, self.server, self.routes)
        if self.state is PoolState.STARTED:
            self.recycle(
                "its configuration changed", catalog.RECYCLE_CONFIG_CHANGE, "config_change"
            )
        elif self.state is PoolState.STARTUP_FAILED:
            # The new settings may be the fix: try again now.
            self.last_event = "configuration changed"
            self._apply(self.machine.handle(policy.SettingsChanged()))

    def set_routes(self, routes: list[dict[str, object]] | None) -> None:
        """A reload changed the routing table: workers route by the new one."""
        self.routes = routes
        self._boot = self._make_boot(self.settings, self.server, routes)
        for worker in self.workers:
            if worker.returncode is None:
                worker.send(ch.Routes(routes))

    def status(self) -> dict[str, object]:
        """What `poolwarden pools` shows."""
        state = self.state.value
        reason: str | None = None
        if self.state in (PoolState.STOPPING, PoolState.STOPPED) and self.stop_reason:
            reason = self.stop_reason.value
        elif self.state is PoolState.DISABLED:
            policy = self.rapid_fail
            reason = (
                f"rapid-fail protection: {policy.max_crashes} failures within "
                + (standing(policy.max_crashes, policy).rsplit(" within ", 1)[-1])
            )
        elif self.state is PoolState.STARTUP_FAILED and self.last_failure is not None:
            failure = self.last_failure
            reason = f"{failure.exception_type}: {failure.message}"
            if len(reason) > 60:
                reason = reason[:59] + "…"
        if (
            self.state is PoolState.STARTED
            and not any(worker.state is WorkerState.READY for worker in self.workers)
            and self.workers
        ):
            state = "starting"
        return {
            "name": self.name,
            "state": state,
            "reason": reason,
            "app": self.settings.app,
            "workers": len([w for w in self.workers if w.state is not WorkerState.EXITED]),
            "queue": len(self.queue),
            "requests_served": self.requests_served_by_gone_workers
            + sum(
                worker.scoreboard.served() for worker in self.workers if worker.returncode is None
            ),
            "last_event": self.last_event,
        }

    def _spawn(self) -> None:
        if not self.machine.may_spawn:
            return  # a failure reported by an earlier spawn stopped the pool
        boot, settings = self._boot, self.settings
        armed = self.debug_armed
        if armed is not None:
            if armed.adapter:
                boot = msgspec.structs.replace(boot, debug=armed.adapter)
            if armed.wrapper:
                settings = msgspec.structs.replace(settings, launch_wrapper=armed.wrapper)
            if not armed.keep:
                self.debug_armed = None  # one worker, then it switches itself off
        worker = WorkerProcess(
            self.loop,
            settings,
            boot=boot,
            state_dir=self.server.state_dir,
            access_log_fd=self.access_log_fd,
            on_ready=self._worker_ready,
            on_startup_failed=self._worker_startup_failed,
            on_exit=self._worker_exited,
            on_hand_back=self.on_hand_back,
            on_ended=self._worker_ended,
            on_thread_failed=self._thread_failed,
            on_orphaned=self._worker_orphaned,
            on_loop_lag=self._loop_lagged,
            on_debugged=self._worker_debugged,
        )
        if armed is not None and armed.wrapper and not armed.adapter:
            # A worker under a debugger's wrapper runs slowly or stops at
            # breakpoints: no start-up limit, no pings, failures not counted.
            worker.debugging = "wrapper"
            worker.debug_since = time.time()
        try:
            worker.spawn()
        except OSError as error:
            log.error("pool %s: cannot start a worker: %s", self.name, error)
            self._spawn_failed(error)
            return
        self.workers.append(worker)
        self.machine.handle(policy.WorkerSpawned(worker.pid, debugged=bool(worker.debugging)))
        log.debug("pool %s: started worker %d", self.name, worker.pid)
        self.events.emit(
            catalog.WORKER_STARTED,
            f"worker {worker.pid} of pool {self.name!r} started",
            pool=self.name,
            pid=worker.pid,
            details={"python": self.settings.python, "app": self.settings.app},
        )

    def _spawn_failed(self, error: OSError) -> None:
        """No process could be started (a wrong interpreter or working
        directory, no memory, no pids): a start-up failure, with the same
        back-off, rather than a retry at once and forever."""
        actions = self.machine.handle(policy.SpawnFailed(time.monotonic(), len(self.queue)))
        seq = self.events.emit(
            catalog.WORKER_CREATE_FAILED,
            f"pool {self.name!r}: a worker process could not be created: {error}",
            pool=self.name,
            details={"python": self.settings.python, "error": str(error)},
            fingerprint=f"5022:{type(error).__name__}:{self.settings.python}",
        )
        message = f"cannot start a worker process: {error}"
        if not any(isinstance(action, policy.Disable) for action in actions):
            self.last_failure = ch.StartupFailure(
                phase="spawn",
                app=self.settings.app,
                exception_type=type(error).__name__,
                message=message,
            )
        self._apply(actions, evidence=(message, {}, seq))

    # dispatch

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        state = self.state
        all_busy = False
        if (state is PoolState.STARTED or state is PoolState.STARTUP_FAILED) and not self.queue:
            worker = self._least_busy()
            if worker is not None and not self._at_capacity(worker):
                self.dispatched += 1
                worker.dispatch(sock, message)
                if self.settings.processes > 1:
                    self._grow_if_busy()
                return
            if worker is not None:
                self._grow_if_busy()
                all_busy = True  # it waits in the queue
        arrived = policy.RequestArrived(len(self.queue), all_busy, time.monotonic())
        for action in self.machine.handle(arrived):
            if isinstance(action, policy.Refuse):
                self._refuse(sock, message, action.reason)
            elif isinstance(action, policy.Enqueue):
                self.queue.append(Waiting(sock, message, time.monotonic()))
                if self._flush_timer is None and self._least_busy() is not None:
                    self._flush_timer = self.loop.call_later(QUEUE_RECHECK, self._flush_queue)
            else:
                self._apply([action])  # on demand: the first request starts a worker

    def _grow_if_busy(self) -> None:
        """A web garden grows on demand: another worker when every worker has
        as many requests in flight as it has threads."""
        if not self.machine.may_grow:
            return
        capacity = self.settings.threads
        if all(worker.busy_count() >= capacity for worker in self.serving_workers):
            log.info("pool %s: every worker is busy; starting another", self.name)
            self._apply(self.machine.handle(policy.AllBusy()))

    def _least_busy(self) -> WorkerProcess | None:
        """The Ready worker with the fewest connections.

        The search starts one worker further on each time, so that ties go
        round: under light load every connection would otherwise land on
        the first worker, and the others would sit idle and cold.
        """
        workers = self.workers
        count = len(workers)
        if count == 1:
            only = workers[0]
            return only if only.state is WorkerState.READY else None
        if not count:
            return None
        self._turn = turn = (self._turn + 1) % count
        best = None
        best_load = (0, 0)
        fallback = None
        for step in range(count):
            worker = workers[(turn + step) % count]
            if worker.state is not WorkerState.READY:
                continue
            if worker.retiring or worker.debug_address is not None:
                fallback = fallback or worker  # draining, or stopped in a debugger
                continue
            load = (worker.busy_count(), worker.load)
            if best is None or load < best_load:
                best, best_load = worker, load
        return best or fallback

    def _refuse(self, sock: socket.socket, message: ch.Dispatch, reason: str) -> None:
        if reason == "pool_disabled" and self.settings.load_balancer_capability == "tcp_level":
            self._reset(sock, message)
            return
        text = {
            "startup_failed": f"Service Unavailable: the app of pool {self.name!r} failed to start.",
            "startup_timeout": f"Service Unavailable: the app of pool {self.name!r} did not "
            "start within its start-up time limit.",
            "queue_full": f"Service Unavailable: the queue of pool {self.name!r} is full.",
            "queue_timeout": f"Service Unavailable: every worker of pool {self.name!r} stayed "
            f"busy for {self.settings.startup_time_limit:g}s while this request waited.",
            "pool_stopped": f"Service Unavailable: pool {self.name!r} was stopped by an "
            "administrator.",
            "pool_disabled": f"Service Unavailable: pool {self.name!r} was disabled by "
            "rapid-fail protection after its workers kept failing.",
            "shutting_down": "Service Unavailable: the server is shutting down.",
        }[reason]
        retry: tuple[tuple[str, str], ...] = (
            ()
            if reason in ("shutting_down", "pool_stopped", "pool_disabled")
            else (("Retry-After", "5"),)
        )
        if reason == "pool_disabled" and self.disabled_seq is not None:
            retry += (("X-Poolwarden-Event", str(self.disabled_seq)),)
            text += f"\nSee event {self.disabled_seq}: poolwarden events show {self.disabled_seq}"
        self.on_refused(message, 503, reason, self.name)
        failure, seq = self.last_failure, self.last_failure_seq
        if reason.startswith("startup_") and seq is not None:
            retry += (("X-Poolwarden-Event", str(seq)),)
            text += f"\nSee event {seq}: poolwarden events show {seq}"
        if reason.startswith("startup_") and failure is not None and self.server.dev_mode:
            response = simple_response(
                503,
                startup_failure_page(self.name, failure, seq),
                reason_code=reason,
                extra_headers=retry,
                content_type="text/html; charset=utf-8",
            )
        else:
            response = simple_response(503, text + "\n", reason_code=reason, extra_headers=retry)
        answer_and_close(self.loop, sock, response)

    def _reset(self, sock: socket.socket, message: ch.Dispatch) -> None:
        """tcp_level: no HTTP answer, a reset, so a TCP balancer fails over."""
        self.on_refused(message, 0, "pool_disabled_reset", self.name)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def _at_capacity(self, worker: WorkerProcess) -> bool:
        """A WSGI worker whose every thread has a request: a new connection
        waits in the pool's queue (IIS's HTTP.SYS queue) rather than in the
        worker. An ASGI worker takes what comes."""
        return worker.interface == "wsgi" and worker.busy_count() >= self.settings.threads

    def _flush_queue(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        while self.queue:
            worker = self._least_busy()
            if worker is None:
                return
            if self._at_capacity(worker):
                # Workers do not report each finished request; look again
                # shortly while connections wait.
                self._flush_timer = self.loop.call_later(QUEUE_RECHECK, self._flush_queue)
                return
            waiting = self.queue.popleft()
            self.dispatched += 1
            worker.dispatch(waiting.sock, waiting.message)

    def _refuse_queue(self, reason: str) -> None:
        while self.queue:
            waiting = self.queue.popleft()
            self._refuse(waiting.sock, waiting.message, reason)

    # worker events

    def _worker_ready(self, worker: WorkerProcess) -> None:
        log.info(
            "pool %s: worker %d ready (%s), serving %s",
            self.name,
            worker.pid,
            worker.interface,
            self.settings.app,
        )
        self.events.emit(
            catalog.WORKER_READY,
            f"worker {worker.pid} of pool {self.name!r} is ready ({worker.interface})",
            pool=self.name,
            pid=worker.pid,
            details={"interface": worker.interface, "startup_seconds": worker.startup_seconds},
        )
        for action in self.machine.handle(policy.WorkerReady(worker.pid)):
            if isinstance(action, policy.Drain):  # the oldest worker it replaces
                log.info("pool %s: worker %d replaced; draining it", self.name, action.id)
            self._apply([action])
        self._flush_queue()

    def _worker_debugged(self, worker: WorkerProcess) -> None:
        """A debugger holds the worker: from now on its failures are not the app's."""
        self.machine.handle(policy.WorkerDebugged(worker.pid))

    def _worker_startup_failed(self, worker: WorkerProcess, failure: ch.StartupFailure) -> None:
        self.last_failure = failure
        self.machine.handle(policy.StartupFailureReported(failure.phase == "startup_timeout"))
        log.error("pool %s: worker %d: %s", self.name, worker.pid, failure.headline())
        self.on_startup_failure(self, failure)

    def _worker_exited(self, worker: WorkerProcess) -> None:
        if worker in self.orphans:
            self.orphans.remove(worker)
            self.machine.handle(policy.WorkerExited(worker.pid))  # forgotten: no news
            return  # out of service since it was orphaned
        if worker in self.workers:
            self.workers.remove(worker)
            self.requests_served_by_gone_workers += worker.served_at_exit
        state = self.state
        actions = self.machine.handle(
            policy.WorkerExited(
                worker.pid,
                reported_startup_failure=worker.startup_failure is not None,
                timed_out=worker.timed_out,
                killed_by_master=worker.killed_by_master,
                queued=len(self.queue),
            )
        )
        if state is PoolState.DISABLED:
            return  # rapid-fail protection: nothing more is started
        stopping = state in (PoolState.STOPPING, PoolState.STOPPED)
        if worker.startup_failure is not None or worker.timed_out:
            pass  # logged when it arrived, or reported by the actions
        elif stopping or worker.killed_by_master or worker.retiring or worker.ended_by:
            log.debug("pool %s: worker %d %s", self.name, worker.pid, worker.exit_text)
        else:
            log.error(
                "pool %s: worker %d %s unexpectedly%s",
                self.name,
                worker.pid,
                worker.exit_text,
                f"; last output: {worker.tail[-1]}" if worker.tail else "",
            )
        self._apply(actions, worker=worker)

    @property
    def rapid_fail(self) -> RapidFailPolicy:
        return self.machine.config.rapid_fail

    def _disable(
        self, count: int, last_message: str, last_details: dict[str, object], last_seq: int | None
    ) -> None:
        """Rapid-fail protection trips: no more workers; every request to the
        pool gets 503 pool_disabled until an administrator starts it again."""
        policy = self.rapid_fail
        where = standing(count, policy)
        log.error(
            "pool %s: disabled by rapid-fail protection (%s); start it with "
            "`poolwarden pool start %s` once fixed",
            self.name,
            where,
            self.name,
        )
        self.disabled_seq = self.events.emit(
            catalog.POOL_DISABLED_RAPID_FAIL,
            f"pool {self.name!r} disabled by rapid-fail protection after {count} failures "
            f"within {standing(count, policy).rsplit(' within ', 1)[-1]}; last: {last_message}",
            pool=self.name,
            details={
                "failures": count,
                "max_crashes": policy.max_crashes,
                "interval": policy.interval,
                "last_failure_seq": last_seq,
                "last_failure": last_message,
                "last_failure_details": last_details,
            },
            fingerprint=f"5002 {self.name}",
        )
        self.last_event = f"{catalog.POOL_DISABLED_RAPID_FAIL} #{self.disabled_seq}"

    async def _run_auto_shutdown_command(self, disabled_seq: int | None) -> None:
        """IIS's autoShutdownExe: page someone, take the host out of a
        balancer. Its outcome and output are an event of their own."""
        settings = self.settings
        result = await run_bounded(
            list(settings.auto_shutdown_command),
            {
                "POOLWARDEN_POOL": self.name,
                "POOLWARDEN_EVENT_SEQ": str(disabled_seq or ""),
                "POOLWARDEN_STATE_DIR": os.path.abspath(self.server.state_dir),
            },
            settings.auto_shutdown_time_limit,
        )
        event_id = (
            catalog.AUTO_SHUTDOWN_COMMAND_RAN if result.ok else catalog.AUTO_SHUTDOWN_COMMAND_FAILED
        )
        (log.info if result.ok else log.warning)(
            "pool %s: auto_shutdown_command %s", self.name, result.summary()
        )
        self.events.emit(
            event_id,
            f"pool {self.name!r}: auto_shutdown_command {result.summary()}",
            pool=self.name,
            details={
                **result.details(),
                "disabled_seq": disabled_seq,
            },
        )

    def _restart_by_itself(self) -> None:
        """`auto_restart_after`: an unattended host tries the pool again."""
        self._auto_restart = None
        if self.state is PoolState.DISABLED:
            log.info("pool %s: starting again after auto_restart_after", self.name)
            self.resume()

    def _worker_ended(self, worker: WorkerProcess) -> int | None:
        """Classify the end of a reaped worker and write its event; the event's
        sequence number goes in the 502s of the requests it left unanswered."""
        classification = classify(worker.evidence())
        actions = self.machine.handle(
            policy.WorkerEnded(worker.pid, classification.counts_as_failure, time.monotonic())
        )
        for counted in actions:
            if not isinstance(counted, policy.FailureCounted):
                continue  # a debugged worker's or an orphan's end never counts
            where = standing(counted.count, self.rapid_fail)
            classification = msgspec.structs.replace(
                classification,
                message=f"{classification.message}; {where}",
                details={**classification.details, "rapid_fail": where},
            )
        seq = self.events.worker_ended(classification)
        if seq is not None:
            self.last_event = f"{classification.event_id} #{seq}"
            if not worker.ever_ready:
                self.last_failure_seq = seq
        # Last: a disable these actions bring is the newer news (5002).
        self._apply(actions, evidence=(classification.message, classification.details, seq))
        return seq

    def _worker_orphaned(self, worker: WorkerProcess, reason: EndedBy, stacks: str) -> int | None:
        """A failed worker kept stopped: out of service at once, counted as a
        failure (unless a debugger held it), replaced, and handed to
        `orphan_action_command`: as `self.machine` decides."""
        if worker in self.workers:
            self.workers.remove(worker)
            self.requests_served_by_gone_workers += worker.scoreboard.served()
        self.orphans.append(worker)
        actions = self.machine.handle(
            policy.WorkerOrphaned(worker.pid, time.monotonic(), len(self.queue))
        )
        counted = next((a for a in actions if isinstance(a, policy.FailureCounted)), None)
        where = (
            standing(counted.count, self.rapid_fail)
            if counted is not None
            else "not counted: a debugger held it"
        )
        why = {
            "hang": "did not answer a ping in time",
            "startup_time_limit": "was not ready within the start-up time limit",
        }.get(reason, "lost its channel")
        message = (
            f"worker {worker.pid} of pool {self.name!r} {why} and is kept stopped (SIGSTOP) "
            f"for inspection; {where}"
        )
        log.error("pool %s: %s", self.name, message)
        seq = self.events.emit(
            catalog.WORKER_ORPHANED,
            message,
            pool=self.name,
            pid=worker.pid,
            details={"reason": reason, "stacks": stacks, "rapid_fail": where},
            fingerprint=f"2027 {self.name} {reason}",
        )
        self.last_event = f"{catalog.WORKER_ORPHANED} #{seq}" if seq is not None else None
        self._apply(actions, worker=worker, evidence=(message, {"reason": reason}, seq))
        return seq

    async def _run_orphan_action(self, worker: WorkerProcess, seq: int | None) -> None:
        result = await run_bounded(
            list(self.settings.orphan_action_command),
            {
                "POOLWARDEN_PID": str(worker.python_pid),
                "POOLWARDEN_POOL": self.name,
                "POOLWARDEN_EVENT_SEQ": str(seq or ""),
                "POOLWARDEN_STATE_DIR": os.path.abspath(self.server.state_dir),
            },
            self.settings.auto_shutdown_time_limit,
        )
        if result.ok:
            log.info("pool %s: orphan action for worker %d ran", self.name, worker.pid)
            return
        self.events.emit(
            catalog.ORPHAN_ACTION_FAILED,
            f"pool {self.name!r}: orphan_action_command for worker {worker.pid} {result.summary()}",
            pool=self.name,
            pid=worker.pid,
            details={
                **result.details(),
                "orphaned_seq": seq,
            },
        )

    def reap_orphans(self, pid: int | None = None) -> list[int]:
        """End the orphans (all, or the one with `pid`); their pids."""
        reaped = []
        for worker in list(self.orphans):
            if pid is None or worker.pid == pid:
                worker.reap()
                reaped.append(worker.pid)
        return reaped

    def _thread_failed(self, worker: WorkerProcess, message: ch.ThreadFailed) -> None:
        log.warning(
            "pool %s: worker %d: an exception ended thread %r: %s: %s",
            self.name,
            worker.pid,
            message.thread,
            message.exception_type,
            message.message,
        )
        self.events.thread_failed(self.name, worker.pid, message)

    def _loop_lagged(self, worker: WorkerProcess, message: ch.LoopLag) -> None:
        """An ASGI worker's watchdog saw its event loop blocked (2041): the
        line that blocked it and for how long."""
        frames = with_source([StackFrame(f.filename, f.lineno, f.name) for f in message.frames])
        frame = innermost_app_frame(frames)
        where = f" in {frame.name} ({frame.filename}:{frame.lineno})" if frame else ""
        serving = f" while serving {message.method} {message.path}" if message.method else ""
        how_long = (
            f"was blocked for {message.blocked:g}s"
            if message.ended
            else f"has been blocked for {message.blocked:g}s and still was when reported"
        )
        skipped = (
            f"; {message.skipped} more stall(s) since the last report went unreported"
            if message.skipped
            else ""
        )
        stack = render_threads(
            [ThreadStack(ident=message.thread, current=False, frames=frames, name="event loop")]
        )
        self.events.emit(
            catalog.LOOP_LAG,
            f"the event loop of worker {worker.pid} of pool {self.name!r} {how_long}"
            f"{where}{serving}{skipped}",
            pool=self.name,
            pid=worker.pid,
            details={
                "lag": message.lag,
                "blocked": message.blocked,
                "ended": message.ended,
                "loop_lag_warning": self.settings.loop_lag_warning,
                "method": message.method or None,
                "path": message.path or None,
                "client": message.client or None,
                "skipped": message.skipped,
                "stack": stack,
            },
            fingerprint=f"2041 {self.name} {frame.filename}:{frame.lineno}" if frame else None,
        )
        log.warning(
            "pool %s: worker %d: the event loop %s%s%s",
            self.name,
            worker.pid,
            how_long,
            where,
            serving,
        )

    def _timed_out(self, worker: WorkerProcess) -> None:
        failure = ch.StartupFailure(
            phase="startup_timeout",
            app=self.settings.app,
            exception_type="StartupTimeout",
            message=f"the worker was not ready within the start-up time limit "
            f"({self.settings.startup_time_limit:g}s)",
        )
        self.last_failure = failure
        self.on_startup_failure(self, failure)

    def _recycle_aborted(self, failed: WorkerProcess, kept: int) -> None:
        """A replacement failed to start: the old workers keep serving."""
        reason = failed.startup_failure.headline() if failed.startup_failure else failed.exit_text
        self.last_event = f"recycle aborted: a replacement failed to start ({reason})"
        self.events.emit(
            catalog.RECYCLE_FAILED,
            f"pool {self.name!r}: recycle aborted, {kept} old worker(s) keep serving: {reason}",
            pool=self.name,
            pid=failed.pid,
            details={"replacement_pid": failed.pid, "kept": kept, "reason": reason},
        )
        log.error(
            "pool %s: recycle aborted, %d old worker(s) keep serving: %s", self.name, kept, reason
        )

    def _died_before_ready(self, worker: WorkerProcess) -> None:
        """A worker that ended before Ready without saying why is a start-up
        failure all the same: a crash in a C extension at import, `os._exit`,
        the OOM killer. Without this, fail-fast would retry it forever."""
        message = f"the worker ended before it was ready ({worker.exit_text})"
        if worker.tail:
            message += f"; its last output: {worker.tail[-1]}"
        if os.path.exists(worker.crash_file):
            message += f"; its crash dump: {worker.crash_file}"
        failure = ch.StartupFailure(
            phase="boot", app=self.settings.app, exception_type="WorkerDied", message=message
        )
        self.last_failure = failure
        self.on_startup_failure(self, failure)

    def _respawn(self) -> None:
        self._respawn_timer = None
        self._apply(self.machine.handle(policy.RespawnDue(len(self.queue))))

    # shutdown

    def drain(self, time_limit: float, reason: StopReason = StopReason.SHUTDOWN) -> None:
        """Stop taking work, let workers finish, kill them at the time limit;
        a shutdown or removal also reaps the orphans."""
        self._apply(self.machine.handle(policy.Stop(reason, time_limit)))

    def kill(self) -> None:
        """Stop at once: every worker gets SIGKILL."""
        actions = self.machine.handle(policy.StopNow())
        for action in actions:
            worker = self._worker(action.id) if isinstance(action, policy.Kill) else None
            # One that reported a start-up failure is on its way out anyway.
            if worker and worker.state is not WorkerState.EXITED and worker.startup_failure is None:
                log.warning("pool %s: killing worker %d", self.name, worker.pid)
        self._apply(actions)

    def _stopped(self) -> None:
        if self._kill_timer:
            self._kill_timer.cancel()
        self.on_stopped(self)

    # performing the policy's actions

    def _worker(self, pid: int) -> WorkerProcess | None:
        return next((worker for worker in self.workers if worker.pid == pid), None)

    def _apply(
        self,
        actions: list[policy.Action],
        *,
        worker: WorkerProcess | None = None,
        evidence: tuple[str, dict[str, object], int | None] = ("", {}, None),
    ) -> None:
        """Perform what `self.machine` decided, in order. `worker` is the one
        the event was about; `evidence` (message, details, event number) is
        the failure that may disable the pool."""
        for action in actions:
            match action:
                case policy.Spawn(count=count):
                    for _ in range(count):
                        self._spawn()
                case policy.ScheduleRespawn(delay=delay):
                    # An earlier action's callback (a start-up failure that
                    # ends a `run`) may have stopped the pool meanwhile.
                    if self.machine.respawn_pending and self._respawn_timer is None:
                        self._respawn_timer = self.loop.call_later(delay, self._respawn)
                case policy.CancelRespawn():
                    if self._respawn_timer:
                        self._respawn_timer.cancel()
                        self._respawn_timer = None
                case policy.Retire(id=id) | policy.Unretire(id=id):
                    target = self._worker(id)
                    if target is not None:
                        target.retiring = isinstance(action, policy.Retire)
                case policy.Drain(id=id, reason=reason):
                    target = self._worker(id)
                    if target is not None:
                        target.drain(reason)
                case policy.Kill(id=id, reason=reason):
                    target = self._worker(id)
                    if target is not None:
                        target.kill(reason)
                case policy.RefuseQueue(reason=reason):
                    self._refuse_queue(reason)
                case policy.Disable(count=count):
                    self._disable(count, *evidence)
                case policy.ScheduleAutoRestart(delay=delay):
                    self._auto_restart = self.loop.call_later(delay, self._restart_by_itself)
                case policy.RunAutoShutdownCommand():
                    self.loop.create_task(self._run_auto_shutdown_command(self.disabled_seq))
                case policy.RunOrphanAction(id=id):
                    orphan = next((w for w in self.orphans if w.pid == id), None)
                    if orphan is not None:
                        self.loop.create_task(self._run_orphan_action(orphan, evidence[2]))
                case policy.ReapOrphans():
                    self.reap_orphans()
                case policy.ScheduleKill(delay=delay):
                    if self._kill_timer:
                        self._kill_timer.cancel()
                    self._kill_timer = self.loop.call_later(delay, self.kill)
                case policy.Stopped():
                    self._stopped()
                case policy.ReportStartupFailure(kind=kind):
                    if kind == "spawn" and self.last_failure is not None:
                        self.on_startup_failure(self, self.last_failure)
                    elif kind == "startup_timeout" and worker is not None:
                        self._timed_out(worker)
                    elif kind == "died_before_ready" and worker is not None:
                        self._died_before_ready(worker)
                case policy.RecycleAborted(kept=kept) if worker is not None:
                    self._recycle_aborted(worker, kept)
                case _:
                    pass  # FailureCounted, Enqueue, Refuse, RefuseExpired: read by the caller
