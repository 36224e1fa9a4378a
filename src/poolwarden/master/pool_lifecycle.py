"""The pool's lifecycle driver: it performs what the pool's `PoolMachine`
decided, on real processes and timers.

```
 Pool, Dispatcher, WorkerReports, ──apply(actions)──▶ Lifecycle ──spawn, drain, kill──▶ WorkerProcess
 Recycler, StartupDebugging                             │   (its callbacks: WorkerReports,
   (each fed an event to the machine)                   │    RequestWatch, Pool.on_hand_back)
                                                        ├─ respawn, kill, auto-restart timers
                                                        │    ─▶ PoolMachine (RespawnDue, StopNow)
                                                        ├─ 5002, auto_shutdown_command and
                                                        │  orphan_action_command (run_bounded)
                                                        ├─ the queue's 503s ─▶ Dispatcher
                                                        └─ a start-up failure ─▶ on_startup_failure,
                                                           the end of a stop ─▶ on_stopped
```

A worker that ends unexpectedly is replaced; one that fails at start-up (or
is not Ready within the start-up time limit) is replaced after a back-off
(immediately, then 1 s doubling to 30 s, as systemd and PM2 do). When
rapid-fail protection trips, the pool writes 5002 with the last failure's
evidence and runs `auto_shutdown_command` (IIS's autoShutdownExe). The
Lifecycle owns the pool's timers; the workers, the failure that 503s name
and the event log are the `Pool`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.activation.pool_policy import PoolState, StopReason
from poolwarden.activation.rapid_fail import standing
from poolwarden.events import catalog
from poolwarden.master.commands import run_bounded
from poolwarden.master.worker_process import WorkerProcess, WorkerState

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")

Evidence = tuple[str, dict[str, object], int | None]
"""A failure that may disable the pool: its message, details and event number."""


class Lifecycle:
    """Performs one pool's `PoolMachine` actions; owns its timers."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._auto_restart: asyncio.TimerHandle | None = None
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None

    def apply(
        self,
        actions: list[policy.Action],
        *,
        worker: WorkerProcess | None = None,
        evidence: Evidence = ("", {}, None),
    ) -> None:
        """Perform what the machine decided, in order. `worker` is the one
        the event was about; `evidence` (message, details, event number) is
        the failure that may disable the pool."""
        pool = self.pool
        for action in actions:
            match action:
                case policy.Spawn(count=count):
                    for _ in range(count):
                        self._spawn()
                case policy.ScheduleRespawn(delay=delay):
                    # An earlier action's callback (a start-up failure that
                    # ends a `run`) may have stopped the pool meanwhile.
                    if pool.machine.respawn_pending and self._respawn_timer is None:
                        self._respawn_timer = pool.loop.call_later(delay, self._respawn)
                case policy.CancelRespawn():
                    if self._respawn_timer:
                        self._respawn_timer.cancel()
                        self._respawn_timer = None
                case policy.Retire(id=id) | policy.Unretire(id=id):
                    target = pool.find_worker(id)
                    if target is not None:
                        target.retiring = isinstance(action, policy.Retire)
                case policy.Drain(id=id, reason=reason):
                    target = pool.find_worker(id)
                    if target is not None:
                        target.drain(reason)
                case policy.Kill(id=id, reason=reason):
                    target = pool.find_worker(id)
                    if target is not None:
                        target.kill(reason)
                case policy.RefuseQueue(reason=reason):
                    pool.dispatcher.refuse_queue(reason)
                case policy.Disable(count=count):
                    self._disable(count, *evidence)
                case policy.ScheduleAutoRestart(delay=delay):
                    self._auto_restart = pool.loop.call_later(delay, self._restart_by_itself)
                case policy.RunAutoShutdownCommand():
                    pool.loop.create_task(self._run_auto_shutdown_command(pool.disabled_seq))
                case policy.RunOrphanAction(id=id):
                    orphan = next((w for w in pool.orphans if w.pid == id), None)
                    if orphan is not None:
                        pool.loop.create_task(self._run_orphan_action(orphan, evidence[2]))
                case policy.ReapOrphans():
                    self.reap_orphans()
                case policy.ScheduleKill(delay=delay):
                    if self._kill_timer:
                        self._kill_timer.cancel()
                    self._kill_timer = pool.loop.call_later(delay, self.kill)
                case policy.Stopped():
                    self._stopped()
                case policy.ReportStartupFailure(kind=kind):
                    if kind == "spawn" and pool.last_failure is not None:
                        pool.on_startup_failure(pool, pool.last_failure)
                    elif kind == "startup_timeout" and worker is not None:
                        self._timed_out(worker)
                    elif kind == "died_before_ready" and worker is not None:
                        self._died_before_ready(worker)
                case policy.RecycleAborted(kept=kept) if worker is not None:
                    self._recycle_aborted(worker, kept)
                case _:
                    pass  # FailureCounted, Enqueue, Refuse, RefuseExpired: read by the caller

    # stopping

    def drain(self, time_limit: float, reason: StopReason) -> None:
        """Stop taking work, let workers finish, kill them at the time limit."""
        self.apply(self.pool.machine.handle(policy.Stop(reason, time_limit)))

    def kill(self) -> None:
        """Stop at once: every worker gets SIGKILL."""
        pool = self.pool
        actions = pool.machine.handle(policy.StopNow())
        for action in actions:
            worker = pool.find_worker(action.id) if isinstance(action, policy.Kill) else None
            # One that reported a start-up failure is on its way out anyway.
            if worker and worker.state is not WorkerState.EXITED and worker.startup_failure is None:
                log.warning("pool %s: killing worker %d", pool.name, worker.pid)
        self.apply(actions)

    def cancel_kill(self) -> None:
        """Started again while stopping: the stop's time limit no longer applies."""
        if self._kill_timer:
            self._kill_timer.cancel()
            self._kill_timer = None

    def _stopped(self) -> None:
        if self._kill_timer:
            self._kill_timer.cancel()
        self.pool.on_stopped(self.pool)

    # starting workers

    def _spawn(self) -> None:
        pool = self.pool
        if not pool.machine.may_spawn:
            return  # a failure reported by an earlier spawn stopped the pool
        boot, settings = pool.boot, pool.settings
        armed = pool.debugging.take()
        if armed is not None:
            boot, settings = armed.launch(boot, settings)
        reports = pool.reports
        worker = WorkerProcess(
            pool.loop,
            settings,
            boot=boot,
            state_dir=pool.server.state_dir,
            access_log_fd=pool.access_log_fd,
            on_ready=reports.ready,
            on_startup_failed=reports.startup_failed,
            on_exit=reports.exited,
            on_hand_back=pool.on_hand_back,
            on_ended=reports.ended,
            on_thread_failed=reports.thread_failed,
            on_orphaned=reports.orphaned,
            on_loop_lag=pool.request_watch.loop_lagged,
            on_loop_stall=pool.dispatcher.loop_stalled,
            on_debugged=reports.debugged,
            on_recycle_request=reports.recycle_requested,
            on_redispatch=pool.dispatch,
        )
        if armed is not None and armed.wrapper and not armed.adapter:
            # A worker under a debugger's wrapper runs slowly or stops at
            # breakpoints: no start-up limit, no pings, failures not counted.
            worker.debugging = "wrapper"
            worker.debug_since = time.time()
        try:
            worker.spawn()
        except OSError as error:
            log.error("pool %s: cannot start a worker: %s", pool.name, error)
            self._spawn_failed(error)
            return
        pool.workers.append(worker)
        pool.machine.handle(policy.WorkerSpawned(worker.pid, debugged=bool(worker.debugging)))
        log.debug("pool %s: started worker %d", pool.name, worker.pid)
        pool.events.emit(
            catalog.WORKER_STARTED,
            f"worker {worker.pid} of pool {pool.name!r} started",
            pool=pool.name,
            pid=worker.pid,
            details={"python": pool.settings.python, "app": pool.settings.app},
        )

    def _spawn_failed(self, error: OSError) -> None:
        """No process could be started (a wrong interpreter or working
        directory, no memory, no pids): a start-up failure, with the same
        back-off, rather than a retry at once and forever."""
        pool = self.pool
        actions = pool.machine.handle(policy.SpawnFailed(time.monotonic(), pool.dispatcher.queued))
        seq = pool.events.emit(
            catalog.WORKER_CREATE_FAILED,
            f"pool {pool.name!r}: a worker process could not be created: {error}",
            pool=pool.name,
            details={"python": pool.settings.python, "error": str(error)},
            fingerprint=f"5022:{type(error).__name__}:{pool.settings.python}",
        )
        message = f"cannot start a worker process: {error}"
        if not any(isinstance(action, policy.Disable) for action in actions):
            pool.last_failure = ch.StartupFailure(
                phase="spawn",
                app=pool.settings.app,
                exception_type=type(error).__name__,
                message=message,
            )
        self.apply(actions, evidence=(message, {}, seq))

    def _respawn(self) -> None:
        self._respawn_timer = None
        self.apply(self.pool.machine.handle(policy.RespawnDue(self.pool.dispatcher.queued)))

    # start-up failures, as the server and the 503s learn of them

    def _timed_out(self, worker: WorkerProcess) -> None:
        pool = self.pool
        failure = ch.StartupFailure(
            phase="startup_timeout",
            app=pool.settings.app,
            exception_type="StartupTimeout",
            message=f"the worker was not ready within the start-up time limit "
            f"({pool.settings.startup_time_limit:g}s)",
        )
        pool.last_failure = failure
        pool.on_startup_failure(pool, failure)

    def _died_before_ready(self, worker: WorkerProcess) -> None:
        """A worker that ended before Ready without saying why is a start-up
        failure all the same: a crash in a C extension at import, `os._exit`,
        the OOM killer. Without this, fail-fast would retry it forever."""
        pool = self.pool
        message = f"the worker ended before it was ready ({worker.exit_text})"
        if worker.tail:
            message += f"; its last output: {worker.tail[-1]}"
        if os.path.exists(worker.crash_file):
            message += f"; its crash dump: {worker.crash_file}"
        failure = ch.StartupFailure(
            phase="boot", app=pool.settings.app, exception_type="WorkerDied", message=message
        )
        pool.last_failure = failure
        pool.on_startup_failure(pool, failure)

    def _recycle_aborted(self, failed: WorkerProcess, kept: int) -> None:
        """A replacement failed to start: the old workers keep serving."""
        pool = self.pool
        reason = failed.startup_failure.headline() if failed.startup_failure else failed.exit_text
        pool.last_event = f"recycle aborted: a replacement failed to start ({reason})"
        pool.events.emit(
            catalog.RECYCLE_FAILED,
            f"pool {pool.name!r}: recycle aborted, {kept} old worker(s) keep serving: {reason}",
            pool=pool.name,
            pid=failed.pid,
            details={"replacement_pid": failed.pid, "kept": kept, "reason": reason},
        )
        log.error(
            "pool %s: recycle aborted, %d old worker(s) keep serving: %s", pool.name, kept, reason
        )

    # rapid-fail protection

    def _disable(
        self, count: int, last_message: str, last_details: dict[str, object], last_seq: int | None
    ) -> None:
        """Rapid-fail protection trips: no more workers; every request to the
        pool gets 503 pool_disabled until an administrator starts it again."""
        pool = self.pool
        rapid_fail = pool.rapid_fail
        where = standing(count, rapid_fail)
        log.error(
            "pool %s: disabled by rapid-fail protection (%s); start it with "
            "`poolwarden pool start %s` once fixed",
            pool.name,
            where,
            pool.name,
        )
        pool.disabled_seq = pool.events.emit(
            catalog.POOL_DISABLED_RAPID_FAIL,
            f"pool {pool.name!r} disabled by rapid-fail protection after {count} failures "
            f"within {standing(count, rapid_fail).rsplit(' within ', 1)[-1]}; last: {last_message}",
            pool=pool.name,
            details={
                "failures": count,
                "max_crashes": rapid_fail.max_crashes,
                "interval": rapid_fail.interval,
                "last_failure_seq": last_seq,
                "last_failure": last_message,
                "last_failure_details": last_details,
            },
            fingerprint=f"5002 {pool.name}",
        )
        pool.last_event = f"{catalog.POOL_DISABLED_RAPID_FAIL} #{pool.disabled_seq}"

    async def _run_auto_shutdown_command(self, disabled_seq: int | None) -> None:
        """IIS's autoShutdownExe: page someone, take the host out of a
        balancer. Its outcome and output are an event of their own."""
        pool = self.pool
        settings = pool.settings
        result = await run_bounded(
            list(settings.auto_shutdown_command),
            {
                "POOLWARDEN_POOL": pool.name,
                "POOLWARDEN_EVENT_SEQ": str(disabled_seq or ""),
                "POOLWARDEN_STATE_DIR": os.path.abspath(pool.server.state_dir),
            },
            settings.auto_shutdown_time_limit,
        )
        event_id = (
            catalog.AUTO_SHUTDOWN_COMMAND_RAN if result.ok else catalog.AUTO_SHUTDOWN_COMMAND_FAILED
        )
        (log.info if result.ok else log.warning)(
            "pool %s: auto_shutdown_command %s", pool.name, result.summary()
        )
        pool.events.emit(
            event_id,
            f"pool {pool.name!r}: auto_shutdown_command {result.summary()}",
            pool=pool.name,
            details={
                **result.details(),
                "disabled_seq": disabled_seq,
            },
        )

    def cancel_auto_restart(self) -> None:
        if self._auto_restart is not None:
            self._auto_restart.cancel()
            self._auto_restart = None

    def _restart_by_itself(self) -> None:
        """`auto_restart_after`: an unattended host tries the pool again."""
        self._auto_restart = None
        if self.pool.state is PoolState.DISABLED:
            log.info("pool %s: starting again after auto_restart_after", self.pool.name)
            self.pool.resume()

    # orphans

    async def _run_orphan_action(self, worker: WorkerProcess, seq: int | None) -> None:
        pool = self.pool
        result = await run_bounded(
            list(pool.settings.orphan_action_command),
            {
                "POOLWARDEN_PID": str(worker.python_pid),
                "POOLWARDEN_POOL": pool.name,
                "POOLWARDEN_EVENT_SEQ": str(seq or ""),
                "POOLWARDEN_STATE_DIR": os.path.abspath(pool.server.state_dir),
            },
            pool.settings.auto_shutdown_time_limit,
        )
        if result.ok:
            log.info("pool %s: orphan action for worker %d ran", pool.name, worker.pid)
            return
        pool.events.emit(
            catalog.ORPHAN_ACTION_FAILED,
            f"pool {pool.name!r}: orphan_action_command for worker {worker.pid} {result.summary()}",
            pool=pool.name,
            pid=worker.pid,
            details={
                **result.details(),
                "orphaned_seq": seq,
            },
        )

    def reap_orphans(self, pid: int | None = None) -> list[int]:
        """End the orphans (all, or the one with `pid`); their pids."""
        reaped = []
        for worker in list(self.pool.orphans):
            if pid is None or worker.pid == pid:
                worker.reap()
                reaped.append(worker.pid)
        return reaped
