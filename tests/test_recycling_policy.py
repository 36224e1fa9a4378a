"""The recycling decision, without processes: exhaustive rules and properties."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from poolwarden.activation.recycling import Limits, WorkerFacts, decide, last_scheduled


def worker(pid: int = 1, **facts: float) -> WorkerFacts:
    defaults: dict[str, float] = {"age": 0.0, "served": 0, "idle_for": 0.0, "connections": 1}
    defaults.update(facts)
    return WorkerFacts(pid=pid, **defaults)  # type: ignore[arg-type]


def reasons(workers: list[WorkerFacts], limits: Limits, recycling: bool = False) -> list[str]:
    return [action.reason for action in decide(workers, limits, recycling=recycling)]


def test_each_limit_recycles_and_nothing_happens_below_them() -> None:
    limits = Limits(memory=100, private_memory=80, idle_timeout=60)
    assert reasons([worker(served=9, request_limit=10)], limits) == []
    assert reasons([worker(served=10, request_limit=10)], limits) == ["requests"]
    assert reasons([worker(age=30, time_limit=30)], limits) == ["time"]
    assert reasons([worker(rss=101)], limits) == ["memory"]
    assert reasons([worker(uss=81)], limits) == ["private_memory"]
    assert reasons([worker(idle_for=60, connections=0)], limits) == ["idle"]
    assert reasons([worker(idle_for=60, connections=1)], limits) == []  # holds a connection
    assert reasons([worker(idle_for=600, connections=0)], Limits()) == []  # idle off


def test_requests_come_before_time_before_memory() -> None:
    facts = worker(served=10, request_limit=10, age=99, time_limit=1, rss=500)
    assert reasons([facts], Limits(memory=100)) == ["requests"]


def test_the_hard_limit_kills_even_while_a_recycle_is_under_way() -> None:
    limits = Limits(memory_hard_limit=200, memory=100)
    workers = [worker(1, rss=300), worker(2, rss=150)]
    assert reasons(workers, limits, recycling=True) == ["memory_hard_limit"]
    assert reasons(workers, limits) == ["memory_hard_limit", "memory"]


facts = st.builds(
    WorkerFacts,
    pid=st.integers(1, 10_000),
    age=st.floats(0, 1e5, allow_nan=False),
    served=st.integers(0, 10_000),
    idle_for=st.floats(0, 1e4, allow_nan=False),
    connections=st.integers(0, 5),
    rss=st.one_of(st.none(), st.integers(0, 10**9)),
    uss=st.one_of(st.none(), st.integers(0, 10**9)),
    request_limit=st.integers(0, 5000),
    time_limit=st.floats(0, 1e5, allow_nan=False),
    replaceable=st.booleans(),
)
limits = st.builds(
    Limits,
    memory=st.integers(0, 10**9),
    private_memory=st.integers(0, 10**9),
    memory_hard_limit=st.integers(0, 10**9),
    idle_timeout=st.floats(0, 1e4, allow_nan=False),
)


@given(st.lists(facts, max_size=8, unique_by=lambda w: w.pid), limits, st.booleans())
def test_at_most_one_recycle_at_a_time_and_none_during_one(
    workers: list[WorkerFacts], given_limits: Limits, recycling: bool
) -> None:
    actions = decide(workers, given_limits, recycling=recycling)
    others = [a for a in actions if a.reason != "memory_hard_limit"]
    assert len(others) <= 1
    if recycling:
        assert others == []
    pids = [action.pid for action in actions]
    assert len(pids) == len(set(pids)), "never two actions for one worker"
    known = {w.pid for w in workers}
    assert set(pids) <= known
    for action in others:
        assert next(w for w in workers if w.pid == action.pid).replaceable
    for action in actions:
        if action.reason == "memory_hard_limit":
            facts_of = next(w for w in workers if w.pid == action.pid)
            assert (
                given_limits.memory_hard_limit
                and (facts_of.rss or 0) > given_limits.memory_hard_limit
            )


# --- the schedule ------------------------------------------------------------------


def test_the_latest_scheduled_time_is_today_or_yesterday() -> None:
    now = datetime(2026, 11, 25, 10, 30, 0)
    assert last_scheduled(now, ()) is None
    assert last_scheduled(now, ("03:00",)) == datetime(2026, 11, 25, 3, 0)
    assert last_scheduled(now, ("03:00", "15:00")) == datetime(2026, 11, 25, 3, 0)
    assert last_scheduled(now, ("15:00",)) == datetime(2026, 11, 24, 15, 0)
    assert last_scheduled(now, ("10:30:00",)) == now  # exactly now counts
    assert last_scheduled(now, ("10:30:01",)) == datetime(2026, 11, 24, 10, 30, 1)
    assert last_scheduled(now, ("00:00", "23:59:59", "10:29")) == datetime(2026, 11, 25, 10, 29)


def test_a_worker_started_before_the_scheduled_time_is_recycled_once() -> None:
    at = datetime(2026, 11, 25, 3, 0).timestamp()
    limits = Limits(scheduled_at=at)
    assert reasons([worker(started_at=at - 1)], limits) == ["schedule"]
    assert reasons([worker(started_at=at)], limits) == []  # its replacement
    assert reasons([worker(started_at=at + 60)], limits) == []
    # one at a time in a garden, none during a recycle
    garden = [worker(pid, started_at=at - 10) for pid in (1, 2, 3)]
    assert reasons(garden, limits) == ["schedule"]
    assert reasons(garden, limits, recycling=True) == []


@given(
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    entries=st.lists(st.times().map(lambda t: t.strftime("%H:%M:%S")), min_size=1, max_size=4),
)
def test_the_latest_scheduled_time_is_within_a_day_and_not_ahead(
    hour: int, minute: int, entries: list[str]
) -> None:
    now = datetime(2026, 3, 29, hour, minute, 30)
    latest = last_scheduled(now, tuple(entries))
    assert latest is not None
    assert now - timedelta(days=1) < latest <= now
    assert latest.strftime("%H:%M:%S") in entries


def test_memory_limits_are_said_in_binary_units_for_a_person() -> None:
    limits = Limits(memory=419_430_400, private_memory=300 * 1024**2)
    [action] = decide([worker(rss=716_103_680)], limits, recycling=False)
    assert action.why == "its resident memory is 683 MiB (limit 400 MiB)"
    [action] = decide([worker(uss=1_610_612_736)], Limits(private_memory=1024**3), recycling=False)
    assert action.why == "its private memory is 1.5 GiB (limit 1 GiB)"
    hard = Limits(memory_hard_limit=512 * 1024)
    [action] = decide([worker(rss=600 * 1024 + 7)], hard, recycling=True)
    assert action.why == "its resident memory is 600 KiB (hard limit 512 KiB)"
