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
decided by the pure `activation.pool_policy.PoolMachine`; the pool performs
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

`Pool` is what the rest of the master talks to; it holds what its parts
share (settings, the machine, the workers, the last failure) and hands the
work to one part per concept:

```
 Master, FrontEnd, control API ──▶ Pool ─┬─ Dispatcher (pool_dispatch): a worker, the queue, 503s
   start/stop/resume/recycle/kill,       ├─ Lifecycle (pool_lifecycle): the machine's actions,
   dispatch, check_workers, status,      │    spawn, drain, kill, timers, 5002, commands, orphans
   arm_debug, update_settings            ├─ WorkerReports (pool_reports): the workers' callbacks
                                         ├─ Recycler (pool_recycling): recycles and limits
                                         ├─ RequestWatch (pool_request_watch): 504s, loop lag
                                         └─ StartupDebugging (pool_debug): `debug startup`
                  each part ──event──▶ PoolMachine ──actions──▶ Lifecycle.apply
```
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.activation.pool_policy import PoolConfig, PoolMachine, PoolState, StopReason
from poolwarden.activation.rapid_fail import FailureWindow, RapidFailPolicy, standing
from poolwarden.events import catalog
from poolwarden.master.event_log import EventLog
from poolwarden.master.pool_debug import StartupDebugging
from poolwarden.master.pool_dispatch import Dispatcher, Waiting
from poolwarden.master.pool_lifecycle import Lifecycle
from poolwarden.master.pool_recycling import Recycler
from poolwarden.master.pool_reports import WorkerReports
from poolwarden.master.pool_request_watch import RequestWatch
from poolwarden.master.worker_process import WorkerProcess, WorkerState
from poolwarden.settings import PoolSettings, ServerSettings

log = logging.getLogger("poolwarden")

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
        """The pool's lifecycle policy: this pool performs what it decides."""
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
        self.last_failure: ch.StartupFailure | None = None
        self.last_failure_seq: int | None = None
        """The event of the last start-up failure, named in 503 startup_failed."""
        self.disabled_seq: int | None = None
        """The 5002 event that disabled the pool, named in its 503s."""
        self.requests_served_by_gone_workers = 0
        self.last_event: str | None = None
        """What `poolwarden pools` shows as the pool's latest news."""
        self.boot = self._make_boot(settings, server, routes)
        """The Boot message the next worker gets (before a debug arm)."""
        self.dispatcher = Dispatcher(self)
        self.lifecycle = Lifecycle(self)
        self.reports = WorkerReports(self)
        self.recycler = Recycler(self)
        self.request_watch = RequestWatch(self)
        self.debugging = StartupDebugging(self)
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
            websocket=settings.websocket_options(),
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
    def rapid_fail(self) -> RapidFailPolicy:
        return self.machine.config.rapid_fail

    @property
    def queue(self) -> deque[Waiting]:
        """Connections waiting for a worker."""
        return self.dispatcher.queue

    @property
    def dispatched(self) -> int:
        """Connections handed to a worker so far (`run` exits on a start-up
        failure only before the first)."""
        return self.dispatcher.dispatched

    def find_worker(self, pid: int) -> WorkerProcess | None:
        return next((worker for worker in self.workers if worker.pid == pid), None)

    # what an administrator, a reload and the server ask

    def start(self) -> None:
        """Start the pool: an always-running pool starts its workers now."""
        self.lifecycle.apply(self.machine.handle(policy.Start()))

    def resume(self) -> None:
        """`poolwarden pool start`: serve again after a stop, or after rapid-fail
        protection disabled the pool, or try again at once after start-ups
        failed (its failure window starts afresh)."""
        if self.state is PoolState.STARTED:
            return
        self.disabled_seq = None
        self.lifecycle.cancel_auto_restart()
        try:
            actions = self.machine.handle(policy.Resume())
        except policy.IllegalTransition:
            raise ValueError(f"pool {self.name!r} is shutting down") from None
        self.lifecycle.cancel_kill()
        self.last_event = "started by an administrator"
        log.info("pool %s: started by an administrator", self.name)
        self.events.emit(
            catalog.POOL_STARTED_BY_ADMINISTRATOR,
            f"pool {self.name!r} was started by an administrator",
            pool=self.name,
        )
        self.lifecycle.apply(actions)

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
        self.recycler.recycle_all(reason, event_id, kind)

    def drain(self, time_limit: float, reason: StopReason = StopReason.SHUTDOWN) -> None:
        """Stop taking work, let workers finish, kill them at the time limit;
        a shutdown or removal also reaps the orphans."""
        self.lifecycle.drain(time_limit, reason)

    def kill(self) -> None:
        """Stop at once: every worker gets SIGKILL."""
        self.lifecycle.kill()

    def reap_orphans(self, pid: int | None = None) -> list[int]:
        """End the orphans (all, or the one with `pid`); their pids."""
        return self.lifecycle.reap_orphans(pid)

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        """A connection routed to the pool: to a worker, the queue, or a 503."""
        self.dispatcher.dispatch(sock, message)

    def check_workers(self, now: float) -> None:
        """The periodic look at the pool: expired waits in the queue, then
        (while it is started) recycling and request time-outs."""
        self.dispatcher.expire_queue(now)
        if self.state is not PoolState.STARTED:
            return
        looked_at = self.recycler.check(now)
        if self.settings.request_timeout > 0:
            for worker in looked_at:
                self.request_watch.check(worker)

    def arm_debug(self, adapter: str | None, keep: bool, wrapper: tuple[str, ...] = ()) -> None:
        """`poolwarden debug startup`: the next worker waits for a debugger
        before it loads the app, or starts under `wrapper` (or both)."""
        self.debugging.arm(adapter, keep, wrapper)

    def disarm_debug(self) -> None:
        self.debugging.disarm()

    def debug_status(self) -> dict[str, object]:
        return self.debugging.status()

    def update_settings(self, settings: PoolSettings) -> None:
        """A reload changed the pool: new workers get the new settings, and
        the running ones are recycled with overlap."""
        self.settings = settings
        self.boot = self._make_boot(settings, self.server, self.routes)
        if self.state is PoolState.STARTED:
            self.recycle(
                "its configuration changed", catalog.RECYCLE_CONFIG_CHANGE, "config_change"
            )
        elif self.state is PoolState.STARTUP_FAILED:
            # The new settings may be the fix: try again now.
            self.last_event = "configuration changed"
            self.lifecycle.apply(self.machine.handle(policy.SettingsChanged()))

    def set_routes(self, routes: list[dict[str, object]] | None) -> None:
        """A reload changed the routing table: workers route by the new one."""
        self.routes = routes
        self.boot = self._make_boot(self.settings, self.server, routes)
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
            rapid_fail = self.rapid_fail
            reason = (
                f"rapid-fail protection: {rapid_fail.max_crashes} failures within "
                + (standing(rapid_fail.max_crashes, rapid_fail).rsplit(" within ", 1)[-1])
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
