"""When a worker is recycled, killed for memory, or shut down for idleness.

Pure: `decide` takes what the master knows of a pool's workers and the time,
and returns what to do. The pool's driver performs it. The rules:

- a worker over the memory hard limit is killed at once, whatever else
  happens (the last line before the kernel's OOM killer);
- otherwise at most one worker is acted on per look, and none while a
  recycle is under way, so a web garden never loses all its workers at once;
- a worker past its request limit, its age, a scheduled time of day
  (`schedule`: started before the latest one), or its RSS or USS limit is
  recycled (with overlap, by the driver); in that order of precedence;
- an on-demand pool's worker idle for `idle_timeout`, holding no
  connection, is shut down.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from poolwarden.units import format_memory

Reason = Literal[
    "requests", "time", "schedule", "memory", "private_memory", "idle", "memory_hard_limit"
]


def parse_time_of_day(text: str) -> tuple[int, int, int]:
    """ "HH:MM" or "HH:MM:SS" (IIS writes schedule entries as "03:00:00")."""
    parts = [int(part) for part in text.split(":")]
    return parts[0], parts[1], parts[2] if len(parts) > 2 else 0


def last_scheduled(now: datetime, schedule: tuple[str, ...]) -> datetime | None:
    """The latest of the scheduled times of day at or before `now` (today's,
    or yesterday's if today's are all still ahead); None without a schedule.

    A worker started before it is due: so a worker started at 02:59 is
    recycled at 03:00, and one started at 03:01 waits for the next day.
    """
    latest: datetime | None = None
    for entry in schedule:
        hour, minute, second = parse_time_of_day(entry)
        moment = now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if moment > now:
            moment -= timedelta(days=1)
        if latest is None or moment > latest:
            latest = moment
    return latest


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """One live worker, as the master sees it now."""

    pid: int
    age: float
    served: int
    idle_for: float
    connections: int
    rss: int | None = None
    uss: int | None = None
    request_limit: int = 0
    """This worker's request limit, jitter applied (0: none)."""
    time_limit: float = 0.0
    """This worker's age limit in seconds, jitter applied (0: none)."""
    replaceable: bool = True
    """Ready and not already being replaced or drained: only the memory hard
    limit applies to the others."""
    started_at: float = 0.0
    """Unix time the worker started (for the schedule)."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int = 0
    private_memory: int = 0
    memory_hard_limit: int = 0
    idle_timeout: float = 0.0
    """0: never; only given for on-demand pools."""
    scheduled_at: float = 0.0
    """Unix time of the latest scheduled recycle (`last_scheduled`); 0: none."""


@dataclass(frozen=True, slots=True)
class Action:
    pid: int
    reason: Reason
    why: str
    """One sentence for the log and the event."""


def decide(workers: list[WorkerFacts], limits: Limits, *, recycling: bool) -> list[Action]:
    """Kills for the hard limit first, then at most one recycle or idle shutdown."""
    actions = [
        Action(
            worker.pid,
            "memory_hard_limit",
            f"its resident memory is {format_memory(worker.rss or 0)} "
            f"(hard limit {format_memory(limits.memory_hard_limit)})",
        )
        for worker in workers
        if limits.memory_hard_limit and (worker.rss or 0) > limits.memory_hard_limit
    ]
    if recycling:
        return actions
    killed = {action.pid for action in actions}
    for worker in workers:
        if worker.pid in killed or not worker.replaceable:
            continue
        action = _one(worker, limits)
        if action is not None:
            actions.append(action)
            break
    return actions


def _one(worker: WorkerFacts, limits: Limits) -> Action | None:
    if worker.request_limit and worker.served >= worker.request_limit:
        return Action(
            worker.pid,
            "requests",
            f"it served {worker.served} requests (limit {worker.request_limit})",
        )
    if worker.time_limit and worker.age >= worker.time_limit:
        return Action(
            worker.pid, "time", f"it is {worker.age:.0f}s old (limit {worker.time_limit:.0f}s)"
        )
    if limits.scheduled_at and worker.started_at < limits.scheduled_at:
        return Action(
            worker.pid,
            "schedule",
            "it started before its scheduled recycle at "
            + datetime.fromtimestamp(limits.scheduled_at).strftime("%H:%M:%S"),
        )
    if limits.memory and (worker.rss or 0) > limits.memory:
        return Action(
            worker.pid,
            "memory",
            f"its resident memory is {format_memory(worker.rss or 0)} "
            f"(limit {format_memory(limits.memory)})",
        )
    if limits.private_memory and (worker.uss or 0) > limits.private_memory:
        return Action(
            worker.pid,
            "private_memory",
            f"its private memory is {format_memory(worker.uss or 0)} "
            f"(limit {format_memory(limits.private_memory)})",
        )
    if limits.idle_timeout and worker.idle_for >= limits.idle_timeout and not worker.connections:
        return Action(worker.pid, "idle", f"it served nothing for {limits.idle_timeout:g}s")
    return None
