"""Looking into a live worker: its threads' stacks, an ASGI worker's tasks, a debugger.

```
 control API, Pool ──WorkerProcess.capture_stacks──▶ WorkerDiagnostics.capture
     StackPipe.capture: sys.remote_exec (3.14+), else STACK_SIGNAL ──▶ faulthandler's dump
     ◀── every thread, its source lines, and the request it serves (scoreboard)
 WorkerProcess.tasks ──▶ tasks: DumpTasks(seq) over the channel ──▶ the worker's loop
                         tasks_answered ◀── Tasks(seq) ◀── (None if the loop is blocked)
 WorkerProcess.attach ──▶ attach: the attach script through sys.remote_exec, else
     ATTACH_SIGNAL; and the signal too if the worker has not listened within REMOTE_WAIT
```

Both ways in try `sys.remote_exec` first where it is usable (no signal
handling needed in the worker), and fall back to a signal, which reaches
a main thread stuck in C code where a remote script never runs. The way
taken is said (`WorkerStacks.via`) or logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable

import msgspec

from poolwarden import channel as ch
from poolwarden.master import remote_exec
from poolwarden.master.remote_exec import RemoteExec
from poolwarden.master.stack_capture import StackPipe, Via
from poolwarden.scoreboard import Phase, Scoreboard, SlotView
from poolwarden.signals import ATTACH_SIGNAL
from poolwarden.stacks import (
    RequestInfo,
    StackFrame,
    TaskStack,
    ThreadStack,
    parse_faulthandler,
    with_source,
)

log = logging.getLogger("poolwarden")


class WorkerStacks(msgspec.Struct, frozen=True):
    """A worker's threads at one moment, and which way their dump came."""

    threads: list[ThreadStack]
    via: Via


def _request_info(slot: SlotView | None) -> RequestInfo | None:
    if slot is None:
        return None
    return RequestInfo(
        method=slot.method,
        path=slot.path,
        client=slot.client,
        elapsed=round(max(0.0, time.time() - slot.started), 3),
        response_started=slot.phase is Phase.RESPONDING,
    )


class WorkerDiagnostics:
    """The ways into one spawned worker; its handle checks that it still runs."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: str,
        *,
        stack_pipe: StackPipe,
        scoreboard: Scoreboard,
        send: Callable[[ch.ToWorker], None],
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.stack_pipe = stack_pipe
        self.scoreboard = scoreboard
        self.send = send
        self._task_dumps: dict[int, asyncio.Future[ch.Tasks]] = {}
        self._task_dump_seq = 0
        self._attaching: asyncio.Task[None] | None = None

    @functools.cached_property
    def remote(self) -> RemoteExec:
        """PEP 768's way into this worker (`stacks`, `attach`), made at first use."""
        return RemoteExec()

    # stacks

    async def capture(self, pid: int, interface: str) -> WorkerStacks:
        """Every thread's Python stack in worker `pid` now, each with the
        request it serves; through `sys.remote_exec` when usable (Python
        3.14+), else, or when the worker's main thread did not run it within
        REMOTE_WAIT, with STACK_SIGNAL (`StackPipe.capture`). No threads if
        the worker did not answer in time."""
        request = functools.partial(self._request_stacks, pid) if remote_exec.SUPPORTED else None
        capture = await self.stack_pipe.capture(pid, request)
        if not capture.dump:
            return WorkerStacks([], capture.via)
        threads = parse_faulthandler(capture.dump)
        if capture.via == "remote_exec":
            threads = remote_exec.without_script_frames(threads)
        serving = {slot.thread: slot for slot in self.scoreboard.busy() if slot.thread}
        if interface == "asgi":
            serving = {}  # one loop thread serves every request: see task_stacks()
        return WorkerStacks(
            [
                msgspec.structs.replace(
                    thread,
                    frames=with_source(thread.frames),
                    request=_request_info(serving.get(thread.ident)),
                )
                for thread in threads
            ],
            capture.via,
        )

    async def _request_stacks(self, pid: int, token: str, not_after: float) -> bool:
        verdict = await asyncio.to_thread(
            self.remote.run, pid, lambda path: remote_exec.stack_script(path, token, not_after)
        )
        if not verdict.usable:
            log.debug("worker %d: stacks via signal: %s", pid, verdict.reason)
        return verdict.usable

    # an ASGI worker's tasks

    async def task_stacks(self) -> list[TaskStack] | None:
        """An ASGI worker's pending tasks, each with the request it serves;
        None if the loop did not answer (it is blocked)."""
        dump = await self.tasks()
        if dump is None:
            return None
        serving = {slot.conn_id: slot for slot in self.scoreboard.busy()}
        return [
            TaskStack(
                name=task.name,
                frames=with_source([StackFrame(f.filename, f.lineno, f.name) for f in task.frames]),
                request=_request_info(serving.get(task.conn_id)) if task.conn_id else None,
            )
            for task in dump.tasks
        ]

    async def tasks(self, timeout: float = 1.0) -> ch.Tasks | None:
        """An ASGI worker's pending tasks and where each waits; None when its
        loop did not answer in time (blocked: its thread's stack says by what)."""
        self._task_dump_seq += 1
        seq = self._task_dump_seq
        waiter: asyncio.Future[ch.Tasks] = self.loop.create_future()
        self._task_dumps[seq] = waiter
        self.send(ch.DumpTasks(seq))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._task_dumps.pop(seq, None)

    def tasks_answered(self, message: ch.Tasks) -> None:
        waiter = self._task_dumps.pop(message.seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)

    # a debugger

    def attach(self, pid: int, unanswered: Callable[[], bool]) -> None:
        """Have worker `pid` open a pdb server and stop its main thread once
        a client connects.

        Through `sys.remote_exec` where usable (Python 3.14+: no signal
        handling needed), else with ATTACH_SIGNAL; a remote request the worker
        has not acted on within REMOTE_WAIT (`unanswered()`: its main thread
        is blocked) is followed by the signal, and the worker acts on the
        first of the two only (`debugger.attach_handler`). The way taken is
        logged.
        """
        if not remote_exec.SUPPORTED:
            self._attach_by_signal(pid, "sys.remote_exec is new in Python 3.14")
            return
        self._attaching = self.loop.create_task(self._attach_remotely(pid, unanswered))

    async def _attach_remotely(self, pid: int, unanswered: Callable[[], bool]) -> None:
        not_after = time.monotonic() + remote_exec.REMOTE_WAIT
        verdict = await asyncio.to_thread(
            self.remote.run, pid, lambda path: remote_exec.attach_script(path, not_after)
        )
        if not verdict.usable:
            self._attach_by_signal(pid, verdict.reason)
            return
        log.info("pool %s: worker %d: attaching a debugger via remote_exec", self.pool, pid)
        self.loop.call_later(
            max(0.0, not_after - time.monotonic()), self._attach_fallback, pid, unanswered
        )

    def _attach_fallback(self, pid: int, unanswered: Callable[[], bool]) -> None:
        """REMOTE_WAIT is over: unless the worker listens for a debugger by
        now, its main thread did not run the script; the signal may reach it."""
        if unanswered():
            self._attach_by_signal(
                pid, f"no answer to remote_exec within {remote_exec.REMOTE_WAIT:g}s"
            )

    def _attach_by_signal(self, pid: int, why: str) -> None:
        log.info("pool %s: worker %d: attaching a debugger via signal (%s)", self.pool, pid, why)
        try:
            os.kill(pid, ATTACH_SIGNAL)
        except ProcessLookupError:
            pass  # it ended: its exit is handled as any other
