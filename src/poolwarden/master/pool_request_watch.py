"""The pool's watch on requests that run too long and event loops that block.

```
 Pool.check_workers (once a second) ──check(worker)──▶ RequestWatch ──scoreboard.busy()──▶ slots
                                                          │
   past request_timeout: WorkerProcess.task_stacks/stacks ┤ (a task, else the request's thread)
                         event 2040 ─▶ EventLog           │
                         WorkerProcess.abandon (the master answers 504)
                         request_timeout_action: WorkerProcess.kill, or Recycler.recycle_worker
 WorkerProcess ──on_loop_lag(LoopLag)──▶ loop_lagged: event 2041 with the line that blocked
```

A request past `request_timeout` is hung: its stack is taken, its client
answered 504 by the master, and the worker dealt with as
`request_timeout_action` says (log, recycle or kill). An ASGI worker's own
watchdog reports a blocked event loop; the pool writes it down with the
innermost app frame, so `poolwarden events` names the blocking line. It
reads the pool's settings and state from the `Pool` it belongs to.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from poolwarden import channel as ch
from poolwarden.activation.pool_policy import PoolState
from poolwarden.events import catalog
from poolwarden.master.worker_process import WorkerProcess
from poolwarden.scoreboard import WEBSOCKET_PHASES, Phase, SlotView
from poolwarden.stacks import (
    StackFrame,
    ThreadStack,
    innermost_app_frame,
    render_tasks,
    render_threads,
    with_source,
)

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")


class RequestWatch:
    """Request time-outs and loop-lag reports of one pool's workers."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def check(self, worker: WorkerProcess) -> None:
        """A request past `request_timeout` is hung: its stack is taken, its
        client answered 504 by the master, and the worker dealt with as
        `request_timeout_action` says."""
        limit = self.pool.settings.request_timeout
        now = time.time()
        for slot in worker.scoreboard.busy():
            if slot.phase in WEBSOCKET_PHASES:
                continue  # an open WebSocket is not a request that hangs
            key = (slot.conn_id, slot.started)
            if now - slot.started > limit and key not in worker.timed_out_requests:
                worker.timed_out_requests.add(key)
                self.pool.loop.create_task(self._timed_out(worker, slot))

    async def _timed_out(self, worker: WorkerProcess, slot: SlotView) -> None:
        pool = self.pool
        settings = pool.settings
        tasks = await worker.task_stacks() if worker.interface == "asgi" else None
        threads = await worker.stacks()
        now = time.time()
        current = worker.scoreboard.read(slot.index) if worker.returncode is None else None
        if current is None or (current.conn_id, current.started) != (slot.conn_id, slot.started):
            return  # it finished while its stack was taken
        stack: str | None = None
        frames: list[StackFrame] = []
        task = next(
            (
                t
                for t in tasks or ()
                if t.request is not None and t.name.endswith(f"-{slot.conn_id}")
            ),
            None,
        )
        if task is not None:
            stack, frames = render_tasks([task]), task.frames
        elif worker.interface == "asgi":
            # No answer from the loop: it is blocked, and its thread (the one
            # that writes the scoreboard; a worker has others) shows by what.
            thread = next((t for t in threads if t.ident == slot.thread), None)
            if thread is not None:
                stack, frames = render_threads([thread]), thread.frames
        else:
            thread = next((t for t in threads if t.ident == slot.thread), None)
            if thread is not None:
                stack, frames = render_threads([thread]), thread.frames
        frame = innermost_app_frame(frames)
        where = f" in {frame.name} ({frame.filename}:{frame.lineno})" if frame else ""
        elapsed = round(now - slot.started, 3)
        action = settings.request_timeout_action
        seq = pool.events.emit(
            catalog.REQUEST_TIMEOUT,
            f"{slot.method} {slot.path} from {slot.client} ran {elapsed:g}s, past "
            f"request_timeout ({settings.request_timeout:g}s), in worker {worker.pid} of pool "
            f"{pool.name!r}{where}; action: {action}",
            pool=pool.name,
            pid=worker.pid,
            details={
                "method": slot.method,
                "path": slot.path,
                "client": slot.client,
                "elapsed": elapsed,
                "request_timeout": settings.request_timeout,
                "action": action,
                "response_started": current.phase is Phase.RESPONDING,
                "stack": stack,
                "threads": render_threads(threads) if threads else None,
                "tasks": render_tasks(tasks) if tasks else None,
            },
            fingerprint=f"2040 {pool.name} {frame.filename}:{frame.lineno}" if frame else None,
        )
        log.warning(
            "pool %s: worker %d: %s %s ran past request_timeout (%gs)%s; action: %s",
            pool.name,
            worker.pid,
            slot.method,
            slot.path,
            settings.request_timeout,
            where,
            action,
        )
        pool.last_event = f"{catalog.REQUEST_TIMEOUT} #{seq}" if seq is not None else None
        worker.abandon(slot.conn_id, current.phase is Phase.APP, seq)
        if action == "kill":
            worker.kill("request_timeout")
        elif action == "recycle" and not worker.retiring and pool.state is PoolState.STARTED:
            pool.recycler.recycle_worker(
                worker,
                f"a request ran past request_timeout ({settings.request_timeout:g}s)",
                "request_timeout",
                catalog.RECYCLE_UNHEALTHY,
            )

    def loop_lagged(self, worker: WorkerProcess, message: ch.LoopLag) -> None:
        """An ASGI worker's watchdog saw its event loop blocked (2041): the
        line that blocked it and for how long."""
        pool = self.pool
        frames = with_source([StackFrame(f.filename, f.lineno, f.name) for f in message.frames])
        frame = innermost_app_frame(frames)
        where = f" in {frame.name} ({frame.filename}:{frame.lineno})" if frame else ""
        serving = f" while serving {message.method} {message.path}" if message.method else ""
        how_long = (
            f"was blocked for {message.blocked:g}s"
            if message.ended
            else f"has been blocked for {message.blocked:g}s and still was when reported"
        )
        skipped = (
            f"; {message.skipped} more stall(s) since the last report went unreported"
            if message.skipped
            else ""
        )
        stack = render_threads(
            [ThreadStack(ident=message.thread, current=False, frames=frames, name="event loop")]
        )
        pool.events.emit(
            catalog.LOOP_LAG,
            f"the event loop of worker {worker.pid} of pool {pool.name!r} {how_long}"
            f"{where}{serving}{skipped}",
            pool=pool.name,
            pid=worker.pid,
            details={
                "lag": message.lag,
                "blocked": message.blocked,
                "ended": message.ended,
                "loop_lag_warning": pool.settings.loop_lag_warning,
                "method": message.method or None,
                "path": message.path or None,
                "client": message.client or None,
                "skipped": message.skipped,
                "stack": stack,
            },
            fingerprint=f"2041 {pool.name} {frame.filename}:{frame.lineno}" if frame else None,
        )
        log.warning(
            "pool %s: worker %d: the event loop %s%s%s",
            pool.name,
            worker.pid,
            how_long,
            where,
            serving,
        )
