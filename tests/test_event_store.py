"""The durable event store: SQLite in WAL mode, one writer, readers elsewhere.

Real files in a temporary directory; the durability test SIGKILLs a real
writer process and reads what it committed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolwarden.events.catalog import CATALOG, LEVEL_RANK, UnknownEventId
from poolwarden.events.store import (
    EVENTS_DB,
    Event,
    EventLogError,
    EventLogMissing,
    EventStore,
    JsonLinesSink,
    NewEvent,
    levels_at_least,
    new_event,
    one_line,
)

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    opened = EventStore.open(tmp_path / "state")
    yield opened
    opened.close()


def add(
    store: EventStore,
    event_id: int = 5009,
    message: str = "boom",
    *,
    pool: str | None = "web",
    pid: int | None = 100,
    when: float | None = 1000.0,
    fingerprint: str | None = None,
    details: dict[str, Any] | None = None,
) -> Event:
    return store.append(
        new_event(
            event_id,
            message,
            pool=pool,
            pid=pid,
            time=when,
            fingerprint=fingerprint,
            details=details,
        )
    )


# --- opening -----------------------------------------------------------------------------


def test_open_creates_the_directory_and_a_wal_database(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b"
    with EventStore.open(state) as store:
        assert store.path == str(state / EVENTS_DB)
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    raw = sqlite3.connect(state / EVENTS_DB)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        raw.close()
    with EventStore.open(state) as again:  # opening twice is fine
        assert again.query() == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    EventStore.open(tmp_path).close()
    raw = sqlite3.connect(tmp_path / EVENTS_DB)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(EventLogError, match="newer poolwarden"):
        EventStore.open(tmp_path)
    with pytest.raises(EventLogError, match="newer poolwarden"):
        EventStore.open_reader(tmp_path)


def test_reader_needs_an_existing_log_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(EventLogMissing) as missing:
        EventStore.open_reader(tmp_path)
    assert missing.value.path == str(tmp_path / EVENTS_DB)
    assert isinstance(missing.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []


def test_reader_sees_the_writers_events_and_cannot_write(store: EventStore) -> None:
    first = add(store, message="one")
    reader = EventStore.open_reader(os.path.dirname(store.path))
    try:
        assert reader.readonly
        assert [e.seq for e in reader.query()] == [first.seq]
        second = add(store, message="two")  # the writer goes on while a reader is open
        assert [e.message for e in reader.query(after_seq=first.seq)] == ["two"]
        assert reader.get(second.seq) == second
        assert reader.last_seq() == second.seq
        with pytest.raises(EventLogError, match="read-only"):
            reader.append(new_event(5009, "nope"))
        with pytest.raises(EventLogError, match="read-only"):
            reader.prune()
    finally:
        reader.close()


# --- appending ------------------------------------------------------------------------------


def test_append_numbers_levels_and_returns_what_a_reader_gets(store: EventStore) -> None:
    details = {"signal": "SIGSEGV", "in_flight": [{"path": "/x", "elapsed": 0.5}], "t": (1, 2)}
    first = add(store, 2020, "started", details=details, fingerprint=None)
    second = add(store, 5009, "line one\n  line two\ttab", fingerprint="SIGSEGV a.py:1 in f")
    assert (first.seq, second.seq) == (1, 2)
    assert first.level == CATALOG[2020].level == "info"
    assert second.level == "error"
    assert second.message == "line one line two tab"
    assert first.details == {
        "signal": "SIGSEGV",
        "in_flight": [{"path": "/x", "elapsed": 0.5}],
        "t": [1, 2],
    }
    assert store.get(1) == first and store.get(2) == second
    assert store.get(3) is None
    assert first.to_dict()["name"] == "worker_started"
    assert store.last_seq() == 2 and store.count() == 2


def test_append_without_a_time_takes_now(store: EventStore) -> None:
    import time

    before = time.time()
    event = store.append(NewEvent(event_id=2000, message="up"))
    assert before <= event.time <= time.time()
    assert event.pool is None and event.pid is None and event.details == {}


def test_unknown_ids_are_refused(store: EventStore) -> None:
    with pytest.raises(UnknownEventId):
        new_event(1234, "nope")
    with pytest.raises(UnknownEventId):
        store.append(NewEvent(event_id=1234, message="nope"))
    assert store.count() == 0


def test_one_line_flattens_and_cuts() -> None:
    assert one_line("a\nb\r\n  c") == "a b c"
    assert one_line("x" * 50, limit=10) == "x" * 9 + "…"


def test_levels_at_least() -> None:
    assert levels_at_least("info") == ("info", "warning", "error")
    assert levels_at_least("warning") == ("warning", "error")
    assert levels_at_least("error") == ("error",)
    with pytest.raises(ValueError, match="unknown level"):
        levels_at_least("fatal")


# --- querying ---------------------------------------------------------------------------------

IDS = [2020, 2025, 5009]  # info, warning, error
POOLS = [None, "a", "b"]

event_specs = st.lists(
    st.tuples(st.sampled_from(IDS), st.sampled_from(POOLS), st.integers(0, 100)),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    specs=event_specs,
    pool=st.sampled_from(POOLS),
    event_id=st.sampled_from([None, *IDS]),
    level=st.sampled_from([None, "info", "warning", "error"]),
    since=st.one_of(st.none(), st.integers(0, 101)),
    after_seq=st.one_of(st.none(), st.integers(0, 13)),
    limit=st.one_of(st.none(), st.integers(0, 13)),
)
def test_query_matches_a_plain_filter(
    specs: list[tuple[int, str | None, int]],
    pool: str | None,
    event_id: int | None,
    level: str | None,
    since: int | None,
    after_seq: int | None,
    limit: int | None,
) -> None:
    with tempfile.TemporaryDirectory() as directory, EventStore.open(directory) as store:
        stored = [
            add(store, spec_id, f"e{index}", pool=spec_pool, when=float(when))
            for index, (spec_id, spec_pool, when) in enumerate(specs)
        ]
        expected = [
            e
            for e in stored
            if (pool is None or e.pool == pool)
            and (event_id is None or e.event_id == event_id)
            and (level is None or LEVEL_RANK[e.level] >= LEVEL_RANK[level])
            and (since is None or e.time >= since)
            and (after_seq is None or e.seq > after_seq)
        ]
        filters = {"pool": pool, "event_id": event_id, "level": level}
        got = store.query(since=since, after_seq=after_seq, limit=limit, **filters)
        assert got == (expected[-limit:] if limit else [] if limit == 0 else expected)
        assert store.count(since=since, after_seq=after_seq, **filters) == len(expected)


def test_groups_count_repeats_of_one_fingerprint(store: EventStore) -> None:
    add(store, 2020, "started", when=1.0)  # no fingerprint: not a failure
    add(store, 5009, "segv 1", pool="web", when=10.0, fingerprint="SIGSEGV a.py:3 in f")
    add(store, 5009, "exit 3", pool="web", when=20.0, fingerprint="exit 3")
    add(store, 5009, "segv 2", pool="api", when=30.0, fingerprint="SIGSEGV a.py:3 in f")
    last = add(store, 5009, "segv 3", pool="web", when=40.0, fingerprint="SIGSEGV a.py:3 in f")

    groups = store.groups()
    assert [g.fingerprint for g in groups] == ["exit 3", "SIGSEGV a.py:3 in f"]  # newest last
    segv = groups[1]
    assert (segv.count, segv.first_seen, segv.last_seen) == (3, 10.0, 40.0)
    assert (segv.last_seq, segv.message, segv.event_id) == (last.seq, "segv 3", 5009)
    assert segv.pools == ["api", "web"] and segv.level == "error"
    assert segv.to_dict()["name"] == "worker_ended_unexpectedly"

    web = store.groups(pool="web")
    assert [(g.fingerprint, g.count) for g in web] == [("exit 3", 1), ("SIGSEGV a.py:3 in f", 2)]
    recent = store.groups(since=25.0)
    assert [(g.fingerprint, g.count, g.first_seen) for g in recent] == [
        ("SIGSEGV a.py:3 in f", 2, 30.0)
    ]
    assert store.groups(event_id=2020) == []


# --- pruning ------------------------------------------------------------------------------------


def test_prune_by_age_keeps_the_newest(store: EventStore) -> None:
    day = 86400.0
    for age in (40, 31, 29, 1, 0):
        add(store, message=f"{age} days old", when=100 * day - age * day)
    deleted = store.prune(max_age_seconds=30 * day, max_bytes=None, now=100 * day)
    assert deleted == 2
    assert [e.message for e in store.query()] == ["29 days old", "1 days old", "0 days old"]
    assert store.prune(max_age_seconds=30 * day, max_bytes=None, now=100 * day) == 0


def test_prune_by_size_keeps_the_newest_and_shrinks(store: EventStore) -> None:
    padding = "x" * 4000
    for index in range(300):
        add(store, message=f"event {index}", when=float(index), details={"pad": padding})
    before = store.size()
    assert before > 1_000_000
    limit = 200 * 1024
    deleted = store.prune(max_age_seconds=None, max_bytes=limit, now=1000.0)
    kept = store.query()
    assert store.size() <= limit
    assert deleted == 300 - len(kept) and 0 < len(kept) < 300
    assert [e.seq for e in kept] == list(range(301 - len(kept), 301))  # the newest, contiguous
    assert store.prune(max_age_seconds=None, max_bytes=limit) == 0  # under the limit: nothing


def test_sequence_numbers_are_never_reused(store: EventStore) -> None:
    for index in range(5):
        add(store, message=str(index), when=float(index))
    assert store.prune(max_age_seconds=1.0, max_bytes=None, now=1e9) == 5
    assert store.query() == [] and store.last_seq() == 5
    assert add(store).seq == 6
    store.close()
    with EventStore.open(os.path.dirname(store.path)) as reopened:
        assert add(reopened).seq == 7


def test_prune_defaults_are_thirty_days_and_a_hundred_mebibytes(store: EventStore) -> None:
    add(store, message="old", when=0.0)
    add(store, message="new", when=31 * 86400.0)
    assert store.prune(now=31 * 86400.0 + 1) == 1  # older than 30 days
    assert [e.message for e in store.query()] == ["new"]
    from poolwarden.events.store import DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES

    assert (DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES) == (30 * 86400.0, 100 * 1024 * 1024)


# --- sinks ---------------------------------------------------------------------------------------


def test_json_lines_sink_writes_one_line_per_event(tmp_path: Path) -> None:
    stream = io.StringIO()
    sink = JsonLinesSink(tmp_path / "events.jsonl", stream)
    with EventStore.open(tmp_path, sinks=[sink]) as store:
        first = add(store, 5009, "crash", details={"signal": "SIGSEGV", "text": "é\nx"})
        second = add(store, 2020, "started")
    lines = (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert stream.getvalue().splitlines() == lines
    decoded = [json.loads(line) for line in lines]
    assert decoded[0] == {**first.to_dict(), "name": "worker_ended_unexpectedly"}
    assert decoded[1]["seq"] == second.seq and decoded[1]["name"] == "worker_started"


def test_json_lines_sink_reopens_after_a_move(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonLinesSink(path)
    with EventStore.open(tmp_path, sinks=[sink]) as store:
        add(store, message="before")
        path.rename(tmp_path / "events.jsonl.1")
        sink.reopen()
        add(store, message="after")
    assert json.loads(path.read_text())["message"] == "after"
    assert json.loads((tmp_path / "events.jsonl.1").read_text())["message"] == "before"


class BrokenSink:
    def write(self, event: Event) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        pass


def test_a_failing_sink_does_not_lose_the_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, "poolwarden"),
        EventStore.open(tmp_path, sinks=[BrokenSink()]) as store,
    ):
        event = add(store)
        add(store)
        assert store.get(event.seq) == event
    assert "disk full" in caplog.text
    assert caplog.text.count("disk full") == 1  # logged once, not per event


# --- durability ------------------------------------------------------------------------------------

WRITER = """
import sys
from poolwarden.events.store import EventStore, new_event
store = EventStore.open(sys.argv[1])
for index in range(3):
    store.append(new_event(5009, f"crash {index}", pool="web", pid=100 + index, details={"i": index}))
print(store.last_seq(), flush=True)
sys.stdin.read()  # hold the database open until killed
"""


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"the writer said nothing within {timeout}s")
    return process.stdout.readline()


def test_events_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert read_line(process, DEADLINE).strip() == "3"
        with EventStore.open_reader(state) as reader:  # while the writer lives
            assert [e.message for e in reader.query()] == ["crash 0", "crash 1", "crash 2"]
        process.kill()
        assert process.wait(timeout=DEADLINE) == -9
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=DEADLINE)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
    assert (state / (EVENTS_DB + "-wal")).exists()  # never checkpointed: recovered from the WAL
    with EventStore.open(state) as store:
        events = store.query()
        assert [(e.seq, e.message, e.pid, e.details) for e in events] == [
            (1, "crash 0", 100, {"i": 0}),
            (2, "crash 1", 101, {"i": 1}),
            (3, "crash 2", 102, {"i": 2}),
        ]
        assert add(store).seq == 4
