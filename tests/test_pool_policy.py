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
    WorkerEnded,
    WorkerExited,
    WorkerPhase,
    WorkerReady,
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
    **config: object,
) -> PoolMachine:
    """A machine in `state` with `ready` Ready workers (ids 1..) then `starting` ones."""
    machine = PoolMachine(PoolConfig(**config))  # type: ignore[arg-type]
    for id in range(1, ready + starting + 1):
        machine.handle(WorkerSpawned(id))
        if id <= ready:
            machine.handle(WorkerReady(id))
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
    assert machine.handle(RequestArrived(0)) == [Refuse("startup_timeout")]


def test_a_stop_cancels_a_pending_respawn() -> None:
    machine = pool(ready=1)
    machine.handle(WorkerExited(1))
    assert machine.respawn_pending
    assert machine.handle(Stop(ADMIN, 1.0))[0] == CancelRespawn()
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
        WorkerSpawned(9),
        SpawnFailed(0.0),
        WorkerReady(2),
        StartupFailureReported(False),
        WorkerEnded(1, True, 0.0),
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
    """Random starts, stops, resumes, requests, readies, ends, recycles and
    ticks, performed by a fake driver; the invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.machine = PoolMachine()
        self.now = 0.0
        self.queue = 0
        self.next_id = 1
        self.failure_times: list[float] = []
        """The model of the rapid-fail window: failures since the last resume."""

    @initialize(
        processes=st.integers(1, 3),
        always_running=st.booleans(),
        overlapping=st.booleans(),
        max_crashes=st.integers(1, 4),
        interval=st.sampled_from([5.0, 60.0]),
        enabled=st.booleans(),
        auto_start=st.booleans(),
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
    ) -> None:
        self.machine = PoolMachine(
            PoolConfig(
                processes=processes,
                always_running=always_running,
                overlapping=overlapping,
                auto_start=auto_start,
                queue_length=3,
                rapid_fail=RapidFailPolicy(enabled, max_crashes, interval),
            )
        )
        self.send(Start())

    # the fake driver

    def send(self, event: Event) -> list[Action]:
        machine = self.machine
        retiring_before = {id for id, view in machine.workers.items() if view.retiring}
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
                        machine.handle(WorkerSpawned(self.next_id))
                        self.next_id += 1
                case Retire(id=id):
                    assert id not in retiring_before, "a worker retired twice"
                    retiring_before.add(id)
                case Enqueue():
                    self.queue += 1
                case RefuseQueue() | RefuseExpired():
                    self.queue = 0
                case Disable():
                    assert RefuseQueue("pool_disabled") in actions
        return actions

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
        if was not in (PoolState.STARTED, PoolState.STARTUP_FAILED):
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
        before = self.machine.failures
        actions = self.send(WorkerEnded(id, counts, self.now))
        if counts:
            self.failure_times.append(self.now)
            policy = self.machine.config.rapid_fail
            in_window = [t for t in self.failure_times if self.now - t < policy.interval]
            disable = policy.enabled and len(in_window) >= policy.max_crashes
            assert (Disable(min(len(in_window), policy.max_crashes)) in actions) == disable
            if disable:
                assert self.machine.state is PoolState.DISABLED
        else:
            assert self.machine.failures == before
            assert not any(isinstance(action, Disable) for action in actions)
        killed = timed_out or view.asked is not None
        self.send(
            WorkerExited(
                id,
                reported_startup_failure=reported,
                timed_out=timed_out,
                killed_by_master=killed,
                queued=self.queue,
            )
        )

    @rule()
    def spawn_fails(self) -> None:
        if self.machine.may_spawn:
            self.failure_times.append(self.now)
            self.send(SpawnFailed(self.now, self.queue))

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
            self.send(QueueWaitExpired())

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
    def disabled_only_by_a_full_window(self) -> None:
        machine = self.machine
        if machine.state is PoolState.DISABLED:
            policy = machine.config.rapid_fail
            assert policy.enabled
            assert len(machine.failures.times) == policy.max_crashes

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
