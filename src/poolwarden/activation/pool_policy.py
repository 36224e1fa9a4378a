"""A pool's lifecycle as a pure state machine: events in, actions out.

```
 Pool (driver, master/pool.py and parts)       PoolMachine (this module)
   start/stop/resume/recycle, a request, ─event─▶  state, stop reason, failure window,
   a worker spawned / ready / debugged /           back-off count, and its WorkerRoster
   orphaned / ended / exited                       (worker_roster.py): one WorkerView
   ◀─actions─ Spawn, Drain, Kill, Retire,          per worker it knows, the orphans
              Refuse, RefuseQueue, Disable, ...    kept for inspection, the recycle
```

The machine decides; the driver performs. It reads no clock (a failure
carries its `now`), spawns, signals, answers and logs nothing, so every rule
below is tested without processes (tests/test_pool_policy.py).

States (`PoolState`) and the events that move between them:

```
 started ──Stop──▶ stopping ──last worker exited──▶ stopped ──Resume──▶ started
   │  ▲                                                          (503 pool_stopped
   ▼  │ WorkerReady, SettingsChanged                              or shutting_down)
 startup_failed            any state ──max_crashes failures within interval──▶ disabled
                           disabled ──Resume (administrator, auto_restart_after)──▶ started
```

The rules, in the order the driver meets them:

- **Spawning.** An always-running pool keeps `processes` workers; an
  on-demand pool starts one when a request waits and none is starting, and
  grows (a web garden) while every worker is busy. After a worker's end the
  missing ones are started again after `restart_delay(consecutive failures)`.
  A stopping, stopped or disabled pool starts nothing; neither does a
  recycle without overlap while its old worker is still draining.
- **Failures.** A worker's end that the event classification counts as a
  failure, or a process that cannot be created, enters the rapid-fail window;
  when the window holds `max_crashes` the pool is disabled: its queue gets
  503 pool_disabled, its workers are drained, and nothing starts until a
  Resume (which clears the window). Ends poolwarden asked for (recycle, idle,
  shutdown, administrator) do not count: the classification says so. When
  the pool is disabled, `auto_shutdown_command` runs (IIS's autoShutdownExe).
- **Debugged workers.** A worker a debugger holds (`poolwarden debug
  startup` or `attach`) may stop anywhere for as long as a person likes: its
  end never counts toward rapid-fail protection nor raises the back-off, and
  while one is starting, queued requests do not expire (they wait up to the
  queue bound). Arming startup debugging on an always-running pool replaces
  its oldest Ready worker (or starts one if none serves).
- **Orphans.** A hung or failed worker kept stopped for inspection
  (`orphan_worker`) leaves the pool's workers at once: it is no capacity,
  its replacement is started (with the back-off), and its failure counts
  once, when it is orphaned; its end when reaped is no news. Orphans are
  reaped when the pool is started again or shut down (not when an
  administrator stops it: that is when one inspects them).
- **Recycling.** Old workers are marked retiring; with overlap their
  replacements start first and each old worker is drained once a
  replacement is Ready; without overlap one old worker drains and its
  replacement starts when it has exited. A replacement that fails before
  Ready aborts the recycle: the old workers keep serving, the other
  replacements are killed.
- **Requests.** A request that no Ready worker can take is queued, or
  refused with a reason code: pool_disabled, startup_failed, startup_timeout,
  pool_stopped, shutting_down, queue_full. While start-ups fail, a request
  waits for the next attempt (an on-demand pool makes it for the request,
  after the back-off) and gets the failure's 503 if that attempt fails.

An event that makes no sense in the current state raises `IllegalTransition`
naming both, and (unless said otherwise) changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from poolwarden.activation.rapid_fail import (
    FailureWindow,
    RapidFailPolicy,
    record_failure,
    restart_delay,
)

# The roster's vocabulary is the machine's: importable from here too.
from poolwarden.activation.worker_roster import Drain as Drain
from poolwarden.activation.worker_roster import EndReason as EndReason
from poolwarden.activation.worker_roster import Kill as Kill
from poolwarden.activation.worker_roster import ReapOrphans as ReapOrphans
from poolwarden.activation.worker_roster import RecycleAborted as RecycleAborted
from poolwarden.activation.worker_roster import Retire as Retire
from poolwarden.activation.worker_roster import RunOrphanAction as RunOrphanAction
from poolwarden.activation.worker_roster import Unretire as Unretire
from poolwarden.activation.worker_roster import WorkerPhase as WorkerPhase
from poolwarden.activation.worker_roster import WorkerRoster
from poolwarden.activation.worker_roster import WorkerView as WorkerView


class PoolState(enum.Enum):
    STARTED = "started"
    STARTUP_FAILED = "startup_failed"
    DISABLED = "disabled"
    """Rapid-fail protection stopped it: 503 pool_disabled until started again."""
    STOPPING = "stopping"
    STOPPED = "stopped"


class StopReason(enum.Enum):
    ADMINISTRATOR = "administrator"
    """`poolwarden pool stop`: requests get 503 pool_stopped."""
    SHUTDOWN = "shutdown"
    """The server is stopping: requests get 503 shutting_down."""
    REMOVED = "removed"
    """A reload removed the pool."""


RefusalReason = Literal[
    "pool_stopped",
    "pool_disabled",
    "startup_failed",
    "startup_timeout",
    "queue_full",
    "queue_timeout",
    "shutting_down",
]
"""The reason code of a 503 the master answers itself."""

ENDED_BY: dict[StopReason | None, EndReason] = {
    StopReason.ADMINISTRATOR: "administrator",
    StopReason.SHUTDOWN: "shutdown",
    StopReason.REMOVED: "drain",
    None: "shutdown",
}
"""What a worker's end event says poolwarden ended it for, by why the pool stops."""


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """The settings the policy reads (from `PoolSettings`, IIS's defaults)."""

    processes: int = 1
    always_running: bool = True
    overlapping: bool = True
    auto_start: bool = True
    queue_length: int = 1000
    auto_restart_after: float = 0.0
    rapid_fail: RapidFailPolicy = field(default_factory=RapidFailPolicy)
    auto_shutdown_command: bool = False
    """A command is configured to run when rapid-fail protection disables the pool."""
    orphan_action_command: bool = False
    """A command is configured to run on each orphan."""


