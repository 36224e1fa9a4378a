"""The pool's lifecycle policy, without processes: each transition, every
(state, event) pair, and random histories checked against its invariants."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from poolwarden.activation.pool_policy import (
    Action,
    AllBusy,
    CancelRespawn,
    DebugArmed,
    Disable,
    Drain,
    Enqueue,
    Event,
    FailureCounted,
    IdleTimeout,
    IllegalTransition,
    Kill,
    PoolConfig,
    PoolMachine,
    PoolState,
    QueueWaitExpired,
    ReapOrphans,
    RecycleAborted,
    RecycleRequested,
    Refuse,
    RefuseExpired,
    RefuseQueue,
    ReportStartupFailure,
    RequestArrived,
    RespawnDue,
    Resume,
    Retire,
    RunAutoShutdownCommand,
    RunOrphanAction,
    ScheduleAutoRestart,
    ScheduleKill,
    ScheduleRespawn,
    SettingsChanged,
    Spawn,
    SpawnFailed,
    Start,
    StartupFailureReported,
    Stop,
    StopNow,
    Stopped,
    StopReason,
    Unretire,
    WorkerDebugged,
    WorkerEnded,
    WorkerExited,
    WorkerOrphaned,
    WorkerPhase,
    WorkerReady,
    WorkerSignalled,
    WorkerSpawned,
)
from poolwarden.activation.rapid_fail import FailureWindow, RapidFailPolicy
from poolwarden.events.classify import PLANNED, WorkerEnd, classify

ADMIN = StopReason.ADMINISTRATOR


def pool(
    state: PoolState = PoolState.STARTED,
    *,
    ready: int = 0,
    starting: int = 0,
    stop_reason: StopReason | None = None,
    debugged: tuple[int, ...] = (),
    orphans: tuple[int, ...] = (),
    **config: object,
) -> PoolMachine:
    """A machine in `state` with `ready` Ready workers (ids 1..) then `starting`
    ones, those in `debugged` held by a debugger, and `orphans` kept stopped."""
    machine = PoolMachine(PoolConfig(**config))  # type: ignore[arg-type]
    for id in range(1, ready + starting + 1):
        machine.handle(WorkerSpawned(id, debugged=id in debugged))
        if id <= ready:
            machine.handle(WorkerReady(id))
    machine.orphans.update(orphans)
    machine.state = state
    machine.stop_reason = stop_reason
    return machine


def spawns(actions: list[Action]) -> int:
    return sum(action.count for action in actions if isinstance(action, Spawn))


# one transition at a time: (machine, event) -> (next state, actions)

TABLE: list[tuple[str, Callable[[], PoolMachine], Event, PoolState, list[Action]]] = [
    (
        "start: always running starts every worker",
        lambda: pool(processes=3),
        Start(),
        PoolState.STARTED,
        [Spawn(3)],
    ),
    (
        "start: on demand waits for a request",
        lambda: pool(always_running=False),
        Start(),
        PoolState.STARTED,
        [],
    ),
    (
        "start: auto_start off stays stopped",
        lambda: pool(auto_start=False),
        Start(),
        PoolState.STOPPED,
        [],
    ),
    (
        "resume after a stop starts the workers",
        lambda: pool(PoolState.STOPPED, stop_reason=ADMIN, processes=2),
        Resume(),
        PoolState.STARTED,
        [Spawn(2)],
    ),
    (
        "resume of a started pool does nothing",
        lambda: pool(ready=1),
        Resume(),
        PoolState.STARTED,
        [],
    ),
    (
        "resume of a disabled pool",
        lambda: pool(PoolState.DISABLED),
        Resume(),
        PoolState.STARTED,
        [Spawn(1)],
    ),
    (
        "stop drains and arms the kill timer",
        lambda: pool(ready=1),
        Stop(ADMIN, 10.0),
        PoolState.STOPPING,
        [RefuseQueue("pool_stopped"), Drain(1, "administrator"), ScheduleKill(10.0)],
    ),
    (
        "stop of an empty pool is stopped at once",
        lambda: pool(),
        Stop(StopReason.SHUTDOWN, 10.0),
        PoolState.STOPPED,
        [RefuseQueue("shutting_down"), Stopped()],
    ),
    (
        "stop of a stopped pool does nothing",
        lambda: pool(PoolState.STOPPED, stop_reason=ADMIN),
        Stop(ADMIN, 1.0),
        PoolState.STOPPED,
        [],
    ),
    (
        "the same stop twice does nothing",
        lambda: pool(PoolState.STOPPING, ready=1, stop_reason=ADMIN),
        Stop(ADMIN, 1.0),
        PoolState.STOPPING,
        [],
    ),
    (
        "a shutdown during an administrator's stop drains again",
        lambda: pool(PoolState.STOPPING, ready=1, stop_reason=ADMIN),
        Stop(StopReason.SHUTDOWN, 2.0),
        PoolState.STOPPING,
        [RefuseQueue("shutting_down"), Drain(1, "shutdown"), ScheduleKill(2.0)],
    ),
    (
        "a removed pool's workers end as drained",
        lambda: pool(ready=1),
        Stop(StopReason.REMOVED, 3.0),
        PoolState.STOPPING,
        [RefuseQueue("shutting_down"), Drain(1, "drain"), ScheduleKill(3.0)],
    ),
    (
        "stop now kills",
        lambda: pool(ready=2),
        StopNow(),
        PoolState.STOPPING,
        [RefuseQueue("shutting_down"), Kill(1, "shutdown"), Kill(2, "shutdown")],
    ),
    (
        "stop now of an empty pool",
        lambda: pool(),
        StopNow(),
        PoolState.STOPPED,
        [RefuseQueue("shutting_down"), Stopped()],
    ),
    (
        "recycle with overlap starts replacements first",
        lambda: pool(ready=2, processes=2),
        RecycleRequested(),
        PoolState.STARTED,
        [Retire(1), Retire(2), Spawn(2)],
    ),
    (
        "recycle without overlap drains one first",
        lambda: pool(ready=2, processes=2, overlapping=False),
        RecycleRequested(),
        PoolState.STARTED,
        [Retire(1), Retire(2), Drain(1, "recycle")],
    ),
    (
        "recycle of no worker does nothing",
        lambda: pool(),
        RecycleRequested(),
        PoolState.STARTED,
        [],
    ),
    (
        "recycle of one worker",
        lambda: pool(ready=2, processes=2),
        RecycleRequested((2,)),
        PoolState.STARTED,
        [Retire(2), Spawn(1)],
    ),
    (
        "a worker is not retired twice",
        lambda: pool(ready=1),
        RecycleRequested((1,)),
        PoolState.STARTED,
        [Retire(1), Spawn(1)],
    ),
    (
        "new settings retry a pool that failed to start",
        lambda: pool(PoolState.STARTUP_FAILED),
        SettingsChanged(),
        PoolState.STARTED,
        [Spawn(1)],
    ),
    (
        "new settings of a started pool: the driver recycles",
        lambda: pool(ready=1),
        SettingsChanged(),
        PoolState.STARTED,
        [],
    ),
    (
        "a Ready worker ends startup_failed",
        lambda: pool(PoolState.STARTUP_FAILED, starting=1),
        WorkerReady(1),
        PoolState.STARTED,
        [],
    ),
    (
        "a counted failure",
        lambda: pool(ready=1),
        WorkerEnded(1, True, 0.0),
        PoolState.STARTED,
        [FailureCounted(1)],
    ),
    (
        "a planned end is not counted",
        lambda: pool(ready=1),
        WorkerEnded(1, False, 0.0),
        PoolState.STARTED,
        [],
    ),
    (
        "max_crashes failures disable the pool",
        lambda: pool(ready=2, rapid_fail=RapidFailPolicy(max_crashes=1)),
        WorkerEnded(1, True, 0.0),
        PoolState.DISABLED,
        [
            FailureCounted(1),
            Disable(1),
            RefuseQueue("pool_disabled"),
            Drain(1, "drain"),
            Drain(2, "drain"),
        ],
    ),
    (
        "disabled with auto_restart_after",
        lambda: pool(rapid_fail=RapidFailPolicy(max_crashes=1), auto_restart_after=60.0),
        WorkerEnded(9, True, 0.0),
        PoolState.DISABLED,
        [FailureCounted(1), Disable(1), ScheduleAutoRestart(60.0), RefuseQueue("pool_disabled")],
    ),
    (
        "rapid-fail protection off never disables",
        lambda: pool(rapid_fail=RapidFailPolicy(enabled=False, max_crashes=1)),
        WorkerEnded(9, True, 0.0),
        PoolState.STARTED,
        [FailureCounted(1)],
    ),
    (
        "a worker dead before Ready: startup_failed, back-off",
        lambda: pool(starting=1),
        WorkerExited(1),
        PoolState.STARTUP_FAILED,
        [
            RefuseQueue("startup_failed"),
            ReportStartupFailure("died_before_ready"),
            ScheduleRespawn(0.0),
        ],
    ),
    (
        "a worker that said why it failed",
        lambda: pool(starting=1),
        WorkerExited(1, reported_startup_failure=True),
        PoolState.STARTUP_FAILED,
        [RefuseQueue("startup_failed"), ScheduleRespawn(0.0)],
    ),
    (
        "a worker past the start-up time limit",
        lambda: pool(starting=1),
        WorkerExited(1, timed_out=True, killed_by_master=True),
        PoolState.STARTUP_FAILED,
        [
            ReportStartupFailure("startup_timeout"),
            RefuseQueue("startup_timeout"),
            ScheduleRespawn(0.0),
        ],
    ),
    (
        "a crash after Ready is replaced at once",
        lambda: pool(ready=1),
        WorkerExited(1),
        PoolState.STARTED,
        [ScheduleRespawn(0.0)],
    ),
    (
        "an on-demand worker's end with nothing queued",
        lambda: pool(ready=1, always_running=False),
        WorkerExited(1),
        PoolState.STARTED,
        [],
    ),
    (
        "the last worker of a stopping pool",
        lambda: pool(PoolState.STOPPING, ready=1, stop_reason=ADMIN),
        WorkerExited(1),
        PoolState.STOPPED,
        [Stopped()],
    ),
    (
        "a disabled pool starts nothing",
        lambda: pool(PoolState.DISABLED, ready=1),
        WorkerExited(1),
        PoolState.DISABLED,
        [],
    ),
    (
        "a request waits for the first on-demand worker",
        lambda: pool(always_running=False),
        RequestArrived(0),
        PoolState.STARTED,
        [Enqueue(), Spawn(1)],
    ),
    (
        "a request waits while a worker starts",
        lambda: pool(starting=1),
        RequestArrived(0),
        PoolState.STARTED,
        [Enqueue()],
    ),
    (
        "a full queue",
        lambda: pool(starting=1, queue_length=2),
        RequestArrived(2),
        PoolState.STARTED,
        [Refuse("queue_full")],
    ),
    (
        "a disabled pool refuses",
        lambda: pool(PoolState.DISABLED),
        RequestArrived(0),
        PoolState.DISABLED,
        [Refuse("pool_disabled")],
    ),
    (
        "a stopped pool refuses",
        lambda: pool(PoolState.STOPPED, stop_reason=ADMIN),
        RequestArrived(0),
        PoolState.STOPPED,
        [Refuse("pool_stopped")],
    ),
    (
        "a shutting-down pool refuses",
        lambda: pool(PoolState.STOPPING, stop_reason=StopReason.SHUTDOWN),
        RequestArrived(0),
        PoolState.STOPPING,
        [Refuse("shutting_down")],
    ),
    (
        "a pool that failed to start refuses",
        lambda: pool(PoolState.STARTUP_FAILED),
        RequestArrived(0),
        PoolState.STARTUP_FAILED,
        [Refuse("startup_failed")],
    ),
    (
        "... unless a worker is Ready but busy",
        lambda: pool(PoolState.STARTUP_FAILED, ready=1),
        RequestArrived(0, all_busy=True),
        PoolState.STARTUP_FAILED,
        [Enqueue()],
    ),
    (
        "a busy web garden grows",
        lambda: pool(ready=1, processes=2),
        AllBusy(),
        PoolState.STARTED,
        [Spawn(1)],
    ),
    (
        "... not past processes",
        lambda: pool(ready=2, processes=2),
        AllBusy(),
        PoolState.STARTED,
        [],
    ),
    (
        "... nor while one starts",
        lambda: pool(ready=1, starting=1, processes=3),
        AllBusy(),
        PoolState.STARTED,
        [],
    ),
    (
        "the back-off ran out",
        lambda: pool(processes=2),
        RespawnDue(),
        PoolState.STARTED,
        [Spawn(2)],
    ),
    (
        "the back-off ran out on a disabled pool",
        lambda: pool(PoolState.DISABLED),
        RespawnDue(),
        PoolState.DISABLED,
        [],
    ),
    (
        "a queued request past the limit, start-up slow",
        lambda: pool(starting=1),
        QueueWaitExpired(),
        PoolState.STARTED,
        [RefuseExpired("startup_timeout")],
    ),
    (
        "a queued request past the limit, all busy",
        lambda: pool(ready=1),
        QueueWaitExpired(),
        PoolState.STARTED,
        [RefuseExpired("queue_timeout")],
    ),
    (
        "an idle worker is drained",
        lambda: pool(ready=1),
        IdleTimeout(1),
        PoolState.STARTED,
        [Drain(1, "idle")],
    ),
    (
        "a process cannot be created",
        lambda: pool(),
        SpawnFailed(0.0),
        PoolState.STARTUP_FAILED,
        [
            FailureCounted(1),
            RefuseQueue("startup_failed"),
            ReportStartupFailure("spawn"),
            ScheduleRespawn(0.0),
        ],
    ),
    (
        "... the last one rapid-fail protection allows",
        lambda: pool(rapid_fail=RapidFailPolicy(max_crashes=1)),
        SpawnFailed(0.0),
        PoolState.DISABLED,
        [FailureCounted(1), Disable(1), RefuseQueue("pool_disabled")],
    ),
    (
        "disabled with auto_shutdown_command: it runs after 5002",
        lambda: pool(
            ready=1, rapid_fail=RapidFailPolicy(max_crashes=1), auto_shutdown_command=True
        ),
        WorkerEnded(1, True, 0.0),
        PoolState.DISABLED,
        [
            FailureCounted(1),
            Disable(1),
            RunAutoShutdownCommand(),
            RefuseQueue("pool_disabled"),
            Drain(1, "drain"),
        ],
    ),
    (
        "a failure while disabled is counted, and disables nothing again",
        lambda: pool(PoolState.DISABLED, ready=1, rapid_fail=RapidFailPolicy(max_crashes=1)),
        WorkerEnded(1, True, 0.0),
        PoolState.DISABLED,
        [FailureCounted(1)],
    ),
    # debugged workers
    (
        "a debugged worker's failure is not counted",
        lambda: pool(ready=1, debugged=(1,), rapid_fail=RapidFailPolicy(max_crashes=1)),
        WorkerEnded(1, True, 0.0),
        PoolState.STARTED,
        [],
    ),
    (
        "a debugged worker dead before Ready: startup_failed, no back-off step",
        lambda: pool(starting=1, debugged=(1,)),
        WorkerExited(1, reported_startup_failure=True),
        PoolState.STARTUP_FAILED,
        [RefuseQueue("startup_failed"), ScheduleRespawn(0.0)],
    ),
    (
        "the queue does not expire while a debugger holds a start",
        lambda: pool(ready=1, starting=1, debugged=(2,)),
        QueueWaitExpired(),
        PoolState.STARTED,
        [],
    ),
    (
        "... but does while a debugger holds a Ready worker",
        lambda: pool(ready=1, debugged=(1,)),
        QueueWaitExpired(),
        PoolState.STARTED,
        [RefuseExpired("queue_timeout")],
    ),
    (
        "debug startup armed: the oldest Ready worker is replaced",
        lambda: pool(ready=2, processes=2),
        DebugArmed(),
        PoolState.STARTED,
        [Retire(1), Spawn(1)],
    ),
    (
        "... without overlap it drains first",
        lambda: pool(ready=1, overlapping=False),
        DebugArmed(),
        PoolState.STARTED,
        [Retire(1), Drain(1, "recycle")],
    ),
    (
        "... or starts one if none serves",
        lambda: pool(),
        DebugArmed(),
        PoolState.STARTED,
        [Spawn(1)],
    ),
    (
        "... and waits for the next start while one starts",
        lambda: pool(starting=1),
        DebugArmed(),
        PoolState.STARTED,
        [],
    ),
    (
        "... and an on-demand pool's comes with the next request",
        lambda: pool(ready=1, always_running=False),
        DebugArmed(),
        PoolState.STARTED,
        [],
    ),
    (
        "... and a stopped pool's when it is started",
        lambda: pool(PoolState.STOPPED, stop_reason=ADMIN),
        DebugArmed(),
        PoolState.STOPPED,
        [],
    ),
    # orphans
    (
        "an orphan is counted and replaced",
        lambda: pool(ready=1),
        WorkerOrphaned(1, 0.0),
        PoolState.STARTED,
        [FailureCounted(1), ScheduleRespawn(0.0)],
    ),
    (
        "an orphan goes to the orphan action first",
        lambda: pool(ready=1, orphan_action_command=True),
        WorkerOrphaned(1, 0.0),
        PoolState.STARTED,
        [RunOrphanAction(1), FailureCounted(1), ScheduleRespawn(0.0)],
    ),
    (
        "an orphan can fill the window",
        lambda: pool(ready=2, processes=2, rapid_fail=RapidFailPolicy(max_crashes=1)),
        WorkerOrphaned(1, 0.0),
        PoolState.DISABLED,
        [FailureCounted(1), Disable(1), RefuseQueue("pool_disabled"), Drain(2, "drain")],
    ),
    (
        "a debugged orphan is not counted, but replaced",
        lambda: pool(ready=1, debugged=(1,)),
        WorkerOrphaned(1, 0.0),
        PoolState.STARTED,
        [ScheduleRespawn(0.0)],
    ),
    (
        "the last worker of a stopping pool orphaned: stopped",
        lambda: pool(PoolState.STOPPING, ready=1, stop_reason=ADMIN),
        WorkerOrphaned(1, 0.0),
        PoolState.STOPPED,
        [FailureCounted(1), Stopped()],
    ),
    (
        "a worker that ended before it could be orphaned",
        lambda: pool(),
        WorkerOrphaned(1, 0.0),
        PoolState.STARTED,
        [],
    ),
    (
        "an orphan's end when reaped is no news",
        lambda: pool(orphans=(7,), rapid_fail=RapidFailPolicy(max_crashes=1)),
        WorkerEnded(7, True, 0.0),
        PoolState.STARTED,
        [],
    ),
    (
        "... nor its exit",
        lambda: pool(orphans=(7,)),
        WorkerExited(7, queued=1),
        PoolState.STARTED,
        [],
    ),
    (
        "started again, the orphans are reaped",
        lambda: pool(PoolState.DISABLED, orphans=(7,)),
        Resume(),
        PoolState.STARTED,
        [ReapOrphans(), Spawn(1)],
    ),
    (
        "a shutdown reaps the orphans",
        lambda: pool(ready=1, orphans=(7,)),
        Stop(StopReason.SHUTDOWN, 2.0),
        PoolState.STOPPING,
        [ReapOrphans(), RefuseQueue("shutting_down"), Drain(1, "shutdown"), ScheduleKill(2.0)],
    ),
    (
        "an administrator's stop keeps them for inspection",
        lambda: pool(ready=1, orphans=(7,)),
        Stop(ADMIN, 2.0),
        PoolState.STOPPING,
        [RefuseQueue("pool_stopped"), Drain(1, "administrator"), ScheduleKill(2.0)],
    ),
]


@pytest.mark.parametrize(
    ("make", "event", "state", "actions"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_each_transition(
    make: Callable[[], PoolMachine], event: Event, state: PoolState, actions: list[Action]
) -> None:
    machine = make()
    assert machine.handle(event) == actions
    assert machine.state is state


def test_resume_of_a_pool_shutting_down_is_refused_with_state_and_event() -> None:
    machine = pool(PoolState.STOPPING, ready=1, stop_reason=StopReason.SHUTDOWN)
    with pytest.raises(IllegalTransition, match="Resume in state stopping"):
        machine.handle(Resume())
    assert machine.state is PoolState.STOPPING


@pytest.mark.parametrize("state", [s for s in PoolState if s is not PoolState.STARTED])
def test_only_a_started_pool_is_recycled(state: PoolState) -> None:
    machine = pool(state, ready=1, stop_reason=ADMIN)
    with pytest.raises(IllegalTransition, match="RecycleRequested"):
        machine.handle(RecycleRequested())
    assert machine.state is state
    assert not machine.workers[1].retiring


def test_a_replacement_ready_drains_the_oldest_old_worker_and_the_recycle_ends() -> None:
    machine = pool(ready=2, processes=2)
    machine.handle(RecycleRequested())
    machine.handle(WorkerSpawned(3))
    machine.handle(WorkerSpawned(4))
    assert machine.handle(WorkerReady(3)) == [Drain(1, "recycle")]
    assert machine.handle(WorkerReady(4)) == [Drain(2, "recycle")]
    assert machine.recycling
    machine.handle(WorkerExited(1))
    assert machine.recycling
    assert machine.handle(WorkerExited(2)) == []
    assert not machine.recycling


def test_a_worker_signalled_from_outside_drains_at_once_and_is_replaced() -> None:
    machine = pool(ready=1)
    assert machine.handle(WorkerSignalled(1)) == [Retire(1), Spawn(1), Drain(1, "signal")]
    assert machine.handle(WorkerSignalled(1)) == []  # already draining
    machine.handle(WorkerSpawned(2))
    assert machine.handle(WorkerReady(2)) == []  # nothing left to drain
    assert machine.handle(WorkerEnded(1, counts_as_failure=False, now=1.0)) == []
    assert machine.handle(WorkerExited(1)) == []
    assert not machine.recycling and machine.serving == [2]


def test_a_worker_signalled_while_the_pool_stops_is_not_replaced() -> None:
    machine = pool(ready=1)
    machine.handle(Stop(ADMIN, 5.0))
    assert machine.handle(WorkerSignalled(1)) == []
    stopping = pool(PoolState.STOPPING, ready=1, stop_reason=ADMIN)
    assert stopping.handle(WorkerSignalled(1)) == [Drain(1, "signal")]


def test_without_overlap_the_replacement_starts_when_the_old_worker_has_exited() -> None:
    machine = pool(ready=1, overlapping=False, always_running=False)
    machine.handle(RecycleRequested())
    assert machine.stopping_first
    assert machine.handle(RequestArrived(0)) == [Enqueue()]  # nothing starts meanwhile
    assert machine.handle(WorkerExited(1)) == [Spawn(1)]


def test_a_replacement_that_fails_aborts_the_recycle_and_the_old_workers_serve_on() -> None:
    machine = pool(ready=2, processes=2)
    machine.handle(RecycleRequested())
    machine.handle(WorkerSpawned(3))
    machine.handle(WorkerSpawned(4))
    actions = machine.handle(WorkerExited(3, reported_startup_failure=True))
    assert actions == [Unretire(1), Unretire(2), Kill(4, "recycle"), RecycleAborted(2)]
    assert machine.state is PoolState.STARTED  # old workers still Ready
    assert not machine.recycling
    assert machine.serving == [1, 2, 4]  # 4 is on its way out
    assert machine.workers[4].asked == "recycle"


def test_the_back_off_doubles_with_each_failed_start_and_a_ready_worker_resets_it() -> None:
    machine = pool()
    delays = []
    for id in range(1, 6):
        machine.handle(WorkerSpawned(id))
        (*_, respawn) = machine.handle(WorkerExited(id, reported_startup_failure=True))
        assert isinstance(respawn, ScheduleRespawn)
        delays.append(respawn.delay)
        machine.handle(RespawnDue())
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    machine.handle(WorkerSpawned(9))
    machine.handle(WorkerReady(9))
    assert machine.consecutive_failures == 0


def test_the_queue_expires_as_startup_failed_after_failures_and_names_a_timeout() -> None:
    machine = pool(starting=1)
    machine.handle(WorkerExited(1, reported_startup_failure=True))
    assert machine.handle(QueueWaitExpired()) == [RefuseExpired("startup_failed")]
    machine.handle(StartupFailureReported(timed_out=True))
    assert machine.failure_reason() == "startup_timeout"
    machine.handle(RespawnDue())
    machine.handle(WorkerSpawned(2))
    assert RefuseQueue("startup_timeout") in machine.handle(
        WorkerExited(2, timed_out=True, queued=1)
    )


def test_pool_start_after_failed_start_ups_tries_again_at_once_with_a_fresh_window() -> None:
    machine = pool(starting=1)
    machine.consecutive_failures = 3
    machine.handle(WorkerEnded(1, counts_as_failure=True, now=5.0))
    actions = machine.handle(WorkerExited(1, reported_startup_failure=True))
    assert machine.state is PoolState.STARTUP_FAILED and ScheduleRespawn(4.0) in actions
    assert machine.handle(Resume()) == [CancelRespawn(), Spawn(1)]
    assert (machine.state, machine.consecutive_failures) == (PoolState.STARTED, 0)
    assert machine.failures == FailureWindow()


def test_while_start_ups_fail_a_request_waits_for_the_next_attempt() -> None:
    machine = pool(starting=1)
    machine.handle(WorkerExited(1, reported_startup_failure=True))
    assert machine.state is PoolState.STARTUP_FAILED and machine.respawn_pending
    assert machine.handle(RequestArrived(0)) == [Enqueue()]  # the back-off is running
    machine.handle(RespawnDue(queued=1))
    machine.handle(WorkerSpawned(2))
    assert machine.handle(RequestArrived(1)) == [Enqueue()]  # the attempt is under way
    assert machine.handle(RequestArrived(1000)) == [Refuse("queue_full")]
    # It fails too: whoever waited gets the failure's 503 at once.
    assert machine.handle(WorkerExited(2, reported_startup_failure=True, queued=2))[0] == (
        RefuseQueue("startup_failed")
    )


def test_an_on_demand_pool_makes_the_next_attempt_for_a_request_after_the_back_off() -> None:
    machine = pool(always_running=False, starting=1)
    machine.consecutive_failures = 2  # the third start: 2 s after the last failure
    machine.handle(WorkerEnded(1, counts_as_failure=True, now=100.0))
    assert machine.handle(WorkerExited(1, reported_startup_failure=True)) == [
        RefuseQueue("startup_failed")
    ]
    assert not machine.respawn_pending  # nobody asked for a worker yet
    assert machine.handle(RequestArrived(0, now=100.5)) == [Enqueue(), ScheduleRespawn(1.5)]
    assert machine.handle(RequestArrived(1, now=100.6)) == [Enqueue()]  # the same attempt
    assert machine.handle(RespawnDue(queued=2)) == [Spawn(1)]


def test_an_on_demand_pool_asked_long_after_its_last_failure_tries_at_once() -> None:
    machine = pool(always_running=False, starting=1)
    machine.consecutive_failures = 4
    machine.handle(WorkerEnded(1, counts_as_failure=True, now=100.0))
    machine.handle(WorkerExited(1, reported_startup_failure=True))
    assert machine.handle(RequestArrived(0, now=400.0)) == [Enqueue(), ScheduleRespawn(0.0)]


def test_a_crash_loop_driven_by_requests_disables_an_on_demand_pool() -> None:
    machine = pool(always_running=False)
    now, refused = 0.0, []
    for id in range(1, 6):
        actions = machine.handle(RequestArrived(0, now=now))
        assert actions[0] == Enqueue()
        if id == 1:
            assert actions[1:] == [Spawn(1)]  # the first request starts the first worker
        else:
            [respawn] = actions[1:]
            assert isinstance(respawn, ScheduleRespawn)
            now += respawn.delay
            assert machine.handle(RespawnDue(queued=1)) == [Spawn(1)]
        machine.handle(WorkerSpawned(id))
        now += 0.2  # the import fails
        ended = machine.handle(WorkerEnded(id, counts_as_failure=True, now=now))
        refused += machine.handle(WorkerExited(id, reported_startup_failure=True, queued=1))
    assert any(isinstance(action, Disable) for action in ended)
    assert machine.state is PoolState.DISABLED
    assert now < 20  # 0 + 1 + 2 + 4 s of back-off, and five imports
    assert refused.count(RefuseQueue("startup_failed")) == 4  # the fifth got pool_disabled
    assert machine.handle(RequestArrived(0, now=now)) == [Refuse("pool_disabled")]


def test_a_stop_cancels_a_pending_respawn() -> None:
    machine = pool(ready=1)
    machine.handle(WorkerExited(1))
    assert machine.respawn_pending
    assert machine.handle(Stop(ADMIN, 1.0))[0] == CancelRespawn()
    assert not machine.respawn_pending


def test_debug_startup_of_a_disabled_pool_is_refused_and_changes_nothing() -> None:
    machine = pool(PoolState.DISABLED, ready=1)
    with pytest.raises(IllegalTransition, match="DebugArmed in state disabled"):
        machine.handle(DebugArmed())
    assert machine.state is PoolState.DISABLED
    assert not machine.workers[1].retiring


def test_debug_startup_during_a_recycle_waits_rather_than_exceeding_processes() -> None:
    machine = pool(ready=1, processes=1)
    machine.handle(RecycleRequested())
    machine.handle(WorkerSpawned(2))
    machine.handle(WorkerReady(2))  # 1 drains; the recycle ends when it has exited
    assert machine.recycling
    assert machine.handle(DebugArmed()) == []
    assert machine.serving == [2]


def test_a_worker_a_debugger_attached_to_no_longer_counts() -> None:
    machine = pool(ready=1, rapid_fail=RapidFailPolicy(max_crashes=1))
    assert machine.handle(WorkerDebugged(1)) == []
    assert machine.handle(WorkerEnded(1, True, 0.0)) == []
    assert machine.failures == FailureWindow()
    assert machine.handle(WorkerExited(1)) == [ScheduleRespawn(0.0)]
    assert machine.handle(WorkerDebugged(1)) == []  # gone: nothing to remember


def test_a_debugged_start_that_fails_does_not_lengthen_the_back_off() -> None:
    machine = pool()
    for id in (1, 2):
        machine.handle(WorkerSpawned(id))
        machine.handle(WorkerExited(id, reported_startup_failure=True))
        machine.handle(RespawnDue())
    assert machine.consecutive_failures == 2
    machine.handle(WorkerSpawned(3, debugged=True))
    (*_, respawn) = machine.handle(WorkerExited(3, reported_startup_failure=True))
    assert respawn == ScheduleRespawn(1.0)  # as after two failures, not three
    assert machine.consecutive_failures == 2


def test_an_orphan_is_no_capacity_and_counts_exactly_once() -> None:
    machine = pool(ready=2, processes=2)
    actions = machine.handle(WorkerOrphaned(1, 10.0))
    assert actions == [FailureCounted(1), ScheduleRespawn(0.0)]
    assert 1 not in machine.workers and machine.orphans == {1}
    assert machine.serving == [2]
    assert machine.handle(RespawnDue()) == [Spawn(1)]  # its replacement
    # Reaped later: SIGKILL, whatever its end looks like, counts no more.
    assert machine.handle(WorkerEnded(1, True, 11.0)) == []
    assert machine.handle(WorkerExited(1, killed_by_master=True)) == []
    assert machine.failures.times == (10.0,)
    assert machine.orphans == set()
    assert machine.consecutive_failures == 0  # it had been Ready


def test_an_orphan_that_never_was_ready_backs_off_like_a_failed_start() -> None:
    machine = pool()
    delays = []
    for id in range(1, 5):
        machine.handle(WorkerSpawned(id))
        (*_, respawn) = machine.handle(WorkerOrphaned(id, float(id)))
        assert isinstance(respawn, ScheduleRespawn)
        delays.append(respawn.delay)
        machine.handle(RespawnDue())
    assert delays == [0.0, 1.0, 2.0, 4.0]
    assert machine.orphans == {1, 2, 3, 4}


def test_a_debugged_start_orphaned_neither_counts_nor_backs_off() -> None:
    machine = pool(starting=1, debugged=(1,))
    assert machine.handle(WorkerOrphaned(1, 0.0)) == [ScheduleRespawn(0.0)]
    assert machine.consecutive_failures == 0
    assert machine.failures == FailureWindow()


def test_an_orphan_of_a_disabled_pool_is_counted_and_nothing_starts() -> None:
    machine = pool(PoolState.DISABLED, ready=1)
    assert machine.handle(WorkerOrphaned(1, 0.0)) == [FailureCounted(1)]
    assert machine.state is PoolState.DISABLED
    assert not machine.respawn_pending


def representative_events() -> list[Event]:
    return [
        Start(),
        Resume(),
        Stop(ADMIN, 1.0),
        Stop(StopReason.SHUTDOWN, 1.0),
        StopNow(),
        RecycleRequested(),
        RecycleRequested((1,)),
        SettingsChanged(),
        DebugArmed(),
        WorkerSpawned(9),
        WorkerSpawned(9, debugged=True),
        WorkerDebugged(1),
        SpawnFailed(0.0),
        WorkerReady(2),
        StartupFailureReported(False),
        WorkerEnded(1, True, 0.0),
        WorkerOrphaned(1, 0.0),
        WorkerOrphaned(2, 0.0),
        WorkerExited(1),
        WorkerExited(2),
        RequestArrived(0),
        RequestArrived(0, all_busy=True),
        AllBusy(),
        RespawnDue(1),
        QueueWaitExpired(),
        IdleTimeout(1),
    ]


@pytest.mark.parametrize("state", list(PoolState))
@pytest.mark.parametrize("event", representative_events(), ids=repr)
def test_every_state_and_event(state: PoolState, event: Event) -> None:
    """Every pair is defined: an action list, or IllegalTransition that changes
    nothing; and a pool not allowed to start workers gets no Spawn."""
    stop_reason = None if state in (PoolState.STARTED, PoolState.STARTUP_FAILED) else ADMIN
    machine = pool(state, ready=1, starting=1, stop_reason=stop_reason, processes=3)
    try:
        actions = machine.handle(event)
    except IllegalTransition as error:
        assert error.state is state
        assert machine.state is state
        return
    if state in (PoolState.STOPPING, PoolState.STOPPED, PoolState.DISABLED) and event != Resume():
        assert spawns(actions) == 0
    if machine.state in (PoolState.STOPPING, PoolState.STOPPED, PoolState.DISABLED):
        assert spawns(actions) == 0
        assert Enqueue() not in actions


def test_an_unknown_event_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        PoolMachine().handle(object())  # type: ignore[arg-type]


@given(
    ended_by=st.sampled_from(sorted(PLANNED)),
    returncode=st.sampled_from([0, -15]),
    ever_ready=st.booleans(),
)
def test_planned_ends_never_count_as_failures(
    ended_by: str, returncode: int, ever_ready: bool
) -> None:
    """Recycle, idle, shutdown, administrator, drain: what decides `counts_as_failure`."""
    end = WorkerEnd(
        pool="p",
        pid=1,
        returncode=returncode,
        ended_by=ended_by,  # type: ignore[arg-type]
        signals_sent=[15] if returncode else [],
        ever_ready=ever_ready,
    )
    assert not classify(end).counts_as_failure


# random histories


class PoolHistory(RuleBasedStateMachine):
    """Random starts, stops, resumes, requests, readies, ends, recycles,
    debuggers, orphans and ticks, performed by a fake driver; the invariants
    hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = PoolMachine()
        self.now = 0.0
        self.queue = 0
        self.next_id = 1
        self.failure_times: list[float] = []
        """The model of the rapid-fail window: failures since the last resume
        (a debugged worker's never; an orphan's once, when it is orphaned)."""
        self.armed = False
        """Startup debugging is armed: the next worker starts debugged."""

    @initialize(
        processes=st.integers(1, 3),
        always_running=st.booleans(),
        overlapping=st.booleans(),
        max_crashes=st.integers(1, 4),
        interval=st.sampled_from([5.0, 60.0]),
        enabled=st.booleans(),
        auto_start=st.booleans(),
        commands=st.booleans(),
    )
    def configure(
        self,
        processes: int,
        always_running: bool,
        overlapping: bool,
        max_crashes: int,
        interval: float,
        enabled: bool,
        auto_start: bool,
        commands: bool,
    ) -> None:
        self.machine = PoolMachine(
            PoolConfig(
                processes=processes,
                always_running=always_running,
                overlapping=overlapping,
                auto_start=auto_start,
                queue_length=3,
                rapid_fail=RapidFailPolicy(enabled, max_crashes, interval),
                auto_shutdown_command=commands,
                orphan_action_command=commands,
            )
        )
        self.send(Start())

    # the fake driver

    def send(self, event: Event) -> list[Action]:
        machine = self.machine
        retiring_before = {id for id, view in machine.workers.items() if view.retiring}
        state_before = machine.state
        actions = machine.handle(event)
        for action in actions:
            match action:
                case Spawn(count=count):
                    assert machine.state not in (
                        PoolState.STOPPING,
                        PoolState.STOPPED,
                        PoolState.DISABLED,
                    )
                    for _ in range(count):
                        machine.handle(WorkerSpawned(self.next_id, debugged=self.armed))
                        self.armed = False  # one worker, then it switches itself off
                        self.next_id += 1
                case Retire(id=id):
                    assert id not in retiring_before, "a worker retired twice"
                    retiring_before.add(id)
                case Enqueue():
                    self.queue += 1
                case RefuseQueue() | RefuseExpired():
                    self.queue = 0
                case Disable(count=count):
                    assert state_before is not PoolState.DISABLED, "disabled twice"
                    assert RefuseQueue("pool_disabled") in actions
                    policy = machine.config.rapid_fail
                    assert policy.enabled
                    assert count == len(machine.failures.times) == policy.max_crashes
                case RunAutoShutdownCommand():
                    assert machine.config.auto_shutdown_command
                    assert actions.index(action) > next(
                        i for i, a in enumerate(actions) if isinstance(a, Disable)
                    )
                case RunOrphanAction(id=id):
                    assert machine.config.orphan_action_command
                    assert id in machine.orphans
                case ReapOrphans():
                    self.reap_every_orphan()
        return actions

    def reap_every_orphan(self) -> None:
        """What the driver's SIGKILL leads to: each orphan ends and exits,
        and neither counts again nor starts anything."""
        for id in sorted(self.machine.orphans):
            self.reap(id, counts=True)

    def reap(self, id: int, *, counts: bool) -> None:
        machine = self.machine
        window, consecutive = machine.failures, machine.consecutive_failures
        assert machine.handle(WorkerEnded(id, counts, self.now)) == []
        assert machine.handle(WorkerExited(id, killed_by_master=True, queued=self.queue)) == []
        assert (machine.failures, machine.consecutive_failures) == (window, consecutive)
        assert id not in machine.orphans

    def expect_failure(self, actions: list[Action], was: PoolState) -> None:
        """One failure was counted now: the window is the model, and the pool
        is disabled exactly when the window is full (and only once), unless it
        is stopping or stopped: then its stop goes on."""
        self.failure_times.append(self.now)
        policy = self.machine.config.rapid_fail
        in_window = [t for t in self.failure_times if self.now - t < policy.interval]
        disable = policy.enabled and len(in_window) >= policy.max_crashes
        assert FailureCounted(min(len(in_window), max(policy.max_crashes, 1))) in actions
        serving = was in (PoolState.STARTED, PoolState.STARTUP_FAILED)
        expected = disable and serving
        assert (Disable(min(len(in_window), policy.max_crashes)) in actions) == expected
        if expected:
            assert self.machine.state is PoolState.DISABLED

    def ids(self, *phases: WorkerPhase) -> list[int]:
        return [id for id, view in self.machine.workers.items() if view.phase in phases]

    # rules

    @rule()
    def resume(self) -> None:
        was = self.machine.state
        try:
            self.send(Resume())
        except IllegalTransition:
            assert self.machine.state is was
            return
        if was is not PoolState.STARTED:
            assert self.machine.failures == FailureWindow()
            self.failure_times = []

    @rule(reason=st.sampled_from(list(StopReason)))
    def stop(self, reason: StopReason) -> None:
        self.send(Stop(reason, 10.0))

    @rule()
    def stop_now(self) -> None:
        self.send(StopNow())

    @rule(all_busy=st.booleans())
    def request(self, all_busy: bool) -> None:
        state = self.machine.state
        actions = self.send(
            RequestArrived(self.queue, all_busy and bool(self.ids(WorkerPhase.READY)))
        )
        if state is PoolState.DISABLED:
            assert actions == [Refuse("pool_disabled")]

    @rule(data=st.data())
    def worker_ready(self, data: st.DataObject) -> None:
        starting = self.ids(WorkerPhase.STARTING)
        if starting:
            self.send(WorkerReady(data.draw(st.sampled_from(starting))))
            self.queue = 0  # the driver dispatches what waited

    @rule(
        data=st.data(),
        crashed=st.booleans(),
        reported=st.booleans(),
        timed_out=st.booleans(),
    )
    def worker_ends(
        self, data: st.DataObject, crashed: bool, reported: bool, timed_out: bool
    ) -> None:
        live = self.ids(WorkerPhase.STARTING, WorkerPhase.READY, WorkerPhase.DRAINING)
        if not live:
            return
        id = data.draw(st.sampled_from(live))
        view = self.machine.workers[id]
        reported = reported and not view.ever_ready
        timed_out = timed_out and not view.ever_ready and not reported
        # As the event classification rules: a planned end never counts.
        counts = reported or timed_out or (crashed and view.asked is None)
        before, was = self.machine.failures, self.machine.state
        actions = self.send(WorkerEnded(id, counts, self.now))
        if counts and not view.debugged:
            self.expect_failure(actions, was)
        else:  # planned, or a debugger held it
            assert self.machine.failures == before
            assert not any(isinstance(a, FailureCounted | Disable) for a in actions)
        killed = timed_out or view.asked is not None
        consecutive = self.machine.consecutive_failures
        self.send(
            WorkerExited(
                id,
                reported_startup_failure=reported,
                timed_out=timed_out,
                killed_by_master=killed,
                queued=self.queue,
            )
        )
        if view.debugged:
            assert self.machine.consecutive_failures == consecutive

    @rule(data=st.data())
    def debugger_attaches(self, data: st.DataObject) -> None:
        live = self.ids(WorkerPhase.STARTING, WorkerPhase.READY)
        if live:
            id = data.draw(st.sampled_from(live))
            assert self.send(WorkerDebugged(id)) == []
            assert self.machine.workers[id].debugged

    @rule()
    def debug_startup(self) -> None:
        try:
            self.send(DebugArmed())
        except IllegalTransition:
            assert self.machine.state is PoolState.DISABLED
            return
        self.armed = True

    @rule(data=st.data())
    def worker_orphaned(self, data: st.DataObject) -> None:
        """A hang, a start-up past its limit or a lost channel, with orphan_worker on."""
        live = self.ids(WorkerPhase.STARTING, WorkerPhase.READY, WorkerPhase.DRAINING)
        if not live:
            return
        id = data.draw(st.sampled_from(live))
        view = self.machine.workers[id]
        before, was = self.machine.failures, self.machine.state
        consecutive = self.machine.consecutive_failures
        actions = self.send(WorkerOrphaned(id, self.now, self.queue))
        assert id not in self.machine.workers and id in self.machine.orphans
        assert (RunOrphanAction(id) in actions) == self.machine.config.orphan_action_command
        if view.debugged:
            assert self.machine.failures == before
            assert not any(isinstance(a, FailureCounted | Disable) for a in actions)
            assert self.machine.consecutive_failures == consecutive
        else:
            self.expect_failure(actions, was)

    @rule(data=st.data(), counts=st.booleans())
    def orphan_reaped(self, data: st.DataObject, counts: bool) -> None:
        """`poolwarden wp reap PID`: its end, however classified, is no news."""
        if self.machine.orphans:
            self.reap(data.draw(st.sampled_from(sorted(self.machine.orphans))), counts=counts)

    @rule()
    def spawn_fails(self) -> None:
        if self.machine.may_spawn:
            was = self.machine.state
            self.expect_failure(self.send(SpawnFailed(self.now, self.queue)), was)

    @rule()
    def recycle_all(self) -> None:
        try:
            self.send(RecycleRequested())
        except IllegalTransition:
            assert self.machine.state is not PoolState.STARTED

    @rule(data=st.data())
    def recycle_one(self, data: st.DataObject) -> None:
        if self.machine.state is PoolState.STARTED and not self.machine.recycling:
            ready = [
                id for id in self.ids(WorkerPhase.READY) if not self.machine.workers[id].retiring
            ]
            if ready:
                self.send(RecycleRequested((data.draw(st.sampled_from(ready)),)))

    @rule(data=st.data())
    def idle(self, data: st.DataObject) -> None:
        ready = [id for id in self.ids(WorkerPhase.READY) if not self.machine.workers[id].retiring]
        if ready and self.machine.state is PoolState.STARTED and not self.machine.recycling:
            self.send(IdleTimeout(data.draw(st.sampled_from(ready))))

    @rule(seconds=st.sampled_from([0.5, 3.0, 30.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: self.machine.respawn_pending)
    @rule()
    def respawn_due(self) -> None:
        self.send(RespawnDue(self.queue))

    @rule()
    def all_busy(self) -> None:
        if self.ids(WorkerPhase.READY):
            self.send(AllBusy())

    @rule()
    def queue_expires(self) -> None:
        if self.queue:
            held = any(
                view.debugged and view.phase is WorkerPhase.STARTING
                for view in self.machine.workers.values()
            )
            actions = self.send(QueueWaitExpired())
            assert (actions == []) == held  # a debugger holds a start: they wait

    @rule()
    def settings_changed(self) -> None:
        self.send(SettingsChanged())

    # invariants

    @invariant()
    def a_pool_that_may_not_start_workers_has_no_queue(self) -> None:
        if self.machine.state in (PoolState.STOPPING, PoolState.STOPPED, PoolState.DISABLED):
            assert self.queue == 0

    @invariant()
    def never_more_serving_workers_than_processes(self) -> None:
        machine = self.machine
        staying = [id for id in machine.serving if machine.workers[id].asked is None]
        assert len(staying) <= machine.config.processes

    @invariant()
    def disabled_only_by_rapid_fail_protection(self) -> None:
        """(And by a full window: checked when `Disable` is performed; later
        failures of its draining workers slide the window on.)"""
        if self.machine.state is PoolState.DISABLED:
            assert self.machine.config.rapid_fail.enabled

    @invariant()
    def orphans_are_no_capacity(self) -> None:
        machine = self.machine
        assert machine.orphans.isdisjoint(machine.workers)
        assert machine.orphans.isdisjoint(machine.serving)

    @invariant()
    def the_window_is_the_model(self) -> None:
        policy = self.machine.config.rapid_fail
        times = self.machine.failures.times
        assert len(times) <= max(policy.max_crashes, 1)
        assert list(times) == self.failure_times[len(self.failure_times) - len(times) :]

    @invariant()
    def a_recycle_under_way_has_retiring_workers_or_none_left(self) -> None:
        machine = self.machine
        if machine.state in (PoolState.STOPPING, PoolState.STOPPED):
            assert not machine.recycling
        if not machine.recycling:
            return
        assert all(view.phase is not WorkerPhase.EXITED for view in machine.workers.values())

    @invariant()
    def a_stopped_pool_has_no_workers(self) -> None:
        if self.machine.state is PoolState.STOPPED and self.machine.stop_reason is not None:
            assert not self.ids(WorkerPhase.STARTING, WorkerPhase.READY)


PoolHistory.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_pool_histories = PoolHistory.TestCase
