"""A worker's health timing without processes or a real clock: each rule on
a fake clock, then random histories checked against their properties."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from poolwarden.activation.worker_health import (
    DeclareHung,
    HealthAction,
    HealthConfig,
    HealthPhase,
    SendPing,
    StartupTimedOut,
    WorkerHealth,
)


def ready_worker(
    at: float = 0.0, *, interval: float = 30.0, response: float = 90.0
) -> WorkerHealth:
    """A worker spawned at `at` and Ready at once."""
    health = WorkerHealth(HealthConfig(ping_interval=interval, ping_response_time=response))
    health.spawned(at)
    health.ready(at)
    return health


# the start-up time limit


def test_a_worker_not_ready_within_the_limit_times_out_at_the_limit() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=90.0))
    assert health.spawned(10.0) == []
    assert health.deadline == 100.0
    assert health.tick(99.999) == []
    assert health.tick(100.0) == [StartupTimedOut()]
    assert health.phase is HealthPhase.DONE
    assert health.deadline is None
    assert health.tick(1000.0) == []  # judged once


def test_a_worker_ready_in_time_does_not_time_out() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=5.0, pinging=False))
    health.spawned(0.0)
    assert health.ready(4.9) == []
    assert health.deadline is None
    assert health.tick(5.0) == []


def test_ready_counts_until_the_verdict_even_if_the_timer_is_late() -> None:
    """The loop handles the Ready message before the overdue timer: it wins."""
    health = WorkerHealth(HealthConfig(startup_time_limit=5.0))
    health.spawned(0.0)
    health.ready(5.5)
    assert health.tick(5.5) == []
    assert health.phase is HealthPhase.READY


def test_no_start_up_limit_when_it_is_zero() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=0.0))
    health.spawned(0.0)
    assert health.deadline is None
    assert health.tick(1e9) == []


def test_a_worker_spawned_under_a_debugger_has_no_start_up_limit() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=5.0))
    health.spawned(0.0, debugged=True)
    assert health.deadline is None
    health.ready(100.0)
    assert health.deadline is None  # nor pings once Ready
    assert health.tick(1e6) == []


def test_a_debugger_attached_while_starting_suspends_the_limit() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=5.0))
    health.spawned(0.0)
    assert health.debugged() == []
    assert health.deadline is None
    assert health.tick(5.0) == []


def test_a_draining_worker_not_yet_ready_is_not_timed_out() -> None:
    """It is being ended anyway (a stop or a disabled pool drained it)."""
    health = WorkerHealth(HealthConfig(startup_time_limit=5.0))
    health.spawned(0.0)
    health.draining()
    assert health.tick(5.0) == []


# pings


def test_pings_start_one_interval_after_ready() -> None:
    health = WorkerHealth(HealthConfig(startup_time_limit=90.0, ping_interval=30.0))
    health.spawned(0.0)
    assert health.deadline == 90.0  # only the start-up limit before Ready
    health.ready(12.0)
    assert health.deadline == 42.0
    assert health.tick(41.0) == []
    assert health.tick(42.0) == [SendPing(1)]


def test_an_answered_ping_is_followed_by_the_next_one_an_interval_later() -> None:
    health = ready_worker(interval=30.0, response=90.0)
    assert health.tick(30.0) == [SendPing(1)]
    assert health.deadline == 60.0  # the next ping comes before the hang deadline
    assert health.pong(1) == []
    assert health.outstanding is None
    assert health.tick(60.0) == [SendPing(2)]
    health.pong(2)
    assert health.tick(90.0) == [SendPing(3)]


def test_an_unanswered_ping_declares_the_worker_hung_after_the_response_time() -> None:
    health = ready_worker(interval=30.0, response=90.0)
    assert health.tick(30.0) == [SendPing(1)]
    # Turns while it is outstanding send no second ping.
    assert health.tick(60.0) == []
    assert health.tick(90.0) == []
    assert health.deadline == 120.0
    assert health.tick(120.0) == [DeclareHung(1)]
    assert health.phase is HealthPhase.DONE
    assert health.deadline is None


def test_a_short_response_time_is_judged_before_the_next_ping() -> None:
    health = ready_worker(interval=30.0, response=1.0)
    health.tick(30.0)
    assert health.deadline == 31.0
    assert health.tick(31.0) == [DeclareHung(1)]


def test_an_answer_to_an_older_ping_does_not_count() -> None:
    health = ready_worker(interval=1.0, response=10.0)
    health.tick(1.0)
    health.pong(1)
    health.tick(2.0)
    assert health.pong(1) == []  # a duplicate of the first answer
    assert health.outstanding == 2
    assert health.tick(12.0) == [DeclareHung(2)]


def test_a_late_pong_before_the_verdict_still_counts() -> None:
    """The loop handles the Pong before the overdue timer: no hang."""
    health = ready_worker(interval=30.0, response=90.0)
    health.tick(30.0)
    health.pong(1)
    assert health.tick(125.0) == [SendPing(2)]


def test_a_late_timer_sends_one_ping_and_plans_from_now() -> None:
    """A blocked master loop does not make up for missed turns with a burst."""
    health = ready_worker(interval=1.0, response=5.0)
    assert health.tick(4.5) == [SendPing(1)]
    assert health.deadline == 5.5
    health.pong(1)
    assert health.tick(5.5) == [SendPing(2)]


def test_an_early_timer_decides_nothing() -> None:
    health = ready_worker(interval=30.0)
    assert health.tick(29.9) == []
    assert health.deadline == 30.0


@pytest.mark.parametrize(
    "config",
    [HealthConfig(pinging=False), HealthConfig(ping_interval=0.0)],
    ids=["pinging off", "no interval"],
)
def test_no_pings_when_they_are_off(config: HealthConfig) -> None:
    health = WorkerHealth(config)
    health.spawned(0.0)
    health.ready(1.0)
    assert health.deadline is None
    assert health.tick(1e6) == []


def test_a_draining_worker_gets_no_new_ping_but_the_outstanding_one_counts() -> None:
    health = ready_worker(interval=30.0, response=90.0)
    health.tick(30.0)
    health.draining()
    assert health.deadline == 120.0
    assert health.tick(60.0) == []
    assert health.tick(120.0) == [DeclareHung(1)]


def test_a_draining_worker_that_answered_is_left_alone() -> None:
    health = ready_worker(interval=30.0)
    health.draining()
    assert health.deadline is None


def test_a_debugger_attached_to_a_ready_worker_forgets_the_outstanding_ping() -> None:
    health = ready_worker(interval=30.0, response=90.0)
    health.tick(30.0)
    health.debugged()
    assert health.outstanding is None
    assert health.deadline is None
    assert health.tick(120.0) == []
    health.pong(1)
    assert health.tick(1e6) == []


def test_an_ended_worker_is_judged_no_more() -> None:
    health = ready_worker(interval=30.0)
    health.tick(30.0)
    assert health.ended() == []
    assert health.deadline is None
    assert health.tick(1e6) == []
    assert health.ready(1e6) == [] and health.deadline is None


def test_a_hung_worker_is_judged_once_even_if_it_answers_afterwards() -> None:
    health = ready_worker(interval=1.0, response=1.0)
    health.tick(1.0)
    health.tick(2.0)
    assert health.pong(1) == []
    assert health.tick(3.0) == []
    assert health.deadline is None


def test_ready_twice_or_after_a_verdict_changes_nothing() -> None:
    health = ready_worker(interval=30.0)
    assert health.ready(10.0) == []
    assert health.deadline == 30.0
    timed_out = WorkerHealth(HealthConfig(startup_time_limit=1.0))
    timed_out.spawned(0.0)
    timed_out.tick(1.0)
    assert timed_out.ready(1.5) == []
    assert timed_out.deadline is None


# random histories on a fake clock


def sometimes(*times: float) -> st.SearchStrategy[float | None]:
    """A time something happens to the worker, or (twice as often) never: a
    history where everything happens early tells little."""
    return st.sampled_from([None] * (2 * len(times)) + list(times))


class HealthHistory(RuleBasedStateMachine):
    """A fake driver and worker around one `WorkerHealth` on a fake clock.

    The worker's life (Ready, a debugger, a drain, its end) is drawn as a
    schedule; the worker answers each ping after a drawn delay, or never;
    the driver wakes the policy at each deadline, as its loop timer does, or
    early, or late when its loop was blocked. What arrives at the same time
    as a deadline is handled first, as the loop handles I/O before timers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = HealthConfig()
        self.health = WorkerHealth(self.config)
        self.now = 0.0
        self.life: list[tuple[float, str]] = []
        """(time, what) still to happen: ready, debugged, draining, ended."""
        self.ready_at: float | None = None
        self.debugged_at: float | None = None
        self.draining_at: float | None = None
        self.ended_at: float | None = None
        self.spawned_debugged = False
        self.pongs: list[tuple[float, int]] = []
        """(arrival time, seq): answers on their way."""
        self.sent: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        """seq: when its answer arrived."""
        self.all_in_time = True
        """Every ping so far was answered within the response time."""
        self.verdicts: list[tuple[float, HealthAction]] = []
        self.pings: list[tuple[float, int]] = []
        self.blocked = False
        """The master's loop was blocked once: its timer fired late."""

    @initialize(
        startup=st.sampled_from([0.0, 1.0, 5.0]),
        pinging=st.sampled_from([True, True, True, False]),
        interval=st.sampled_from([0.5, 1.0, 3.0, 0.0]),
        response=st.sampled_from([0.25, 1.0, 2.0, 5.0]),
        debugged=st.sampled_from([False] * 7 + [True]),
        ready=st.sampled_from([0.0, 0.0, 0.5, 0.99, 1.0, 2.0, 4.9, 5.0, 6.0, None]),
        debugger=sometimes(0.99, 2.0, 6.0),
        drain=sometimes(1.0, 2.0, 6.0, 12.0),
        end=sometimes(0.0, 1.0, 6.0, 12.0),
    )
    def spawn(
        self,
        startup: float,
        pinging: bool,
        interval: float,
        response: float,
        debugged: bool,
        ready: float | None,
        debugger: float | None,
        drain: float | None,
        end: float | None,
    ) -> None:
        self.config = HealthConfig(startup, pinging, interval, response)
        self.health = WorkerHealth(self.config)
        self.spawned_debugged = debugged
        if debugged:
            self.debugged_at = 0.0
        schedule = [("ready", ready), ("debugged", debugger), ("draining", drain), ("ended", end)]
        self.life = sorted((at, what) for what, at in schedule if at is not None)
        assert self.health.spawned(0.0, debugged=debugged) == []

    # the fake driver and worker

    def perform(self, actions: list[HealthAction], data: st.DataObject) -> None:
        for action in actions:
            if isinstance(action, SendPing):
                assert action.seq == len(self.pings) + 1, "pings are numbered 1, 2, 3..."
                if action.seq > 1:
                    assert action.seq - 1 in self.answered, "one ping outstanding at most"
                self.pings.append((self.now, action.seq))
                self.sent[action.seq] = self.now
                response = self.config.ping_response_time
                # Mostly in time (a hang ends the history), sometimes late or never.
                in_time = st.floats(0.0, response, exclude_max=True)
                delay = data.draw(
                    st.one_of(
                        *[in_time] * 5,
                        st.sampled_from([0.0, response / 2, response, response * 1.5]),
                        st.none(),
                    ),
                    label="pong",
                )
                if delay is None or delay >= self.config.ping_response_time:
                    self.all_in_time = False
                if delay is not None:
                    self.pongs.append((self.now + delay, action.seq))
                    if data.draw(st.booleans(), label="answered twice"):
                        # A stale answer arriving later says nothing of a later ping.
                        again = data.draw(st.floats(0.0, response * 4), label="again")
                        self.pongs.append((self.now + delay + again, action.seq))
            else:
                self.verdicts.append((self.now, action))

    def tick(self, data: st.DataObject) -> None:
        self.perform(self.health.tick(self.now), data)
        deadline = self.health.deadline
        assert deadline is None or deadline > self.now, "a tick left something due"

    def life_event(self, what: str) -> None:
        phase = self.health.phase
        if what == "ready":
            assert self.health.ready(self.now) == []
            if phase is HealthPhase.STARTING:
                self.ready_at = self.now
        elif what == "debugged":
            assert self.health.debugged() == []
            self.debugged_at = self.now if self.debugged_at is None else self.debugged_at
        elif what == "draining":
            assert self.health.draining() == []
            self.draining_at = self.now if self.draining_at is None else self.draining_at
        else:
            assert self.health.ended() == []
            assert self.health.deadline is None
            self.ended_at = self.now if self.ended_at is None else self.ended_at

    def arrive(self, until: float) -> bool:
        """Deliver the earliest pong or life event due by `until`; False if none."""
        due = [(at, 0, seq, "") for at, seq in self.pongs if at <= until]
        due += [(at, 1, 0, what) for at, what in self.life if at <= until]
        if not due:
            return False
        at, kind, seq, what = min(due)
        self.now = max(self.now, at)
        if kind == 0:
            self.pongs.remove((at, seq))
            self.answered.setdefault(seq, self.now)
            assert self.health.pong(seq) == []
            return True
        self.life.remove((at, what))
        self.life_event(what)
        return True

    def run_until(self, until: float, data: st.DataObject) -> None:
        """Time passes to `until`, the timer firing at each deadline."""
        while True:
            deadline = self.health.deadline
            if deadline is not None:
                assert deadline >= self.now, "a deadline in the past"
            if self.arrive(until if deadline is None else min(until, deadline)):
                continue
            if deadline is None or deadline > until:
                break
            self.now = deadline
            self.tick(data)
        self.now = until

    # rules

    @rule(data=st.data(), seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 7.0]))
    def time_passes(self, data: st.DataObject, seconds: float) -> None:
        self.run_until(self.now + seconds, data)

    @rule(data=st.data(), early=st.floats(0.001, 0.2))
    def the_timer_fires_early(self, data: st.DataObject, early: float) -> None:
        """A wake-up before any deadline decides nothing."""
        deadline = self.health.deadline
        if deadline is None:
            return
        self.run_until(max(self.now, deadline - early), data)
        deadline = self.health.deadline  # what arrived meanwhile may have moved it
        if deadline is None:
            return
        assert self.now < deadline
        assert self.health.tick(self.now) == []
        assert self.health.deadline == deadline

    @rule(data=st.data(), seconds=st.sampled_from([0.3, 1.5, 6.0]))
    def the_loop_is_blocked(self, data: st.DataObject, seconds: float) -> None:
        """Nothing runs for a while; then what arrived meanwhile is read, and
        the overdue timer fires, once."""
        self.now += seconds
        while self.arrive(self.now):
            pass
        self.blocked = True
        self.tick(data)

    @precondition(lambda self: self.health.outstanding is not None)
    @rule(what=st.sampled_from(["debugged", "draining"]))
    def while_a_ping_is_on_its_way(self, what: str) -> None:
        """A debugger attaches, or the pool drains the worker, then."""
        self.life_event(what)

    # properties

    @invariant()
    def never_hung_if_every_ping_was_answered_in_time(self) -> None:
        if self.all_in_time:
            assert not any(isinstance(v, DeclareHung) for _, v in self.verdicts)

    @invariant()
    def never_judged_by_pings_before_ready(self) -> None:
        if self.ready_at is None:
            assert self.pings == []
            assert not any(isinstance(v, DeclareHung) for _, v in self.verdicts)

    @invariant()
    def pings_start_an_interval_after_ready_and_keep_their_pace(self) -> None:
        if not self.pings:
            return
        assert self.config.pinging and self.config.ping_interval > 0
        assert self.ready_at is not None
        times = [self.ready_at] + [at for at, _ in self.pings]
        # (Less a rounding error: the deadline is ready_at + interval.)
        assert all(b - a >= self.config.ping_interval - 1e-9 for a, b in pairwise(times))

    @invariant()
    def a_debugged_worker_is_never_judged_nor_pinged(self) -> None:
        if self.debugged_at is None:
            return
        assert all(at <= self.debugged_at for at, _ in self.pings)
        assert all(at <= self.debugged_at for at, _ in self.verdicts)
        assert self.health.deadline is None, "nothing to wake a debugged worker for"
        if self.spawned_debugged:
            assert self.pings == [] and self.verdicts == []

    @invariant()
    def a_draining_worker_gets_no_new_ping(self) -> None:
        if self.draining_at is not None:
            assert all(at <= self.draining_at for at, _ in self.pings)

    @invariant()
    def at_most_one_verdict(self) -> None:
        assert len(self.verdicts) <= 1

    @invariant()
    def a_hang_is_declared_exactly_when_a_ping_went_unanswered_too_long(self) -> None:
        for at, verdict in self.verdicts:
            if isinstance(verdict, DeclareHung):
                assert self.answered.get(verdict.seq, at + 1) > at, "it had answered"
                due = self.sent[verdict.seq] + self.config.ping_response_time
                assert at == due or (self.blocked and at > due)
        outstanding = self.health.outstanding
        if outstanding is not None and self.health.phase is not HealthPhase.DONE:
            # The driver woke it at the deadline: no overdue ping stays unjudged.
            assert self.now < self.sent[outstanding] + self.config.ping_response_time

    @invariant()
    def a_ping_unanswered_past_its_deadline_is_a_hang(self) -> None:
        """The model's view: the last ping, unanswered by its deadline while
        nothing suspended or ended the judging, has made the worker hung."""
        if not self.pings:
            return
        sent, seq = self.pings[-1]
        due = sent + self.config.ping_response_time
        answered = self.answered.get(seq)
        if self.now < due or (answered is not None and (answered <= due or self.blocked)):
            return  # (a blocked loop reads a late answer before its overdue timer)
        # (After a blocked loop, what it read first may have come before the verdict.)
        preempted_by = self.now if self.blocked else due
        if any(at is not None and at <= preempted_by for at in (self.debugged_at, self.ended_at)):
            return
        assert any(isinstance(v, DeclareHung) and v.seq == seq for _, v in self.verdicts)

    @invariant()
    def a_start_up_is_timed_out_exactly_at_the_limit_unless_ready_first(self) -> None:
        limit = self.config.startup_time_limit
        for at, verdict in self.verdicts:
            if isinstance(verdict, StartupTimedOut):
                assert limit > 0
                assert at == limit or (self.blocked and at > limit)
                assert self.ready_at is None or self.ready_at > at
        if (
            # (After a blocked loop, what it read first may have come before the verdict.)
            not self.blocked
            and limit > 0
            and self.now >= limit
            # (What arrives at the limit itself is handled first.)
            and (self.ready_at is None or self.ready_at > limit)
            and (self.debugged_at is None or self.debugged_at > limit)
            and (self.draining_at is None or self.draining_at > limit)
            and self.health.phase is not HealthPhase.DONE
        ):
            pytest.fail("the start-up limit passed and nothing was decided")


HealthHistory.TestCase.settings = settings(max_examples=1000, stateful_step_count=20, deadline=None)
test_health_histories = HealthHistory.TestCase
