"""An application pool: its workers, its queue, and where a connection goes.

A connection routed to the pool goes to the least busy Ready worker; while no
worker is Ready it waits in the pool's bounded queue (IIS's per-pool
`queueLength`), and past the bound it is answered `503 queue_full`. A worker
that ends unexpectedly is replaced; one that fails at start-up is replaced
after a back-off (immediately, then 1 s doubling to 30 s, as systemd and PM2
do), and while no worker can start, requests get `503 startup_failed`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from poolwarden import channel as ch
from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close
from poolwarden.master.worker_process import WorkerProcess, WorkerState
from poolwarden.settings import PoolSettings, ServerSettings

log = logging.getLogger("poolwarden")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


class PoolState(enum.Enum):
    STARTED = "started"
    STARTUP_FAILED = "startup_failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(slots=True)
class Waiting:
    """A connection waiting in the pool's queue for a worker."""

    sock: socket.socket
    message: ch.Dispatch


class Pool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: PoolSettings,
        server: ServerSettings,
        *,
        access_log_fd: int,
        on_startup_failure: Callable[[Pool, ch.StartupFailure], None],
        on_stopped: Callable[[Pool], None],
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.server = server
        self.access_log_fd = access_log_fd
        self.on_startup_failure = on_startup_failure
        self.on_stopped = on_stopped
        self.state = PoolState.STARTED
        self.workers: list[WorkerProcess] = []
        self.queue: deque[Waiting] = deque()
        self.dispatched = 0
        self.consecutive_failures = 0
        self._turn = 0
        self.last_failure: ch.StartupFailure | None = None
        self._respawn_timer: asyncio.TimerHandle | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._boot = ch.Boot(
            pool=settings.name,
            app=settings.app,
            factory=settings.factory,
            interface=settings.interface,
            threads=settings.threads,
            crash_file="",
            access_log=settings.access_log,
            access_log_format=settings.access_log_format,
            keepalive_timeout=settings.keepalive_timeout,
            head_limits={
                name: getattr(server.head_limits, name)
                for name in server.head_limits.__struct_fields__
            },
            scoreboard_slots=settings.scoreboard_slots,
            multiprocess=settings.processes > 1,
            graceful_timeout=settings.shutdown_time_limit,
        )
        os.makedirs(os.path.join(server.state_dir, "crash"), exist_ok=True)

    @property
    def name(self) -> str:
        return self.settings.name

    def start(self) -> None:
        """Start every worker now (an always-running pool)."""
        for _ in range(self.settings.processes):
            self._spawn()

    def _spawn(self) -> None:
        if self.state in (PoolState.STOPPING, PoolState.STOPPED):
            return  # a failure reported by an earlier spawn stopped the pool
        worker = WorkerProcess(
            self.loop,
            self.settings,
            boot=self._boot,
            state_dir=self.server.state_dir,
            access_log_fd=self.access_log_fd,
            on_ready=self._worker_ready,
            on_startup_failed=self._worker_startup_failed,
            on_exit=self._worker_exited,
        )
        try:
            worker.spawn()
        except OSError as error:
            log.error("pool %s: cannot start a worker: %s", self.name, error)
            self._spawn_failed(error)
            return
        self.workers.append(worker)
        log.debug("pool %s: started worker %d", self.name, worker.pid)

    def _spawn_failed(self, error: OSError) -> None:
        """No process could be started (a wrong interpreter or working
        directory, no memory, no pids): a start-up failure, with the same
        back-off, rather than a retry at once and forever."""
        self.consecutive_failures += 1
        failure = ch.StartupFailure(
            phase="spawn",
            app=self.settings.app,
            exception_type=type(error).__name__,
            message=f"cannot start a worker process: {error}",
        )
        self.last_failure = failure
        if not any(w.state is WorkerState.READY for w in self.workers):
            self.state = PoolState.STARTUP_FAILED
            self._refuse_queue("startup_failed")
        self.on_startup_failure(self, failure)
        self._schedule_respawn()

    # dispatch

    def dispatch(self, sock: socket.socket, message: ch.Dispatch) -> None:
        worker = self._least_busy()
        if worker is not None:
            self.dispatched += 1
            worker.dispatch(sock, message)
            return
        if self.state is PoolState.STARTUP_FAILED:
            self._refuse(sock, "startup_failed")
        elif self.state is not PoolState.STARTED:
            self._refuse(sock, "shutting_down")
        elif len(self.queue) >= self.settings.queue_length:
            self._refuse(sock, "queue_full")
        else:
            self.queue.append(Waiting(sock, message))

    def _least_busy(self) -> WorkerProcess | None:
        """The Ready worker with the fewest connections.

        The search starts one worker further on each time, so that ties go
        round: under light load every connection would otherwise land on
        the first worker, and the others would sit idle and cold.
        """
        workers = self.workers
        count = len(workers)
        if not count:
            return None
        self._turn = turn = (self._turn + 1) % count
        best = None
        for step in range(count):
            worker = workers[(turn + step) % count]
            if worker.state is WorkerState.READY and (best is None or worker.load < best.load):
                best = worker
        return best

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        text = {
            "startup_failed": f"Service Unavailable: the app of pool {self.name!r} failed to start.",
            "queue_full": f"Service Unavailable: the queue of pool {self.name!r} is full.",
            "shutting_down": "Service Unavailable: the server is shutting down.",
        }[reason]
        if reason == "startup_failed" and self.last_failure is not None:
            text += f"\n{self.last_failure.headline()}"
        retry = () if reason == "shutting_down" else (("Retry-After", "5"),)
        answer_and_close(
            self.loop,
            sock,
            simple_response(503, text + "\n", reason_code=reason, extra_headers=retry),
        )

    def _flush_queue(self) -> None:
        while self.queue:
            worker = self._least_busy()
            if worker is None:
                return
            waiting = self.queue.popleft()
            self.dispatched += 1
            worker.dispatch(waiting.sock, waiting.message)

    def _refuse_queue(self, reason: str) -> None:
        while self.queue:
            self._refuse(self.queue.popleft().sock, reason)

    # worker events

    def _worker_ready(self, worker: WorkerProcess) -> None:
        log.info(
            "pool %s: worker %d ready (%s), serving %s",
            self.name,
            worker.pid,
            worker.interface,
            self.settings.app,
        )
        self.consecutive_failures = 0
        if self.state is PoolState.STARTUP_FAILED:
            self.state = PoolState.STARTED
        self._flush_queue()

    def _worker_startup_failed(self, worker: WorkerProcess, failure: ch.StartupFailure) -> None:
        self.last_failure = failure
        log.error("pool %s: worker %d: %s", self.name, worker.pid, failure.headline())
        self.on_startup_failure(self, failure)

    def _worker_exited(self, worker: WorkerProcess) -> None:
        if worker in self.workers:
            self.workers.remove(worker)
        stopping = self.state in (PoolState.STOPPING, PoolState.STOPPED)
        if worker.startup_failure is not None:
            pass  # logged when it arrived
        elif stopping or worker.killed_by_master:
            log.debug("pool %s: worker %d %s", self.name, worker.pid, worker.exit_text)
        else:
            log.error(
                "pool %s: worker %d %s unexpectedly%s",
                self.name,
                worker.pid,
                worker.exit_text,
                f"; last output: {worker.tail[-1]}" if worker.tail else "",
            )
        if stopping:
            if not self.workers:
                self._stopped()
            return
        if not worker.ever_ready:
            self.consecutive_failures += 1
            if not any(w.state is WorkerState.READY for w in self.workers):
                self.state = PoolState.STARTUP_FAILED
                self._refuse_queue("startup_failed")
            if worker.startup_failure is None and not worker.killed_by_master:
                # Last: failing fast stops the pool.
                self._died_before_ready(worker)
        self._schedule_respawn()

    def _died_before_ready(self, worker: WorkerProcess) -> None:
        """A worker that ended before Ready without saying why is a start-up
        failure all the same: a crash in a C extension at import, `os._exit`,
        the OOM killer. Without this, fail-fast would retry it forever."""
        message = f"the worker ended before it was ready ({worker.exit_text})"
        if worker.tail:
            message += f"; its last output: {worker.tail[-1]}"
        if os.path.exists(worker.crash_file):
            message += f"; its crash dump: {worker.crash_file}"
        failure = ch.StartupFailure(
            phase="boot", app=self.settings.app, exception_type="WorkerDied", message=message
        )
        self.last_failure = failure
        self.on_startup_failure(self, failure)

    def _schedule_respawn(self) -> None:
        if self.state in (PoolState.STOPPING, PoolState.STOPPED) or self._respawn_timer:
            return
        missing = self.settings.processes - len(self.workers)
        if missing <= 0:
            return
        delay = 0.0
        if self.consecutive_failures > 1:
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.consecutive_failures - 2))
        self._respawn_timer = self.loop.call_later(delay, self._respawn)

    def _respawn(self) -> None:
        self._respawn_timer = None
        for _ in range(self.settings.processes - len(self.workers)):
            self._spawn()

    # shutdown

    def drain(self, time_limit: float) -> None:
        """Stop taking work, let workers finish, kill them at the time limit."""
        if self.state in (PoolState.STOPPING, PoolState.STOPPED):
            return
        self.state = PoolState.STOPPING
        if self._respawn_timer:
            self._respawn_timer.cancel()
            self._respawn_timer = None
        self._refuse_queue("shutting_down")
        for worker in list(self.workers):
            worker.drain()
        self._kill_timer = self.loop.call_later(time_limit, self.kill)
        if not self.workers:
            self._stopped()

    def kill(self) -> None:
        """Stop at once: every worker gets SIGKILL."""
        if self.state is not PoolState.STOPPED:
            self.state = PoolState.STOPPING
        if self._respawn_timer:
            self._respawn_timer.cancel()
            self._respawn_timer = None
        self._refuse_queue("shutting_down")
        for worker in self.workers:
            # One that reported a start-up failure is on its way out anyway.
            if worker.state is not WorkerState.EXITED and worker.startup_failure is None:
                log.warning("pool %s: killing worker %d", self.name, worker.pid)
            worker.kill()
        if not self.workers:
            self._stopped()

    def _stopped(self) -> None:
        if self.state is PoolState.STOPPED:
            return
        self.state = PoolState.STOPPED
        if self._kill_timer:
            self._kill_timer.cancel()
        self.on_stopped(self)
