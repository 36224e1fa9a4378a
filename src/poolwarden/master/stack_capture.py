"""Reading a live worker's stacks: a request in, a faulthandler dump out.

```
 master ──sys.remote_exec (3.14+)──▶ worker main thread, next bytecode:
    │                                  bootstrap.dump_stacks: one enveloped write
    │ nothing within REMOTE_WAIT, or remote_exec not usable:
    ├──STACK_SIGNAL────────────────▶ worker: faulthandler (C, no GIL needed)
    │                                  writes every thread's stack
    ▲                                        │
    └──────── stack pipe, read end ◀─────────┘
```

Two ways in, one pipe. `sys.remote_exec` (PEP 768, `remote_exec.py`) needs
no signal handling in the worker, and its dump is taken holding the GIL, a
consistent picture of every thread; it is tried first when usable. But it
runs only when the worker's main thread next checks for pending work
between bytecodes, which a main thread stuck in C code (or waiting for the
GIL a thread spinning in C holds) never does. So when its dump has not
come within `REMOTE_WAIT`, the signal is sent: faulthandler's handler is C
and needs no GIL, and answers at once. The answer says which one came
(`Capture.via`).

The remote dump arrives whole, in an envelope with the request's token
(`stack_envelope`). faulthandler's marks no end, but it writes it at once
from the signal handler: that dump is complete when the pipe has been quiet
for a moment after its first byte. A worker that writes nothing (stopped,
or gone) gets an empty answer at the deadline rather than a hung caller.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from poolwarden.master.remote_exec import REMOTE_WAIT
from poolwarden.signals import STACK_SIGNAL
from poolwarden.stack_envelope import unwrap

QUIET = 0.03
"""Seconds without a byte after which a started signal dump is complete."""
DEADLINE = 2.0
PIPE_SIZE = 1024 * 1024
"""Large enough that the worker's signal handler never waits for the master."""

Via = Literal["remote_exec", "signal"]

RemoteRequest = Callable[[str, float], Awaitable[bool]]
"""`request(token, not_after)`: ask the worker through `sys.remote_exec` to
write its dump in `token`'s envelope unless it gets there after `not_after`
(CLOCK_MONOTONIC); False when it could not be asked."""


@dataclass(frozen=True, slots=True)
class Capture:
    dump: str
    """faulthandler's text; "" when the worker did not answer in time."""
    via: Via
    """Which way the dump came; "signal" also when none came (the last tried)."""


class StackPipe:
    """The master's end of one worker's stack pipe; one capture at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fcntl.fcntl(self.read_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB holds a dump of a few dozen threads
        os.set_blocking(self.write_fd, True)
        self._lock = asyncio.Lock()

    def close_write_end(self) -> None:
        """After the spawn: only the worker writes."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

    def _discard(self) -> None:
        """What an earlier capture left (a dump that came after its deadline)."""
        try:
            while os.read(self.read_fd, 65536):
                pass
        except BlockingIOError:
            pass

    async def capture(self, pid: int, remote: RemoteRequest | None = None) -> Capture:
        """Every thread's stack of worker `pid`, as faulthandler prints it,
        within `DEADLINE`: through `remote` first when given, else (or when
        its dump does not come within `REMOTE_WAIT`) with STACK_SIGNAL."""
        async with self._lock:
            if self.read_fd < 0:
                return Capture("", "signal")
            self._discard()
            arriving = _Arriving(self.loop, self.read_fd)
            try:
                return await self._capture(pid, remote, arriving)
            finally:
                arriving.close()

    async def _capture(
        self, pid: int, remote: RemoteRequest | None, arriving: _Arriving
    ) -> Capture:
        loop = self.loop
        deadline = loop.time() + DEADLINE
        token = None
        if remote is not None:
            token = secrets.token_hex(8)
            not_after = time.monotonic() + REMOTE_WAIT
            if await remote(token, not_after):
                # The worker's deadline on this process's clock, and the loop's.
                until = min(deadline, loop.time() + (not_after - time.monotonic()))
                if await arriving.until(lambda data: unwrap(data, token)[0] is not None, until):
                    return _remote(arriving.data, token)
        mark = len(arriving.data)
        try:
            os.kill(pid, STACK_SIGNAL)
        except ProcessLookupError:
            return Capture("", "signal")
        await arriving.until_quiet(mark, deadline)
        if token is not None and unwrap(bytes(arriving.data), token)[0] is not None:
            # The remote request ran after all, just after its time: as good.
            return _remote(arriving.data, token)
        _, signal_dump = unwrap(bytes(arriving.data[mark:]), None)
        return Capture(signal_dump.decode("utf-8", "replace"), "signal")


def _remote(data: bytearray, token: str) -> Capture:
    dump, _ = unwrap(bytes(data), token)
    assert dump is not None
    return Capture(dump.decode("utf-8", "replace"), "remote_exec")


class _Arriving:
    """The bytes that arrive on the pipe while one capture runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.data = bytearray()
        self._arrived = asyncio.Event()
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                self.data += chunk
        except BlockingIOError:
            pass
        self._arrived.set()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)

    async def _next(self, until: float) -> bool:
        """Wait for more bytes until loop time `until`; False at it."""
        remaining = until - self.loop.time()
        if remaining <= 0:
            return False
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), remaining)
        except TimeoutError:
            return False
        return True

    async def until(self, done: Callable[[bytes], bool], until: float) -> bool:
        """Wait until `done(data)`, or loop time `until`; whether it is done."""
        while not done(bytes(self.data)):
            if not await self._next(until):
                return done(bytes(self.data))
        return True

    async def until_quiet(self, mark: int, until: float) -> None:
        """Wait until bytes came after the first `mark` and then none for
        `QUIET` seconds (a signal dump is written at once), or until `until`."""
        while len(self.data) <= mark:
            if not await self._next(until):
                return
        while await self._next(min(until, self.loop.time() + QUIET)):
            pass