# events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """The server starts the pool (at start-up or when a reload adds it)."""


@dataclass(frozen=True, slots=True)
class Resume:
    """`poolwarden pool start`, or `auto_restart_after` ran out."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Drain the workers; kill what is left after `time_limit` seconds."""

    reason: StopReason
    time_limit: float


@dataclass(frozen=True, slots=True)
class StopNow:
    """Kill every worker at once (the kill timer, or a forced shutdown)."""


@dataclass(frozen=True, slots=True)
class RecycleRequested:
    """Replace workers: `ids` (a limit one reached), or every serving one (None)."""

    ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class WorkerSignalled:
    """A worker got SIGTERM from outside (`kill PID`, `docker stop`, systemd)
    and said so: it drains now, and is replaced unless the pool is stopping."""

    id: int


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """A reload changed the pool's settings (a started pool is recycled by the driver)."""


@dataclass(frozen=True, slots=True)
class DebugArmed:
    """`poolwarden debug startup`: the pool's next worker starts under a debugger."""


@dataclass(frozen=True, slots=True)
class WorkerSpawned:
    id: int
    debugged: bool = False
    """It starts under a debugger (startup debugging was armed)."""


@dataclass(frozen=True, slots=True)
class WorkerDebugged:
    """A debugger took hold of a running worker (`poolwarden debug attach`, or
    the startup debugger announced itself)."""

    id: int


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """No process could be created: a start-up failure, with the same back-off."""

    now: float
    queued: int = 0


@dataclass(frozen=True, slots=True)
class WorkerReady:
    id: int


@dataclass(frozen=True, slots=True)
class StartupFailureReported:
    """The driver learnt why start-ups fail (what 503s of the queue will say)."""

    timed_out: bool


@dataclass(frozen=True, slots=True)
class WorkerEnded:
    """A worker was reaped and its end classified (before its connections are answered)."""

    id: int
    counts_as_failure: bool
    now: float


