"""What a pool's workers report to it: Ready, a start-up failure, a debugger,
a thread that died, an orphaned worker, and a worker's end.

```
 WorkerProcess callbacks              WorkerReports
   on_ready, on_startup_failed,  ──▶    the event (20xx, 50xx) ─▶ EventLog
   on_debugged, on_thread_failed,       WorkerReady, WorkerEnded, WorkerExited, ... ─▶ PoolMachine
   on_orphaned, on_ended, on_exit       its actions, with the evidence ─▶ Lifecycle.apply
                                        a worker Ready ─▶ Dispatcher.flush_queue
```

Each report is written as the pool's event before the machine's actions
are performed: the 5002 that `Disable` writes must come after the failure
it names. A worker's end is classified here (`events.classify`), and its
event's number goes into the 502s of the requests it left unanswered. The
Lifecycle wires these callbacks into every `WorkerProcess` it starts; the
workers and orphans lists are the `Pool`'s.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import msgspec

from poolwarden import channel as ch
from poolwarden.activation import pool_policy as policy
from poolwarden.activation.pool_policy import PoolState
from poolwarden.activation.rapid_fail import standing
from poolwarden.events import catalog
from poolwarden.events.classify import EndedBy, classify
from poolwarden.master.worker_process import WorkerProcess

if TYPE_CHECKING:
    from poolwarden.master.pool import Pool

log = logging.getLogger("poolwarden")


class WorkerReports:
    """Receives one pool's workers' callbacks."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def ready(self, worker: WorkerProcess) -> None:
        pool = self.pool
        log.info(
            "pool %s: worker %d ready (%s), serving %s",
            pool.name,
            worker.pid,
            worker.interface,
            pool.settings.app,
        )
        pool.events.emit(
            catalog.WORKER_READY,
            f"worker {worker.pid} of pool {pool.name!r} is ready ({worker.interface})",
            pool=pool.name,
            pid=worker.pid,
            details={"interface": worker.interface, "startup_seconds": worker.startup_seconds},
        )
        for action in pool.machine.handle(policy.WorkerReady(worker.pid)):
            if isinstance(action, policy.Drain):  # the oldest worker it replaces
                log.info("pool %s: worker %d replaced; draining it", pool.name, action.id)
            pool.lifecycle.apply([action])
        pool.dispatcher.flush_queue()

    def debugged(self, worker: WorkerProcess) -> None:
        """A debugger holds the worker: from now on its failures are not the app's."""
        self.pool.machine.handle(policy.WorkerDebugged(worker.pid))

    def startup_failed(self, worker: WorkerProcess, failure: ch.StartupFailure) -> None:
        pool = self.pool
        pool.last_failure = failure
        pool.machine.handle(policy.StartupFailureReported(failure.phase == "startup_timeout"))
        log.error("pool %s: worker %d: %s", pool.name, worker.pid, failure.headline())
        pool.on_startup_failure(pool, failure)

    def thread_failed(self, worker: WorkerProcess, message: ch.ThreadFailed) -> None:
        pool = self.pool
        log.warning(
            "pool %s: worker %d: an exception ended thread %r: %s: %s",
            pool.name,
            worker.pid,
            message.thread,
            message.exception_type,
            message.message,
        )
        pool.events.thread_failed(pool.name, worker.pid, message)

    def ended(self, worker: WorkerProcess) -> int | None:
        """Classify the end of a reaped worker and write its event; the event's
        sequence number goes in the 502s of the requests it left unanswered."""
        pool = self.pool
        classification = classify(worker.evidence())
        actions = pool.machine.handle(
            policy.WorkerEnded(worker.pid, classification.counts_as_failure, time.monotonic())
        )
        for counted in actions:
            if not isinstance(counted, policy.FailureCounted):
                continue  # a debugged worker's or an orphan's end never counts
            where = standing(counted.count, pool.rapid_fail)
            classification = msgspec.structs.replace(
                classification,
                message=f"{classification.message}; {where}",
                details={**classification.details, "rapid_fail": where},
            )
        seq = pool.events.worker_ended(classification)
        if seq is not None:
            pool.last_event = f"{classification.event_id} #{seq}"
            if not worker.ever_ready:
                pool.last_failure_seq = seq
        # Last: a disable these actions bring is the newer news (5002).
        pool.lifecycle.apply(
            actions, evidence=(classification.message, classification.details, seq)
        )
        return seq

    def orphaned(self, worker: WorkerProcess, reason: EndedBy, stacks: str) -> int | None:
        """A failed worker kept stopped: out of service at once, counted as a
        failure (unless a debugger held it), replaced, and handed to
        `orphan_action_command`: as the pool's machine decides."""
        pool = self.pool
        if worker in pool.workers:
            pool.workers.remove(worker)
            pool.requests_served_by_gone_workers += worker.scoreboard.served()
        pool.orphans.append(worker)
        actions = pool.machine.handle(
            policy.WorkerOrphaned(worker.pid, time.monotonic(), pool.dispatcher.queued)
        )
        counted = next((a for a in actions if isinstance(a, policy.FailureCounted)), None)
        where = (
            standing(counted.count, pool.rapid_fail)
            if counted is not None
            else "not counted: a debugger held it"
        )
        why = {
            "hang": "did not answer a ping in time",
            "startup_time_limit": "was not ready within the start-up time limit",
        }.get(reason, "lost its channel")
        message = (
            f"worker {worker.pid} of pool {pool.name!r} {why} and is kept stopped (SIGSTOP) "
            f"for inspection; {where}"
        )
        log.error("pool %s: %s", pool.name, message)
        seq = pool.events.emit(
            catalog.WORKER_ORPHANED,
            message,
            pool=pool.name,
            pid=worker.pid,
            details={"reason": reason, "stacks": stacks, "rapid_fail": where},
            fingerprint=f"2027 {pool.name} {reason}",
        )
        pool.last_event = f"{catalog.WORKER_ORPHANED} #{seq}" if seq is not None else None
        pool.lifecycle.apply(actions, worker=worker, evidence=(message, {"reason": reason}, seq))
        return seq

    def recycle_requested(self, worker: WorkerProcess, message: ch.RecycleRequest) -> None:
        """The worker asks to be replaced. At its request limit it serves on
        until its replacement is Ready (an overlapped recycle, 5075), so the
        limit is kept to within what arrives while the replacement starts.
        After a SIGTERM from outside it is drained now, whatever the pool's
        state: it was told to go by someone with the right to."""
        pool = self.pool
        if message.reason == "requests":
            if pool.state is PoolState.STARTED and not worker.retiring:
                pool.recycler.recycle_worker(
                    worker,
                    f"it served {message.served} requests (its limit: {worker.request_limit})",
                    "requests",
                    catalog.RECYCLE_REQUESTS,
                )
            return
        log.warning(
            "pool %s: worker %d got %s from outside; draining it%s",
            pool.name,
            worker.pid,
            message.reason,
            " and starting a replacement" if pool.state is PoolState.STARTED else "",
        )
        pool.last_event = f"worker {worker.pid} got {message.reason} from outside"
        pool.lifecycle.apply(pool.machine.handle(policy.WorkerSignalled(worker.pid)))

    def exited(self, worker: WorkerProcess) -> None:
        pool = self.pool
        if worker in pool.orphans:
            pool.orphans.remove(worker)
            pool.machine.handle(policy.WorkerExited(worker.pid))  # forgotten: no news
            return  # out of service since it was orphaned
        if worker in pool.workers:
            pool.workers.remove(worker)
            pool.requests_served_by_gone_workers += worker.served_at_exit
        state = pool.state
        actions = pool.machine.handle(
            policy.WorkerExited(
                worker.pid,
                reported_startup_failure=worker.startup_failure is not None,
                timed_out=worker.timed_out,
                killed_by_master=worker.killed_by_master,
                queued=pool.dispatcher.queued,
            )
        )
        if state is PoolState.DISABLED:
            return  # rapid-fail protection: nothing more is started
        stopping = state in (PoolState.STOPPING, PoolState.STOPPED)
        if worker.startup_failure is not None or worker.timed_out:
            pass  # logged when it arrived, or reported by the actions
        elif stopping or worker.killed_by_master or worker.retiring or worker.ended_by:
            log.debug("pool %s: worker %d %s", pool.name, worker.pid, worker.exit_text)
        else:
            log.error(
                "pool %s: worker %d %s unexpectedly%s",
                pool.name,
                worker.pid,
                worker.exit_text,
                f"; last output: {worker.tail[-1]}" if worker.tail else "",
            )
        pool.lifecycle.apply(actions, worker=worker)
