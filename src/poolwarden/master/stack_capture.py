"""Reading a live worker's stacks: a signal in, faulthandler's dump out.

```
 master ──STACK_SIGNAL──▶ worker: faulthandler (C, no GIL needed) writes
    ▲                              every thread's stack to its stack pipe
    └──────── pipe read end ◀──────┘
```

faulthandler marks no end of its dump, but it writes it at once from the
signal handler: the dump is complete when the pipe has been quiet for a
moment after the first byte. A worker that writes nothing (stopped, or
gone) gets an empty answer at the deadline rather than a hung caller.
"""

from __future__ import annotations

import asyncio
import fcntl
import os

from poolwarden.signals import STACK_SIGNAL

QUIET = 0.03
"""Seconds without a byte after which a started dump is complete."""
DEADLINE = 2.0
PIPE_SIZE = 1024 * 1024
"""Large enough that the worker's signal handler never waits for the master."""


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

    async def capture(self, pid: int) -> str:
        """Every thread's stack of worker `pid`, as faulthandler prints it;
        "" when the worker did not answer within the deadline."""
        async with self._lock:
            if self.read_fd < 0:
                return ""
            self._discard()
            try:
                os.kill(pid, STACK_SIGNAL)
            except ProcessLookupError:
                return ""
            return await self._read_dump()

    async def _read_dump(self) -> str:
        loop = self.loop
        chunks: list[bytes] = []
        arrived = asyncio.Event()
        fd = self.read_fd

        def readable() -> None:
            try:
                while chunk := os.read(fd, 65536):
                    chunks.append(chunk)
            except BlockingIOError:
                pass
            arrived.set()

        loop.add_reader(fd, readable)
        deadline = loop.time() + DEADLINE
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                arrived.clear()
                wait = min(remaining, QUIET) if chunks else remaining
                try:
                    await asyncio.wait_for(arrived.wait(), wait)
                except TimeoutError:
                    if chunks:
                        break
        finally:
            loop.remove_reader(fd)
        return b"".join(chunks).decode("utf-8", "replace")
