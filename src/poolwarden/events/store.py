"""The durable event log: SQLite in WAL mode at `STATE_DIR/events.db`.

```
 master ──append(NewEvent)──▶ EventStore ──INSERT + commit──▶ events.db (+ -wal, -shm)
                                  │                               ▲
                                  └─▶ sinks: events.jsonl,        │ read-only connections
                                             stdout (JSON lines)  │
                                         poolwarden events (CLI), other readers
```

One writer, the master; any number of readers in other processes (WAL lets
them read while the master writes, and never blocks the writer). Every
`append` is its own transaction, committed before it returns: with
`synchronous=NORMAL` in WAL mode a committed event survives the master being
killed (SIGKILL, a crash), though not necessarily a power cut. The sequence
number is an `AUTOINCREMENT` key, so it is never reused, not even after
pruning has deleted every row: an
`X-Poolwarden-Event: SEQ` header a client kept always means one event.

Pruning keeps the newest events: first everything older than the age limit
(30 days by default), then the oldest until the database is below the size
limit (100 MiB by default). The database uses incremental auto-vacuum so the
freed pages leave the file without a full `VACUUM`.

The JSON lines sink writes each event as one line, for log shippers (Vector,
Fluent Bit, Promtail tail `events.jsonl`). The file is never rotated by
poolwarden; use logrotate's `copytruncate`, or call `reopen()` after a move.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import msgspec

from poolwarden.events.catalog import CATALOG, LEVEL_RANK, LEVELS, Level, UnknownEventId

log = logging.getLogger("poolwarden")

EVENTS_DB = "events.db"
EVENTS_JSONL = "events.jsonl"
SCHEMA_VERSION = 1

DEFAULT_MAX_AGE = 30 * 86400.0
"""Events older than this are pruned: 30 days, as the issue asks (and about
what a default Windows System log of 20 MiB holds on a busy IIS host)."""
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
"""The database is pruned below this size: 100 MiB."""
PRUNE_TARGET = 0.9
"""Pruning for size goes down to this fraction of the limit, so that a log at
its limit is not pruned again on the very next event."""

MAX_MESSAGE = 2000
"""Characters of an event's one-line message; the evidence goes in details."""
WRITE_TIMEOUT = 2.0
"""Seconds the writer waits for a lock (only a reader's checkpoint can hold one)."""
READ_TIMEOUT = 5.0

_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    event_id INTEGER NOT NULL,
    level TEXT NOT NULL CHECK (level IN ('info', 'warning', 'error')),
    pool TEXT,
    pid INTEGER,
    message TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_pool ON events (pool, seq);
CREATE INDEX IF NOT EXISTS events_fingerprint ON events (fingerprint, event_id)
    WHERE fingerprint IS NOT NULL;
COMMIT;
"""

_COLUMNS = "seq, time, event_id, level, pool, pid, message, details, fingerprint"


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append; the store gives it its sequence number.

    The level comes from the catalog (an event id has one level). `time` is
    unix seconds; None means now. `details` must be JSON-serializable
    (builtins or msgspec structs).
    """

    event_id: int
    message: str
    pool: str | None = None
    pid: int | None = None
    details: dict[str, Any] = {}
    fingerprint: str | None = None
    """Groups repeats of one failure; None for events that are not failures."""
    time: float | None = None


