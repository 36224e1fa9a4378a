"""Reading a worker's stdout and stderr pipes, line by line.

Every line goes to the master's stderr prefixed with the pool and the pid, in
one write, so the app's output is never lost or interleaved mid-line; the
last lines are kept for the crash reports.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

MAX_LINE = 65536
"""A line longer than this is passed on in pieces."""


class OutputReader:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        prefix: str,
        tail: deque[str],
        own_tail: deque[str] | None = None,
        sink_fd: int = 2,
    ) -> None:
        self._loop = loop
        self._fd = fd
        self._prefix = prefix.encode()
        self._tail = tail
        self._own_tail = own_tail
        self._sink = sink_fd
        self._partial = b""
        self.closed = False
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        self.read_available()

    def read_available(self) -> None:
        """Read what the pipe holds now; at EOF flush and close."""
        while not self.closed:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        out = []
        for line in lines:
            line = line.rstrip(b"\r")
            text = line.decode("utf-8", "replace")
            self._tail.append(text)
            if self._own_tail is not None:
                self._own_tail.append(text)
            out.append(self._prefix + line + b"\n")
        try:
            os.write(self._sink, b"".join(out))
        except OSError:
            pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._partial:
            self._write([self._partial])
            self._partial = b""
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
