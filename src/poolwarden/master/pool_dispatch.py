"""Where a connection routed to a pool goes: to a Ready worker, into the
pool's bounded queue, or a 503 the master answers itself.

```
 FrontEnd / Master ──Pool.dispatch──▶ Dispatcher ──WorkerProcess.dispatch──▶ worker
                                        │  ▲   ▲
   PoolMachine ◀─RequestArrived, AllBusy┘  │   └─flush_queue── WorkerReports (a worker Ready)
     (Enqueue, Refuse: performed here;     │
      Spawn: by Lifecycle.apply)           └─expire_queue, refuse_queue── Pool.check_workers,
                                                                          Lifecycle (RefuseQueue)
   a 503 ─▶ answer_and_close(sock), and the pool's `on_refused` (the front-end log)
```

A connection goes to the Ready worker with the fewest connections in use:
handed to it and not taken up yet (the master's count of dispatches less the
scoreboard's `settled`), or with a request in the app (the scoreboard's busy
slots). While no worker is Ready, or every worker has as many in use as it
may have (a WSGI worker's threads, an ASGI worker's `max_concurrency`), or
its event loop is blocked (`LoopStall`), it waits in the pool's queue (IIS's per-pool
`queueLength`), and past the bound it is answered `503 queue_full`. What a
connection no worker can take gets is decided by the pool's
`PoolMachine`; the Dispatcher performs it on the socket. It reads the pool's
settings, state and workers from the `Pool` it belongs to and keeps only
the queue.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.activation.pool_policy import PoolState
from poolwarden.http.error_page import startup_failure_page
from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close
from poolwarden.master.worker_process import WorkerProcess, WorkerState

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")

QUEUE_RECHECK = 0.005
"""Seconds between looks at a busy pool's workers while connections wait."""


@dataclass(slots=True)
class Waiting:
    """A connection waiting in the pool's queue for a worker."""

    sock: socket.socket
    message: ch.Dispatch
    since: float = 0.0
    """When it joined the queue (monotonic)."""