def new_event(
    event_id: int,
    message: str,
    *,
    pool: str | None = None,
    pid: int | None = None,
    details: dict[str, Any] | None = None,
    fingerprint: str | None = None,
    time: float | None = None,
) -> NewEvent:
    """A `NewEvent`, refused at once (`UnknownEventId`) if the catalog lacks the id."""
    if event_id not in CATALOG:
        raise UnknownEventId(event_id)
    return NewEvent(
        event_id=event_id,
        message=message,
        pool=pool,
        pid=pid,
        details=details or {},
        fingerprint=fingerprint,
        time=time,
    )


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """An event as stored."""

    seq: int
    time: float
    event_id: int
    level: Level
    pool: str | None
    pid: int | None
    message: str
    details: dict[str, Any]
    fingerprint: str | None

    @property
    def name(self) -> str:
        """The catalog's name for the id (`unknown` for an id from a newer version)."""
        entry = CATALOG.get(self.event_id)
        return entry.name if entry else "unknown"

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data; `name` is added from the catalog."""
        data = msgspec.structs.asdict(self)
        data["name"] = self.name
        return data


class Group(msgspec.Struct, frozen=True, kw_only=True):
    """Repeats of one failure: the events sharing a fingerprint (and id)."""

    fingerprint: str
    event_id: int
    level: Level
    count: int
    first_seen: float
    last_seen: float
    last_seq: int
    message: str
    """The newest event's message, as a sample."""
    pools: list[str]

    def to_dict(self) -> dict[str, Any]:
        data = msgspec.structs.asdict(self)
        entry = CATALOG.get(self.event_id)
        data["name"] = entry.name if entry else "unknown"
        return data


class EventLogError(Exception):
    """The event log cannot be used (a newer schema, a read-only store written to)."""


class EventLogMissing(EventLogError, FileNotFoundError):
    """There is no event log at `path` (no server ever ran with this state directory)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no event log at {path}")
        self.path = path


class Sink(Protocol):
    """Somewhere each appended event is copied to (after it is committed)."""

    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


def encode_json_line(event: Event) -> bytes:
    """One event as one line of JSON, newline included (what the sinks write)."""
    return msgspec.json.encode(event.to_dict()) + b"\n"


class JsonLinesSink:
    """Each event as one JSON line, to a file (appended) and/or a text stream.

    Each line is one `write(2)` to a file opened `O_APPEND`, so a shipper
    tailing the file never reads half a line from a concurrent writer, and
    logrotate's `copytruncate` works.
    """

    def __init__(self, path: str | os.PathLike[str] | None, stream: TextIO | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.stream = stream
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.reopen()

    def reopen(self) -> None:
        """Open the file again (after logrotate moved it away)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self.path is not None:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, 0o644)

    def write(self, event: Event) -> None:
        line = encode_json_line(event)
        with self._lock:
            if self._fd is not None:
                view = memoryview(line)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
            if self.stream is not None:
                self.stream.write(line.decode())
                self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line (runs of whitespace, newlines included, become one
    space), cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def levels_at_least(level: str) -> tuple[str, ...]:
    """`warning` → (`warning`, `error`); ValueError for an unknown level."""
    if level not in LEVEL_RANK:
        raise ValueError(f"unknown level {level!r} (use one of {', '.join(LEVELS)})")
    return LEVELS[LEVEL_RANK[level] :]


