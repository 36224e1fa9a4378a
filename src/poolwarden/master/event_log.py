"""The master's side of the event log: what happened, written as it happens.

```
 Pool / Master decisions ──emit()──────────────┐
 WorkerProcess reaped ──evidence()──▶ classify ─┼─▶ EventStore (SQLite, WAL)
 ThreadFailed ──classify_thread_exception───────┘      └─▶ events.jsonl (+ stdout)
```

Only the master writes. A failing write is logged, never raised: the event
log must not take the server down with it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from typing import Any

from poolwarden import channel as ch
from poolwarden.events.classify import Classification, classify_thread_exception
from poolwarden.events.store import EventStore, JsonLinesSink, new_event

log = logging.getLogger("poolwarden")

PRUNE_EVERY = 600.0
"""Seconds between prunings of the store (by age and size)."""


class EventLog:
    """Appends events; `EventLog(None)` records nothing (tests of parts)."""

    def __init__(self, store: EventStore | None) -> None:
        self.store = store

    @classmethod
    def open(cls, state_dir: str, *, to_stdout: bool = False) -> EventLog:
        sink = JsonLinesSink(
            os.path.join(state_dir, "events.jsonl"), sys.stdout if to_stdout else None
        )
        store = EventStore.open(state_dir, sinks=[sink])
        store.prune()
        return cls(store)

    def emit(
        self,
        event_id: int,
        message: str,
        *,
        pool: str | None = None,
        pid: int | None = None,
        details: dict[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> int | None:
        """Append one event; its sequence number, or None if it could not be."""
        if self.store is None:
            return None
        try:
            event = self.store.append(
                new_event(
                    event_id,
                    message,
                    pool=pool,
                    pid=pid,
                    details=details,
                    fingerprint=fingerprint,
                )
            )
        except (sqlite3.Error, OSError) as error:
            log.error("event log: cannot write event %d (%s): %s", event_id, message, error)
            return None
        return event.seq

    def worker_ended(self, classification: Classification) -> int | None:
        if self.store is None:
            return None
        try:
            return self.store.append(classification.new_event()).seq
        except (sqlite3.Error, OSError) as error:
            log.error("event log: cannot write %s: %s", classification.message, error)
            return None

    def thread_failed(self, pool: str, pid: int, message: ch.ThreadFailed) -> int | None:
        classification = classify_thread_exception(
            pool,
            pid,
            message.thread,
            message.traceback,
            exception_type=message.exception_type,
            message=message.message,
        )
        return self.worker_ended(classification)

    def prune(self) -> None:
        if self.store is None:
            return
        try:
            self.store.prune()
        except (sqlite3.Error, OSError) as error:
            log.error("event log: cannot prune: %s", error)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