@dataclass(frozen=True, slots=True)
class WorkerOrphaned:
    """A hung or failed worker is kept stopped for inspection (`orphan_worker`):
    out of service now, though its process lives until it is reaped."""

    id: int
    now: float
    queued: int = 0


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """A reaped worker is gone: what follows (respawn, recycle, stop) is decided now."""

    id: int
    reported_startup_failure: bool = False
    """It sent `StartupFailed` itself."""
    timed_out: bool = False
    """Killed for not being Ready within the start-up time limit."""
    killed_by_master: bool = False
    queued: int = 0


@dataclass(frozen=True, slots=True)
class RequestArrived:
    """A request no Ready worker could take at once."""

    queued: int
    all_busy: bool = False
    """A Ready worker exists but every one is at capacity: it waits in the queue."""
    now: float = 0.0
    """When it arrived (the clock of `WorkerEnded.now`): an on-demand pool whose
    start-ups fail measures its back-off from the last failure."""


@dataclass(frozen=True, slots=True)
class AllBusy:
    """Every serving worker has as many requests in flight as threads."""


@dataclass(frozen=True, slots=True)
class RespawnDue:
    """The back-off after a worker's end ran out."""

    queued: int = 0


@dataclass(frozen=True, slots=True)
class QueueWaitExpired:
    """A queued request waited longer than a worker may take to start."""


@dataclass(frozen=True, slots=True)
class IdleTimeout:
    """An on-demand pool's worker served nothing for `idle_timeout`."""

    id: int


Event = (
    Start
    | Resume
    | Stop
    | StopNow
    | RecycleRequested
    | WorkerSignalled
    | SettingsChanged
    | DebugArmed
    | WorkerSpawned
    | WorkerDebugged
    | SpawnFailed
    | WorkerReady
    | StartupFailureReported
    | WorkerOrphaned
    | WorkerEnded
    | WorkerExited
    | RequestArrived
    | AllBusy
    | RespawnDue
    | QueueWaitExpired
    | IdleTimeout
)


# actions --------------------------------------------------------------------
# (and those about one worker or the orphans, from worker_roster: Retire,
# Unretire, Drain, Kill, RecycleAborted, RunOrphanAction, ReapOrphans)


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start `count` workers, one at a time: stop early if the pool stops meanwhile
    (a failure reported by an earlier one can disable it)."""

    count: int


@dataclass(frozen=True, slots=True)
class ScheduleRespawn:
    delay: float


@dataclass(frozen=True, slots=True)
class CancelRespawn:
    pass


@dataclass(frozen=True, slots=True)
class Enqueue:
    """The request waits in the pool's queue."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the request 503 with this reason."""

    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class RefuseQueue:
    """Answer every queued request 503 with this reason."""

    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class RefuseExpired:
    """Answer 503 to the queued requests that waited too long."""

    reason: RefusalReason


@dataclass(frozen=True, slots=True)
class FailureCounted:
    """The end counts: it is failure `count` in the window (for its event)."""

    count: int


@dataclass(frozen=True, slots=True)
class Disable:
    """Rapid-fail protection trips after `count` failures: write 5002."""

    count: int


@dataclass(frozen=True, slots=True)
class ScheduleAutoRestart:
    delay: float


@dataclass(frozen=True, slots=True)
class RunAutoShutdownCommand:
    """Run `auto_shutdown_command` (after `Disable`: its event is named)."""


@dataclass(frozen=True, slots=True)
class ScheduleKill:
    """Kill what is still running after the stop's time limit."""

    delay: float


@dataclass(frozen=True, slots=True)
class Stopped:
    """The last worker is gone: the pool is stopped."""


@dataclass(frozen=True, slots=True)
class ReportStartupFailure:
    """Tell the server (and the 503s) that a worker could not start: it was not
    Ready in time, died before Ready without saying why, or was not created."""

    kind: Literal["startup_timeout", "died_before_ready", "spawn"]


Action = (
    Spawn
    | ScheduleRespawn
    | CancelRespawn
    | Retire
    | Unretire
    | Drain
    | Kill
    | Enqueue
    | Refuse
    | RefuseQueue
    | RefuseExpired
    | FailureCounted
    | Disable
    | ScheduleAutoRestart
    | RunAutoShutdownCommand
    | RunOrphanAction
    | ReapOrphans
    | ScheduleKill
    | Stopped
    | ReportStartupFailure
    | RecycleAborted
)


