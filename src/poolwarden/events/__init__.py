"""The event log: every worker death and every pool decision, explained in one event.

```
 master ── WorkerEnd ──▶ classify (pure) ──▶ Classification ─┐
 master ── new_event(id, message, ...) ──────────────────────┤
                                                             ▼
                               EventStore.append ──▶ STATE_DIR/events.db (SQLite, WAL)
                                                 └─▶ sinks: events.jsonl, stdout
 poolwarden events ──▶ EventStore.open_reader ──▶ render (plain text) ──▶ terminal
```

- `catalog`: the event ids, stable, with WAS's numbers where the meaning is
  IIS's; what each means and what to do (`poolwarden events explain ID`).
- `store`: the durable log; written by the master only, read by anyone.
- `classify`: how a worker's end becomes one event: who ended it, the
  evidence, a fingerprint that groups repeats, whether it counts toward
  rapid-fail protection.
- `render`: events as plain text, for the CLI (and for dev mode's error page).

Nothing here imports rich, and nothing here is imported by workers.
"""

from __future__ import annotations

from poolwarden.events.catalog import (
    CATALOG,
    KNOWN_IDS,
    LEVELS,
    EventType,
    Level,
    UnknownEventId,
    explain,
)
from poolwarden.events.classify import (
    Classification,
    WorkerEnd,
    classify,
    classify_thread_exception,
)
from poolwarden.events.store import (
    EVENTS_DB,
    EVENTS_JSONL,
    Event,
    EventLogError,
    EventLogMissing,
    EventStore,
    Group,
    JsonLinesSink,
    NewEvent,
    new_event,
)

__all__ = [
    "CATALOG",
    "EVENTS_DB",
    "EVENTS_JSONL",
    "KNOWN_IDS",
    "LEVELS",
    "Classification",
    "Event",
    "EventLogError",
    "EventLogMissing",
    "EventStore",
    "EventType",
    "Group",
    "JsonLinesSink",
    "Level",
    "NewEvent",
    "UnknownEventId",
    "WorkerEnd",
    "classify",
    "classify_thread_exception",
    "explain",
    "new_event",
]
