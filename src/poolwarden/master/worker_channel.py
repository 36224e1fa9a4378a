"""The master's end of one worker's channel: messages, and connections as fds.

```
 WorkerProcess ──send(Ping, Drain, Abandon, DumpTasks...)────┐
 WorkerProcess ──send_connection(Dispatch, sock)─────────────┤ SOCK_SEQPACKET ──▶ worker
               (waiting in a backlog while the buffer is full)┘
 worker ──Ready, Closed, Pong, HandBack(+fd)...──▶ WorkerChannel.receive ──on_message──▶ WorkerProcess
 worker ──end of the channel, its process alive CHANNEL_GRACE later──────on_broken──▶ WorkerProcess
```

One datagram is one message (`poolwarden.channel`). A connection goes with
SCM_RIGHTS beside its `Dispatch` and the master never waits for the
worker: while the socket buffer is full, connections wait in order in a
backlog that is flushed when it drains. An fd that comes back (a
`HandBack`) is closed at once, since the master kept its own copy in
custody.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable

from poolwarden import channel as ch

CHANNEL_GRACE = 1.0
"""Seconds between a worker's channel closing and the conclusion that it
broke while the process lives (an exiting process closes it first)."""


class WorkerChannel:
    """Sends to one worker and reads what it says, on the master's loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        *,
        on_message: Callable[[ch.ToMaster], None],
        alive: Callable[[], bool],
        on_broken: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        """Non-blocking; the worker holds the other end."""
        self.on_message = on_message
        self.alive = alive
        """Whether the worker's process has not been reaped yet."""
        self.on_broken = on_broken
        """The channel is gone while the process lives on."""
        self._backlog: deque[tuple[bytes, socket.socket]] = deque()

    def start(self) -> None:
        """Read the worker's messages as they come."""
        self.loop.add_reader(self.sock.fileno(), self.receive)

    def send(self, message: ch.ToWorker) -> None:
        """Send now; a worker that cannot be told any more is dying, and its
        exit is handled as any other."""
        try:
            self.sock.send(ch.encode(message))
        except OSError:
            pass

    def send_connection(self, message: ch.Dispatch, conn: socket.socket) -> None:
        """Hand a connection over without waiting for the worker."""
        payload = ch.encode(message)
        if self._backlog:
            self._backlog.append((payload, conn))
            return
        try:
            socket.send_fds(self.sock, [payload], [conn.fileno()])
        except BlockingIOError:
            self._backlog.append((payload, conn))
            self.loop.add_writer(self.sock.fileno(), self._flush_backlog)
        except OSError:
            # The worker is dying; its exit handler answers for the connection.
            pass

    def clear_backlog(self) -> None:
        """Forget the connections not sent yet (custody answers for them)."""
        self._backlog.clear()

    def _flush_backlog(self) -> None:
        while self._backlog:
            payload, conn = self._backlog[0]
            try:
                socket.send_fds(self.sock, [payload], [conn.fileno()])
            except BlockingIOError:
                return
            except OSError:
                break
            self._backlog.popleft()
        self.loop.remove_writer(self.sock.fileno())

    def receive(self) -> None:
        """Every message waiting now, in order. At the end of the channel,
        `on_broken` follows if the process still lives CHANNEL_GRACE later."""
        while True:
            try:
                payload, fd = ch.receive(self.sock)
            except BlockingIOError:
                return
            except OSError:
                payload, fd = b"", None
            if fd is not None:
                os.close(fd)  # a handed-back connection: the master has its own copy
            if not payload:
                self.loop.remove_reader(self.sock.fileno())
                if self.alive():
                    # A worker that exits closes its channel a moment before
                    # it can be reaped; one that still lives after a grace
                    # period has lost its channel while running.
                    self.loop.call_later(CHANNEL_GRACE, self._closed_a_while_ago)
                return
            self.on_message(ch.decode_to_master(payload))

    def _closed_a_while_ago(self) -> None:
        if self.alive():
            self.on_broken()

    def close(self) -> None:
        try:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
        except (OSError, ValueError):
            pass
        self.sock.close()
