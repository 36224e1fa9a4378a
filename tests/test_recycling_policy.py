"""The recycling decision, without processes: exhaustive rules and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from poolwarden.activation.recycling import Limits, WorkerFacts, decide


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
