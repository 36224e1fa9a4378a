"""When and how a pool's workers are recycled, killed for memory, or shut
down for idleness.

```
 Pool.recycle (administrator, reload) ──recycle_all──▶ Recycler
 RequestWatch (request_timeout_action) ──recycle_worker──▶ │
 StartupDebugging (the worker it replaces) ──note──▶       │ RecycleRequested, IdleTimeout
 Pool.check_workers (once a second) ──check(now)──▶        │   ─▶ PoolMachine; its actions
                                                           │   ─▶ Lifecycle.apply
        WorkerFacts, Limits ─▶ recycling.decide ◀──────────┤
        memory_hard_limit ─▶ WorkerProcess.kill            │
        idle ─▶ event 5186, IdleTimeout; a limit reached ─▶ recycle_worker (5074 to 5080)
```

What to do is decided by the pure `activation.recycling.decide` (limits,
schedule, memory, idleness) and how by the pool's `PoolMachine`: a recycle
is overlapped, replacements start first and each old worker is drained only
once a replacement is Ready, so no request waits and none fails; if a
replacement cannot start, the old workers keep serving. The Recycler writes
each recycled worker's event when the pool logs that kind
(`log_event_on_recycle`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from poolwarden.activation import pool_policy as policy
from poolwarden.activation.recycling import Action, Limits, WorkerFacts, decide, last_scheduled
from poolwarden.events import catalog
from poolwarden.master.worker_process import WorkerProcess, WorkerState

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")

_RECYCLE_EVENTS = {
    "requests": catalog.RECYCLE_REQUESTS,
    "time": catalog.RECYCLE_TIME,
    "memory": catalog.RECYCLE_MEMORY,
    "private_memory": catalog.RECYCLE_PRIVATE_MEMORY,
    "schedule": catalog.RECYCLE_SCHEDULE,
}


class Recycler:
    """Recycles one pool's workers: on request, and when a limit is reached."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def recycle_all(self, reason: str, event_id: int, kind: str) -> None:
        """Replace every worker with overlap: new ones first, old ones drained
        as each replacement becomes Ready."""
        pool = self.pool
        try:
            actions = pool.machine.handle(policy.RecycleRequested())
        except policy.IllegalTransition:
            raise ValueError(f"pool {pool.name!r} is {pool.state.value}, not started") from None
        retired = {action.id for action in actions if isinstance(action, policy.Retire)}
        old = [worker for worker in pool.workers if worker.pid in retired]
        pool.last_event = f"recycled ({reason})"
        log.info("pool %s: recycling %d worker(s): %s", pool.name, len(old), reason)
        for worker in old if kind in pool.settings.log_event_on_recycle else ():
            pool.events.emit(
                event_id,
                f"worker {worker.pid} of pool {pool.name!r} is recycled: {reason}",
                pool=pool.name,
                pid=worker.pid,
                details={"reason": reason},
            )
        pool.lifecycle.apply(actions)

    def recycle_worker(self, worker: WorkerProcess, reason: str, kind: str, event_id: int) -> None:
        """Replace one worker with overlap (a limit it reached): its
        replacement starts first, and it drains once the replacement is Ready."""
        self.note(worker, reason, kind, event_id)
        pool = self.pool
        pool.lifecycle.apply(pool.machine.handle(policy.RecycleRequested((worker.pid,))))

    def note(self, worker: WorkerProcess, reason: str, kind: str, event_id: int) -> None:
        """Log one worker's recycle, and write its event if the pool logs that kind."""
        pool = self.pool
        log.info("pool %s: recycling worker %d: %s", pool.name, worker.pid, reason)
        pool.last_event = f"worker {worker.pid} recycled ({kind})"
        if kind in pool.settings.log_event_on_recycle:
            pool.events.emit(
                event_id,
                f"worker {worker.pid} of pool {pool.name!r} is recycled: {reason}",
                pool=pool.name,
                pid=worker.pid,
                details={"reason": kind, "why": reason, "served": worker.scoreboard.served()},
            )

    def check(self, now: float) -> list[WorkerProcess]:
        """The periodic look at every live worker of a started pool: what
        `activation.recycling.decide` says (memory hard limit, recycle
        limits, idleness), done here. The workers looked at, for the
        request watch."""
        pool = self.pool
        settings = pool.settings
        facts = []
        by_pid = {}
        for worker in pool.workers:
            if worker.returncode is not None:
                continue
            served = worker.note_activity(now)
            by_pid[worker.pid] = worker
            facts.append(
                WorkerFacts(
                    pid=worker.pid,
                    age=now - worker.started_at,
                    served=served,
                    idle_for=now - worker.last_activity,
                    connections=len(worker.custody),
                    rss=worker.last_rss,
                    uss=worker.last_uss,
                    request_limit=worker.request_limit,
                    time_limit=worker.time_limit if settings.recycle_time else 0.0,
                    replaceable=worker.state is WorkerState.READY and not worker.retiring,
                    started_at=worker.started_wall,
                )
            )
        scheduled = last_scheduled(datetime.now(), settings.recycle_schedule)
        limits = Limits(
            memory=settings.recycle_memory,
            private_memory=settings.recycle_private_memory,
            memory_hard_limit=settings.memory_hard_limit,
            idle_timeout=settings.idle_timeout if settings.start_mode == "on_demand" else 0.0,
            scheduled_at=scheduled.timestamp() if scheduled is not None else 0.0,
        )
        for action in decide(facts, limits, recycling=pool.machine.recycling):
            self._perform(by_pid[action.pid], action)
        return list(by_pid.values())

    def _perform(self, worker: WorkerProcess, action: Action) -> None:
        pool = self.pool
        if action.reason == "memory_hard_limit":
            log.error("pool %s: killing worker %d: %s", pool.name, worker.pid, action.why)
            worker.kill("memory_hard_limit")
        elif action.reason == "idle":
            log.info("pool %s: worker %d: %s; shutting it down", pool.name, worker.pid, action.why)
            pool.events.emit(
                catalog.WORKER_IDLE_SHUTDOWN,
                f"worker {worker.pid} of pool {pool.name!r} {action.why} and is shut down; "
                "the next request starts one",
                pool=pool.name,
                pid=worker.pid,
                details={"idle_timeout": pool.settings.idle_timeout},
            )
            pool.last_event = f"worker {worker.pid} shut down (idle)"
            pool.lifecycle.apply(pool.machine.handle(policy.IdleTimeout(worker.pid)))
        else:
            self.recycle_worker(worker, action.why, action.reason, _RECYCLE_EVENTS[action.reason])