class Dispatcher:
    """One pool's dispatch and bounded queue."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.queue: deque[Waiting] = deque()
        self.dispatched = 0
        """Connections handed to a worker so far."""
        self._turn = 0
        self._flush_timer: asyncio.TimerHandle | None = None

    @property
    def queued(self) -> int:
        """Connections waiting for a worker (what the machine's events count)."""
        return len(self.queue)

    @property
    def serving_workers(self) -> list[WorkerProcess]:
        """Workers that count as capacity: not exited, not being replaced."""
        return [
            worker
            for worker in self.pool.workers
            if not worker.retiring and worker.state in (WorkerState.STARTING, WorkerState.READY)
        ]

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        pool = self.pool
        state = pool.state
        all_busy = False
        if (state is PoolState.STARTED or state is PoolState.STARTUP_FAILED) and not self.queue:
            worker = self._least_busy()
            if worker is not None and not self._at_capacity(worker):
                self.dispatched += 1
                worker.dispatch(sock, message)
                if pool.settings.processes > 1:
                    self._grow_if_busy()
                return
            if worker is not None or self._any_ready():
                self._grow_if_busy()
                all_busy = True  # it waits in the queue
        arrived = policy.RequestArrived(len(self.queue), all_busy, time.monotonic())
        for action in pool.machine.handle(arrived):
            if isinstance(action, policy.Refuse):
                self.refuse(sock, message, action.reason)
            elif isinstance(action, policy.Enqueue):
                self.queue.append(Waiting(sock, message, time.monotonic()))
                if self._flush_timer is None and self._least_busy() is not None:
                    self._flush_timer = pool.loop.call_later(QUEUE_RECHECK, self.flush_queue)
            else:
                pool.lifecycle.apply([action])  # on demand: the first request starts a worker

    def _grow_if_busy(self) -> None:
        """A web garden grows on demand: another worker when every worker has
        as many connections in use as it has threads (an ASGI worker: its
        `max_concurrency`, else `threads` requests in flight), or has its
        event loop blocked."""
        pool = self.pool
        if not pool.machine.may_grow:
            return
        threads = pool.settings.threads
        if all(
            worker.loop_blocked or worker.in_use() >= (worker.capacity or threads)
            for worker in self.serving_workers
        ):
            log.info("pool %s: every worker is busy; starting another", pool.name)
            pool.lifecycle.apply(pool.machine.handle(policy.AllBusy()))

    def _any_ready(self) -> bool:
        return any(worker.state is WorkerState.READY for worker in self.pool.workers)

    def _least_busy(self) -> WorkerProcess | None:
        """The Ready worker with the fewest connections in use.

        The search starts one worker further on each time, so that ties go
        round: under light load every connection would otherwise land on
        the first worker, and the others would sit idle and cold. A worker
        whose event loop is blocked takes nothing until it runs again.
        """
        workers = self.pool.workers
        count = len(workers)
        if count == 1:
            only = workers[0]
            return only if only.state is WorkerState.READY and not only.loop_blocked else None
        if not count:
            return None
        self._turn = turn = (self._turn + 1) % count
        best = None
        best_load = (0, 0)
        fallback = None
        for step in range(count):
            worker = workers[(turn + step) % count]
            if worker.state is not WorkerState.READY or worker.loop_blocked:
                continue
            if worker.retiring or worker.debug_address is not None:
                fallback = fallback or worker  # draining, or stopped in a debugger
                continue
            load = (worker.in_use(), worker.load)
            if best is None or load < best_load:
                best, best_load = worker, load
        return best or fallback

    def _at_capacity(self, worker: WorkerProcess) -> bool:
        """A worker with as many connections in use as it may have (a WSGI
        worker's threads, an ASGI worker's `max_concurrency`): a new
        connection waits in the pool's queue (IIS's HTTP.SYS queue) rather
        than in the worker. A connection counts from its dispatch, not from
        when its request starts, so a burst cannot overfill a worker before
        the worker has taken any of it up."""
        capacity = worker.capacity
        return capacity is not None and worker.in_use() >= capacity

    def flush_queue(self) -> None:
        """Hand waiting connections to workers that can take them (a worker
        became Ready, or the recheck timer fired)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        while self.queue:
            worker = self._least_busy()
            if worker is None:
                return
            if self._at_capacity(worker):
                # Workers do not report each finished request (it shows in
                # the scoreboard); look again shortly while connections wait,
                # and start another worker if the garden may grow.
                self._grow_if_busy()
                self._flush_timer = self.pool.loop.call_later(QUEUE_RECHECK, self.flush_queue)
                return
            waiting = self.queue.popleft()
            self.dispatched += 1
            worker.dispatch(waiting.sock, waiting.message)

    def loop_stalled(self, worker: WorkerProcess) -> None:
        """A worker's event loop is blocked (it takes nothing until it runs
        again: another worker may start for what comes), or runs again (what
        waits in the queue may go to it)."""
        pool = self.pool
        if worker.loop_blocked:
            log.warning(
                "pool %s: worker %d: its event loop is blocked; it takes no new connection",
                pool.name,
                worker.pid,
            )
            if pool.state is PoolState.STARTED:
                self._grow_if_busy()
        else:
            log.info("pool %s: worker %d: its event loop runs again", pool.name, worker.pid)
            self.flush_queue()

    def refuse_queue(self, reason: policy.RefusalReason) -> None:
        """Answer every waiting connection 503 with `reason`."""
        while self.queue:
            waiting = self.queue.popleft()
            self.refuse(waiting.sock, waiting.message, reason)

    def expire_queue(self, now: float) -> None:
        """A request does not wait for a worker longer than a worker may take
        to start: past `startup_time_limit` in the queue, it gets 503:
        `startup_failed` if start-ups failed, `startup_timeout` if one is
        slow, `queue_timeout` if every worker stayed busy all that time."""
        limit = self.pool.settings.startup_time_limit
        if not self.queue or limit <= 0 or now - self.queue[0].since <= limit:
            return
        expired = self.pool.machine.handle(policy.QueueWaitExpired())
        if not expired:
            return  # a debugger holds a start: requests wait up to the queue bound
        (refuse,) = expired
        assert isinstance(refuse, policy.RefuseExpired)
        reason = refuse.reason
        while self.queue and now - self.queue[0].since > limit:
            waiting = self.queue.popleft()
            self.refuse(waiting.sock, waiting.message, reason)

    def refuse(self, sock: socket.socket, message: ch.Dispatch, reason: str) -> None:
        """Answer the connection 503 with `reason`, naming the event that
        explains it (a tcp_level pool that is disabled resets it instead)."""
        pool = self.pool
        if reason == "pool_disabled" and pool.settings.load_balancer_capability == "tcp_level":
            self._reset(sock, message)
            return
        text = {
            "startup_failed": f"Service Unavailable: the app of pool {pool.name!r} failed to start.",
            "startup_timeout": f"Service Unavailable: the app of pool {pool.name!r} did not "
            "start within its start-up time limit.",
            "queue_full": f"Service Unavailable: the queue of pool {pool.name!r} is full.",
            "queue_timeout": f"Service Unavailable: every worker of pool {pool.name!r} stayed "
            f"busy for {pool.settings.startup_time_limit:g}s while this request waited.",
            "pool_stopped": f"Service Unavailable: pool {pool.name!r} was stopped by an "
            "administrator.",
            "pool_disabled": f"Service Unavailable: pool {pool.name!r} was disabled by "
            "rapid-fail protection after its workers kept failing.",
            "shutting_down": "Service Unavailable: the server is shutting down.",
        }[reason]
        retry: tuple[tuple[str, str], ...] = (
            ()
            if reason in ("shutting_down", "pool_stopped", "pool_disabled")
            else (("Retry-After", "5"),)
        )
        if reason == "pool_disabled" and pool.disabled_seq is not None:
            retry += (("X-Poolwarden-Event", str(pool.disabled_seq)),)
            text += f"\nSee event {pool.disabled_seq}: poolwarden events show {pool.disabled_seq}"
        pool.on_refused(message, 503, reason, pool.name)
        failure, seq = pool.last_failure, pool.last_failure_seq
        if reason.startswith("startup_") and seq is not None:
            retry += (("X-Poolwarden-Event", str(seq)),)
            text += f"\nSee event {seq}: poolwarden events show {seq}"
        if reason.startswith("startup_") and failure is not None and pool.server.dev_mode:
            response = simple_response(
                503,
                startup_failure_page(pool.name, failure, seq),
                reason_code=reason,
                extra_headers=retry,
                content_type="text/html; charset=utf-8",
            )
        else:
            response = simple_response(503, text + "\n", reason_code=reason, extra_headers=retry)
        answer_and_close(pool.loop, sock, response)

    def _reset(self, sock: socket.socket, message: ch.Dispatch) -> None:
        """tcp_level: no HTTP answer, a reset, so a TCP balancer fails over."""
        self.pool.on_refused(message, 0, "pool_disabled_reset", self.pool.name)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()
