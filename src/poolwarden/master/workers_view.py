"""The control API's view of every pool's workers: `poolwarden wp`, `requests`, `stack`.

```
 ControlAdapter ──▶ Master ──workers, requests, worker_stack, pool_stack, attach, reap_worker──▶ WorkersView
                                                                                                   │
   each Pool's workers (and orphans) ◀── found by pid, or listed ─────────────────────────────────┤
   WorkerProcess.scoreboard ◀── requests served, requests in flight ──────────────────────────────┤
   ResourceMeter ◀── RSS and CPU % ───────────────────────────────────────────────────────────────┤
   WorkerProcess.capture_stacks + task_stacks ◀── one worker's threads and tasks, taken at once ──┘
```

It reads the pools as they are at each call (the master's own dict) and
keeps nothing of its own but the meter. A pid that is no live worker is a
KeyError, which the control API answers with 404.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from poolwarden.master.pool import Pool
from poolwarden.master.resources import ResourceMeter
from poolwarden.master.worker_process import WorkerProcess
from poolwarden.scoreboard import Phase
from poolwarden.stacks import TASKS_BLOCKED_NOTE, TaskStack, ThreadStack, render_worker


class WorkersView:
    """Lists, finds and looks into the workers of every pool."""

    def __init__(self, pools: dict[str, Pool], meter: ResourceMeter) -> None:
        self.pools = pools
        """The master's own dict: pools added or removed by a reload are seen."""
        self.meter = meter

    def workers(self, pool: str | None) -> list[dict[str, Any]]:
        """`poolwarden wp`: every live worker (of `pool`, or of all), orphans too."""
        now = time.time()
        rows = []
        for name, each in self.pools.items():
            if pool is not None and name != pool:
                continue
            for worker in [*each.workers, *each.orphans]:
                if worker.returncode is not None:
                    continue
                rss, cpu = self.meter.usage(worker.python_pid)
                rows.append(
                    {
                        "pid": worker.pid,
                        "python_pid": worker.python_pid,
                        "pool": name,
                        "state": "retiring" if worker.retiring else worker.state.value,
                        "started_at": worker.started_wall,
                        "uptime": now - worker.started_wall,
                        "requests_served": worker.scoreboard.served(),
                        "request_limit": worker.request_limit
                        if worker.settings.recycle_requests
                        else None,
                        "active_requests": worker.busy_count(),
                        "connections": worker.load,
                        "connections_in_use": worker.in_use(),
                        "capacity": worker.capacity,
                        "loop_blocked": worker.loop_blocked,
                        "rss": rss,
                        "cpu_percent": cpu,
                    }
                )
        return rows

    def requests(self, pool: str | None, min_elapsed: float) -> list[dict[str, Any]]:
        """`poolwarden requests`: the requests in flight, the longest first."""
        now = time.time()
        rows: list[dict[str, Any]] = []
        for name, each in self.pools.items():
            if pool is not None and name != pool:
                continue
            for worker in each.workers:
                if worker.returncode is not None:
                    continue
                for slot in worker.scoreboard.busy():
                    elapsed = max(0.0, now - slot.started)
                    if elapsed < min_elapsed:
                        continue
                    rows.append(
                        {
                            "pid": worker.pid,
                            "pool": name,
                            "method": slot.method,
                            "path": slot.path,
                            "client": slot.client,
                            "elapsed": elapsed,
                            "phase": "app" if slot.phase is Phase.APP else "responding",
                            "status": slot.status or None,
                        }
                    )
        rows.sort(key=lambda row: -row["elapsed"])
        return rows

    def attach(self, pid: int) -> dict[str, Any]:
        """`poolwarden debug attach PID`: only a ready worker is attached to."""
        for name, pool in self.pools.items():
            for worker in pool.workers:
                if worker.pid == pid and worker.returncode is None:
                    if worker.state.value != "ready":
                        raise ValueError(f"worker {pid} is {worker.state.value}, not ready")
                    worker.attach()
                    return {"pid": pid, "pool": name}
        raise KeyError(pid)

    def reap_worker(self, pid: int) -> dict[str, Any]:
        """`poolwarden wp reap PID`: an orphan only; a serving worker is recycled instead."""
        for name, pool in self.pools.items():
            if any(worker.pid == pid for worker in pool.workers):
                raise ValueError(
                    f"worker {pid} of pool {name!r} is serving, not an orphan; "
                    f"`poolwarden pool recycle {name}` replaces workers"
                )
            if pool.reap_orphans(pid):
                return {"pid": pid, "pool": name, "reaped": True}
        raise KeyError(pid)

    async def worker_stack(self, pid: int) -> dict[str, Any]:
        for name, pool in self.pools.items():
            for worker in pool.workers:
                if worker.pid == pid and worker.returncode is None:
                    return await self._stack_of(name, worker)
        raise KeyError(pid)

    async def pool_stack(self, name: str) -> dict[str, Any]:
        live = [w for w in self.pools[name].workers if w.pid > 0 and w.returncode is None]
        answers = await asyncio.gather(*(self._stack_of(name, worker) for worker in live))
        return {"pool": name, "workers": list(answers)}

    async def _stack_of(self, pool: str, worker: WorkerProcess) -> dict[str, Any]:
        """One worker's stacks. The thread dump (faulthandler, no GIL needed)
        and an ASGI worker's task dump (from its loop, 1 s at most) are taken
        at the same moment, so a blocked loop shows in the threads."""
        tasks: list[TaskStack] | None = None
        note = None
        if worker.interface == "asgi":
            captured, tasks = await asyncio.gather(worker.capture_stacks(), worker.task_stacks())
            note = TASKS_BLOCKED_NOTE if tasks is None else None
        else:
            captured = await worker.capture_stacks()
        threads = captured.threads
        return {
            "pid": worker.pid,
            "pool": pool,
            "interface": worker.interface or None,
            "via": captured.via,
            "threads": [_thread_dict(thread) for thread in threads],
            "tasks": None if tasks is None else [msgspec.to_builtins(task) for task in tasks],
            "tasks_note": note,
            "text": render_worker(threads, tasks, note),
        }


def _thread_dict(thread: ThreadStack) -> dict[str, Any]:
    """A thread as the API shows it: `name` only when it is known."""
    data: dict[str, Any] = msgspec.to_builtins(thread)
    if not thread.name:
        del data["name"]
    return data