class EventStore:
    """The event log of one state directory.

    `open` is the writer's (the master's): it creates the directory, the
    database and its tables. `open_reader` is for everyone else: read-only,
    and it never creates anything. Safe to share between threads.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: str,
        *,
        readonly: bool,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self._db = connection
        self.path = path
        self.readonly = readonly
        self.sinks = list(sinks)
        self._lock = threading.RLock()
        self._sink_failures = 0

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], *, sinks: Sequence[Sink] = ()) -> EventStore:
        """Open (creating if need be) `STATE_DIR/events.db` for writing."""
        os.makedirs(state_dir, exist_ok=True)
        path = os.path.join(os.fspath(state_dir), EVENTS_DB)
        db = sqlite3.connect(
            path, timeout=WRITE_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            # Must precede the first table; a no-op on an existing database.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise EventLogError(f"{path}: cannot switch to WAL mode (got {mode})")
            db.execute("PRAGMA synchronous = NORMAL")
            _check_version(db, path)
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        return cls(db, path, readonly=False, sinks=sinks)

    @classmethod
    def open_reader(cls, state_dir: str | os.PathLike[str]) -> EventStore:
        """Open `STATE_DIR/events.db` read-only; `EventLogMissing` if there is none."""
        path = os.path.join(os.fspath(state_dir), EVENTS_DB)
        if not os.path.isfile(path):
            raise EventLogMissing(path)
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        db = sqlite3.connect(
            uri, uri=True, timeout=READ_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            _check_version(db, path)
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
        except sqlite3.DatabaseError as error:
            db.close()
            raise EventLogError(f"{path}: {error}") from None
        if not found:
            db.close()
            raise EventLogMissing(path)
        return cls(db, path, readonly=True)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for sink in self.sinks:
                try:
                    sink.close()
                except OSError:
                    pass

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------

    def append(self, event: NewEvent) -> Event:
        """Store `event`, commit, copy it to the sinks; return it with its sequence number.

        Raises `UnknownEventId` for an id the catalog lacks (a bug in the
        caller: every id written must be explained). A sink that fails is
        logged, not raised: the event is already safe in the database.
        """
        if self.readonly:
            raise EventLogError(f"{self.path} is open read-only")
        entry = CATALOG.get(event.event_id)
        if entry is None:
            raise UnknownEventId(event.event_id)
        when = time.time() if event.time is None else float(event.time)
        message = one_line(event.message)
        details_json = msgspec.json.encode(event.details).decode()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO events (time, event_id, level, pool, pid, message, details,"
                " fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    when,
                    event.event_id,
                    entry.level,
                    event.pool,
                    event.pid,
                    message,
                    details_json,
                    event.fingerprint,
                ),
            )
            seq = cursor.lastrowid
        assert seq is not None
        stored = Event(
            seq=seq,
            time=when,
            event_id=event.event_id,
            level=entry.level,
            pool=event.pool,
            pid=event.pid,
            message=message,
            details=_decode_details(details_json),
            fingerprint=event.fingerprint,
        )
        for sink in self.sinks:
            try:
                sink.write(stored)
            except Exception as error:  # a sink must never lose the event or stop the master
                self._sink_failures += 1
                if self._sink_failures == 1 or self._sink_failures % 1000 == 0:
                    log.warning(
                        "event log: cannot copy event %d to %r: %s (%d failures)",
                        seq,
                        sink,
                        error,
                        self._sink_failures,
                    )
        return stored

    def prune(
        self,
        max_age_seconds: float | None = DEFAULT_MAX_AGE,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        now: float | None = None,
    ) -> int:
        """Delete the oldest events beyond the age, then until the database is
        under the size; return how many were deleted. The newest are kept.

        None (or 0) switches a limit off. Cheap when nothing is due (two
        indexed statements), so the master can call it every few minutes.
        """
        if self.readonly:
            raise EventLogError(f"{self.path} is open read-only")
        now = time.time() if now is None else now
        deleted = 0
        with self._lock:
            if max_age_seconds:
                cursor = self._db.execute(
                    "DELETE FROM events WHERE time < ?", (now - max_age_seconds,)
                )
                deleted += max(cursor.rowcount, 0)
            if deleted:
                self._vacuum()
            if max_bytes:
                deleted += self._prune_size(max_bytes)
            if deleted:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return deleted

    def _prune_size(self, max_bytes: int) -> int:
        size = self.size()
        if size <= max_bytes:
            return 0
        target = max_bytes * PRUNE_TARGET
        deleted = 0
        for _ in range(200):  # each round deletes at least one; the estimate converges fast
            (count,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            if size <= target or count == 0:
                break
            batch = max(1, math.ceil(count * (size - target) / size))
            self._db.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)",
                (batch,),
            )
            deleted += min(batch, count)
            self._vacuum()
            size = self.size()
        return deleted

    def _vacuum(self) -> None:
        """Give the free pages back (incremental auto-vacuum).

        Through `executescript`: the pragma frees one page per step, and
        `execute` steps a statement that returns no rows only once.
        """
        self._db.executescript("PRAGMA incremental_vacuum;")

    # --- reading ----------------------------------------------------------------------

    def size(self) -> int:
        """The database's size in bytes (pages in use, including the WAL's latest)."""
        with self._lock:
            (pages,) = self._db.execute("PRAGMA page_count").fetchone()
            (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(page_size)

    def get(self, seq: int) -> Event | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)
            ).fetchone()
        return _event(row) if row else None

    def query(
        self,
        pool: str | None = None,
        event_id: int | None = None,
        level: str | None = None,
        since: float | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """The events matching every filter given, oldest first (newest last).

        `level` is a minimum (`warning` includes errors); `since` is unix
        time; `after_seq` keeps the events after that sequence number (what
        `--follow` has not shown yet). With `limit`, the newest `limit` of
        them, still oldest first.
        """
        where, params = _where(pool, event_id, level, since, after_seq)
        sql = f"SELECT {_COLUMNS} FROM events{where} ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_event(row) for row in reversed(rows)]

    def count(
        self,
        pool: str | None = None,
        event_id: int | None = None,
        level: str | None = None,
        since: float | None = None,
        after_seq: int | None = None,
    ) -> int:
        """How many events `query` would return without a limit."""
        where, params = _where(pool, event_id, level, since, after_seq)
        with self._lock:
            (count,) = self._db.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()
        return int(count)

    def last_seq(self) -> int:
        """The newest sequence number handed out (0 before the first event)."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
            ).fetchone()
        return int(row[0]) if row else 0

    def groups(
        self,
        pool: str | None = None,
        since: float | None = None,
        event_id: int | None = None,
        level: str | None = None,
    ) -> list[Group]:
        """Failures grouped by fingerprint (and id): count, first and last
        seen, the newest one's sequence number and message. Ordered by the
        newest occurrence, most recent last. Events without a fingerprint
        (those that are not failures) are left out."""
        where, params = _where(pool, event_id, level, since, None)
        where = (where + " AND" if where else " WHERE") + " fingerprint IS NOT NULL"
        sql = (
            "SELECT g.fingerprint, g.event_id, e.level, g.n, g.first_seen, g.last_seen,"
            " g.last_seq, e.message, g.pools FROM ("
            "  SELECT fingerprint, event_id, COUNT(*) AS n, MIN(time) AS first_seen,"
            "  MAX(time) AS last_seen, MAX(seq) AS last_seq,"
            "  json_group_array(DISTINCT pool) AS pools"
            f"  FROM events{where} GROUP BY fingerprint, event_id"
            ") AS g JOIN events AS e ON e.seq = g.last_seq ORDER BY g.last_seq"
        )
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [
            Group(
                fingerprint=row[0],
                event_id=row[1],
                level=row[2],
                count=row[3],
                first_seen=row[4],
                last_seen=row[5],
                last_seq=row[6],
                message=row[7],
                pools=sorted(p for p in msgspec.json.decode(row[8]) if p is not None),
            )
            for row in rows
        ]


def _check_version(db: sqlite3.Connection, path: str) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise EventLogError(
            f"{path} was written by a newer poolwarden (schema {version}, this one reads "
            f"{SCHEMA_VERSION})"
        )


def _where(
    pool: str | None,
    event_id: int | None,
    level: str | None,
    since: float | None,
    after_seq: int | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if pool is not None:
        clauses.append("pool = ?")
        params.append(pool)
    if event_id is not None:
        clauses.append("event_id = ?")
        params.append(event_id)
    if level is not None:
        wanted = levels_at_least(level)
        clauses.append(f"level IN ({', '.join('?' for _ in wanted)})")
        params.extend(wanted)
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    if after_seq is not None:
        clauses.append("seq > ?")
        params.append(after_seq)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _decode_details(text: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {"undecodable": text}
    return value if isinstance(value, dict) else {"value": value}


def _event(row: Iterable[Any]) -> Event:
    seq, when, event_id, level, pool, pid, message, details, fingerprint = row
    return Event(
        seq=seq,
        time=when,
        event_id=event_id,
        level=level,
        pool=pool,
        pid=pid,
        message=message,
        details=_decode_details(details),
        fingerprint=fingerprint,
    )