class IllegalTransition(ValueError):
    """An event the pool's state does not allow (e.g. a recycle of a stopped pool)."""

    def __init__(self, state: PoolState, event: Event, why: str) -> None:
        super().__init__(f"{type(event).__name__} in state {state.value}: {why}")
        self.state = state
        self.event = event


@dataclass(slots=True)
class PoolMachine:
    """One pool's lifecycle; `handle` is the only way it changes."""

    config: PoolConfig = field(default_factory=PoolConfig)
    state: PoolState = PoolState.STARTED
    stop_reason: StopReason | None = None
    failures: FailureWindow = field(default_factory=FailureWindow)
    """Rapid-fail protection's window."""
    consecutive_failures: int = 0
    """Start-ups that failed in a row: the back-off before the next one."""
    respawn_pending: bool = False
    last_failure_at: float | None = None
    """When the last counted failure ended (`WorkerEnded.now`)."""
    last_failure_timed_out: bool = False
    """The last start-up failure was the start-up time limit (503 startup_timeout)."""
    roster: WorkerRoster = field(default_factory=WorkerRoster)
    """One view per worker it knows, the orphans, the recycle (`worker_roster`)."""

    # what the driver may ask

    @property
    def workers(self) -> dict[int, WorkerView]:
        """In the order they were started: the oldest retiring one drains first."""
        return self.roster.views

    @property
    def orphans(self) -> set[int]:
        """Workers kept stopped for inspection, until they have exited."""
        return self.roster.orphans

    @property
    def recycling(self) -> bool:
        """A recycle is under way (no other starts: `recycling.decide`)."""
        return self.roster.recycling

    @property
    def may_spawn(self) -> bool:
        return self.state not in (PoolState.STOPPING, PoolState.STOPPED, PoolState.DISABLED)

    @property
    def serving(self) -> list[int]:
        """Workers that count as capacity: starting or Ready, not being replaced."""
        return self.roster.serving

    @property
    def may_grow(self) -> bool:
        """Room for one more worker and none starting (the driver then looks
        whether every worker is busy: `AllBusy`)."""
        return len(self.serving) < self.config.processes and not self.roster.starting

    @property
    def stopping_first(self) -> bool:
        """A recycle without overlap waits for an old worker to exit before it
        starts the replacement; nothing else starts meanwhile."""
        return not self.config.overlapping and self.roster.retiree_draining

    def failure_reason(self) -> RefusalReason:
        return "startup_timeout" if self.last_failure_timed_out else "startup_failed"

    def stopped_reason(self) -> RefusalReason:
        return "pool_stopped" if self.stop_reason is StopReason.ADMINISTRATOR else "shutting_down"

    # the transitions

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; the actions are for the driver to perform in order."""
        match event:
            case Start():
                return self._start()
            case Resume():
                return self._resume(event)
            case Stop():
                return self._stop(event)
            case StopNow():
                return self._stop_now()
            case RecycleRequested():
                return self._recycle(event)
            case WorkerSignalled(id=id):
                return self._signalled(id)
            case SettingsChanged():
                if self.state is not PoolState.STARTUP_FAILED:
                    return []
                # The new settings may be the fix: try again now.
                self.consecutive_failures = 0
                self.state = PoolState.STARTED
                return self._start_workers()
            case DebugArmed():
                return self._debug_armed(event)
            case WorkerSpawned(id=id, debugged=debugged):
                self.roster.spawned(id, debugged)
                return []
            case WorkerDebugged(id=id):
                self.roster.debugged(id)
                return []
            case SpawnFailed():
                return self._spawn_failed(event)
            case WorkerReady(id=id):
                return self._ready(id)
            case StartupFailureReported(timed_out=timed_out):
                self.last_failure_timed_out = timed_out
                return []
            case WorkerOrphaned():
                return self._orphaned(event)
            case WorkerEnded():
                return self._ended(event)
            case WorkerExited():
                return self._exited(event)
            case RequestArrived():
                return self._request(event)
            case AllBusy():
                return self._spawn(1) if self.may_grow else []
            case RespawnDue(queued=queued):
                self.respawn_pending = False
                return self._spawn(self._wanted(queued) - len(self.serving))
            case QueueWaitExpired():
                if self.roster.start_debugged:
                    return []  # a debugger holds the start: requests wait up to the queue bound
                if self.roster.any_ready:
                    return [RefuseExpired("queue_timeout")]
                if self.consecutive_failures:
                    return [RefuseExpired("startup_failed")]
                return [RefuseExpired("startup_timeout")]
            case IdleTimeout(id=id):
                return [*self.roster.drain(id, "idle")]
        raise TypeError(f"not a pool event: {event!r}")

    def _start(self) -> list[Action]:
        if not self.config.auto_start and self.stop_reason is None and not self.workers:
            # Configured not to start with the server: stopped until asked.
            self.state = PoolState.STOPPED
            self.stop_reason = StopReason.ADMINISTRATOR
            return []
        return self._start_workers()

    def _start_workers(self) -> list[Action]:
        if self.config.always_running:
            return self._spawn(self.config.processes - len(self.serving))
        return []

    def _resume(self, event: Resume) -> list[Action]:
        if self.state is PoolState.STARTED:
            return []
        failing = self.state is PoolState.STARTUP_FAILED
        if not failing and self.stop_reason in (StopReason.SHUTDOWN, StopReason.REMOVED):
            raise IllegalTransition(self.state, event, "the pool is shutting down")
        self.failures = FailureWindow()
        self.consecutive_failures = 0
        self.state = PoolState.STARTED
        if failing:
            # An administrator says the cause is fixed: try again now, with
            # no back-off and a fresh rapid-fail window.
            self.last_failure_at = None
            return [*self._cancel_respawn(), *self._start_workers()]
        self.stop_reason = None
        # Started again: what was kept for inspection goes.
        return [*self.roster.reap_orphans(), *self._start_workers()]

    def _stop(self, event: Stop) -> list[Action]:
        if self.state is PoolState.STOPPED:
            return []
        if self.state is PoolState.STOPPING and self.stop_reason is event.reason:
            return []
        self.state = PoolState.STOPPING
        self.stop_reason = event.reason
        self.roster.recycling = False
        # An administrator's stop keeps the orphans: that is when one inspects them.
        reap = self.roster.reap_orphans() if event.reason is not StopReason.ADMINISTRATOR else []
        actions: list[Action] = [
            *reap,
            *self._cancel_respawn(),
            RefuseQueue(self.stopped_reason()),
            *self.roster.drain_all(ENDED_BY[event.reason]),
        ]
        if not self.workers:
            return [*actions, *self._stopped()]
        return [*actions, ScheduleKill(event.time_limit)]

    def _stop_now(self) -> list[Action]:
        if self.state is not PoolState.STOPPED:
            self.state = PoolState.STOPPING
        if self.stop_reason is None:
            self.stop_reason = StopReason.SHUTDOWN
        self.roster.recycling = False
        actions: list[Action] = [
            *self._cancel_respawn(),
            RefuseQueue(self.stopped_reason()),
            *self.roster.kill_all(ENDED_BY[self.stop_reason]),
        ]
        if not self.workers:
            actions += self._stopped()
        return actions

    def _stopped(self) -> list[Action]:
        if self.state is not PoolState.STOPPING:
            return []  # started again while its last workers were draining
        self.state = PoolState.STOPPED
        return [Stopped()]

    def _recycle(self, event: RecycleRequested) -> list[Action]:
        if event.ids is None:
            if self.state is not PoolState.STARTED:
                raise IllegalTransition(self.state, event, "only a started pool is recycled")
            old = self.serving
        else:
            old = self.roster.replaceable(event.ids)
        if not old:
            return []
        actions: list[Action] = [*self.roster.recycle(old)]
        if not self.config.overlapping:
            # Stop first, then start: one old worker drains, and its
            # replacement starts when it has exited.
            return [*actions, *self.roster.drain(old[0], "recycle")]
        return [*actions, *self._spawn(len(old))]

    def _signalled(self, id: int) -> list[Action]:
        """Out of service at once (it was asked to go, and goes whatever the
        pool says); a started pool replaces it as a recycle does, overlapped
        or not, and its end is planned: no failure."""
        view = self.workers.get(id)
        if view is None or view.phase not in (WorkerPhase.STARTING, WorkerPhase.READY):
            return []  # already draining (a stop, a recycle) or gone
        actions: list[Action] = []
        if self.state is PoolState.STARTED and not view.retiring:
            actions += self.roster.recycle([id])
            if self.config.overlapping:
                actions += self._spawn(1)
        return [*actions, *self.roster.drain(id, "signal")]

    def _debug_armed(self, event: DebugArmed) -> list[Action]:
        """An always-running pool gets its debugged worker now: it replaces
        the oldest Ready worker (a one-worker recycle), or starts if none
        serves or starts; an on-demand pool's comes with the next start."""
        if self.state is PoolState.DISABLED:
            raise IllegalTransition(
                self.state, event, "rapid-fail protection disabled it; start it with the debugger"
            )
        if not self.config.always_running or self.state is not PoolState.STARTED:
            return []
        ready = self.roster.ready_serving()
        if ready and not self.recycling:
            return self._recycle(RecycleRequested((ready[0],)))
        if self.roster.any_starting:
            return []  # the armed start goes to the next worker started
        return self._spawn(min(1, self.config.processes - len(self.serving)))

    def _ready(self, id: int) -> list[Action]:
        view = self.roster.ready(id)
        self.consecutive_failures = 0
        if self.state is PoolState.STARTUP_FAILED:
            self.state = PoolState.STARTED
        if view is not None and view.retiring:
            return []
        return [*self.roster.replacement_ready()]

    def _spawn_failed(self, event: SpawnFailed) -> list[Action]:
        self.consecutive_failures += 1
        actions = self._count_failure(event.now)
        if self.state is PoolState.DISABLED:
            return actions
        self.last_failure_timed_out = False
        if not self.roster.any_ready:
            self.state = PoolState.STARTUP_FAILED
            actions.append(RefuseQueue("startup_failed"))
        actions.append(ReportStartupFailure("spawn"))
        return actions + self._schedule_respawn(event.queued)

    def _ended(self, event: WorkerEnded) -> list[Action]:
        if event.id in self.orphans:
            return []  # counted when it was orphaned: its end is no news
        view = self.roster.ended(event.id)
        if not event.counts_as_failure or (view is not None and view.debugged):
            return []  # planned, or a debugger held it: not the app's failure
        return self._count_failure(event.now)

    def _orphaned(self, event: WorkerOrphaned) -> list[Action]:
        """Out of service at once (no capacity, not drained, not killed), its
        failure counted now and only now, and replaced."""
        view = self.roster.orphan(event.id)
        if view is None:
            return []  # it has already ended: its end is handled as any other
        run_action = self.config.orphan_action_command
        actions: list[Action] = [RunOrphanAction(event.id)] if run_action else []
        if not view.debugged:
            actions += self._count_failure(event.now)
        if self.state is PoolState.STOPPING and not self.workers:
            return actions + self._stopped()
        if self.state not in (PoolState.STARTED, PoolState.STARTUP_FAILED):
            return actions
        if not view.ever_ready and not view.debugged:
            self.consecutive_failures += 1
        return actions + self._schedule_respawn(event.queued)

    def _count_failure(self, now: float) -> list[Action]:
        """One more failure in the rapid-fail window; a full window disables
        the pool (once: a failure while disabled is counted, nothing more).
        A pool that is stopping is not disabled: its stop goes on to the end,
        rather than waiting for the kill timer that a disable would leave."""
        self.last_failure_at = now  # an on-demand pool's back-off runs from here
        verdict = record_failure(self.failures, self.config.rapid_fail, now)
        self.failures = verdict.window
        actions: list[Action] = [FailureCounted(verdict.count)]
        if verdict.disable and self.state in (PoolState.STARTED, PoolState.STARTUP_FAILED):
            actions += self._disable(verdict.count)
        return actions

    def _disable(self, count: int) -> list[Action]:
        """Rapid-fail protection trips: no more workers; every request gets
        503 pool_disabled until an administrator starts the pool again."""
        self.state = PoolState.DISABLED
        actions: list[Action] = [Disable(count), *self._cancel_respawn()]
        if self.config.auto_restart_after > 0:
            actions.append(ScheduleAutoRestart(self.config.auto_restart_after))
        if self.config.auto_shutdown_command:
            actions.append(RunAutoShutdownCommand())
        return [*actions, RefuseQueue("pool_disabled"), *self.roster.drain_all("drain")]

    def _exited(self, event: WorkerExited) -> list[Action]:
        if self.roster.forget_orphan(event.id):
            return []  # out of service since it was orphaned
        view = self.roster.exited(event.id)
        if self.state is PoolState.DISABLED:
            return []  # rapid-fail protection: nothing more is started
        stopping = self.state in (PoolState.STOPPING, PoolState.STOPPED)
        actions: list[Action] = []
        if not event.reported_startup_failure and event.timed_out:
            self.last_failure_timed_out = True
            actions.append(ReportStartupFailure("startup_timeout"))
        if stopping:
            return actions + (self._stopped() if not self.workers else [])
        if view.retiring:
            if not self.config.overlapping and self.state is PoolState.STARTED:
                # Stop first, then start; unless something else (a respawn,
                # new settings) has already started the pool's full count.
                missing = self.config.processes - len(self.serving)
                return actions + self._spawn(min(1, missing))
            self.roster.settle_recycle()
            return actions  # replaced: its successor is already there
        queued = event.queued
        if not view.ever_ready:
            if not view.debugged:
                self.consecutive_failures += 1
            if self.recycling:
                actions += self.roster.abort_recycle()
            elif not self.roster.any_ready:
                self.state = PoolState.STARTUP_FAILED
                actions.append(RefuseQueue(self.failure_reason()))
                queued = 0  # answered: an on-demand pool waits for the next request
            if (
                not event.reported_startup_failure
                and not event.killed_by_master
                and not self.recycling
            ):
                # Last: a silent death before Ready is a start-up failure too.
                self.last_failure_timed_out = False
                actions.append(ReportStartupFailure("died_before_ready"))
        if self.recycling:
            return actions
        return actions + self._schedule_respawn(queued)

    def _request(self, event: RequestArrived) -> list[Action]:
        state = self.state
        if event.all_busy and state is PoolState.STARTUP_FAILED:
            state = PoolState.STARTED  # a worker is Ready: it waits in the queue
        if state is PoolState.DISABLED:
            return [Refuse("pool_disabled")]
        if state is PoolState.STARTUP_FAILED:
            return self._request_while_failing(event)
        if state is not PoolState.STARTED:
            return [Refuse(self.stopped_reason())]
        if event.queued >= self.config.queue_length:
            return [Refuse("queue_full")]
        if self.may_grow and not self.stopping_first:
            return [Enqueue(), *self._spawn(1)]  # on demand: the first request starts a worker
        return [Enqueue()]

    def _request_while_failing(self, event: RequestArrived) -> list[Action]:
        """No worker could start lately. The request waits for the next
        attempt, and gets the failure's 503 if that one fails too (or when
        its wait passes the start-up time limit): a start that succeeds
        serves it. An on-demand pool makes its next attempt because of the
        request, once the back-off since the last failure has run out, so
        a crash loop driven by requests reaches rapid-fail protection as one
        driven by `always_running` does."""
        if event.queued >= self.config.queue_length:
            return [Refuse("queue_full")]
        if self.roster.starting or self.respawn_pending:
            return [Enqueue()]
        if self.config.always_running or len(self.serving) >= self.config.processes:
            return [Refuse(self.failure_reason())]  # nothing to wait for
        delay = restart_delay(self.consecutive_failures)
        if self.last_failure_at is not None:
            delay = max(0.0, delay - (event.now - self.last_failure_at))
        self.respawn_pending = True
        return [Enqueue(), ScheduleRespawn(delay)]

    # helpers

    def _wanted(self, queued: int) -> int:
        """Workers the pool should have: all of them when always running; on
        demand, one while requests wait for it (more come by `AllBusy`)."""
        if self.config.always_running:
            return self.config.processes
        return 1 if queued else 0

    def _spawn(self, count: int) -> list[Action]:
        return [Spawn(count)] if count > 0 and self.may_spawn else []

    def _schedule_respawn(self, queued: int) -> list[Action]:
        if self.state in (PoolState.STOPPING, PoolState.STOPPED) or self.respawn_pending:
            return []
        if self._wanted(queued) - len(self.serving) <= 0:
            return []
        self.respawn_pending = True
        return [ScheduleRespawn(restart_delay(self.consecutive_failures))]

    def _cancel_respawn(self) -> list[Action]:
        if not self.respawn_pending:
            return []
        self.respawn_pending = False
        return [CancelRespawn()]
