"""Custody: the master's copy of every connection it handed to one worker.

```
 WorkerProcess.dispatch ──keep(conn_id, sock)──▶ Custody ◀── release: the worker's Closed
                                                   │     ◀── take: the worker's HandBack
 Pool's request watch ──WorkerProcess.abandon──▶ abandon: 504, or the end of a started response
 the worker ended or was orphaned ──────────────▶ answer_for_ended: 502 or close, each one
```

Custody is what lets the master answer for a worker that died: a connection
whose request was in the app, with no response byte sent (the scoreboard
says so), gets a `502` instead of a reset. Of the others:

- one the worker provably never touched (the kernel's counts of bytes read
  from it and written to it have not moved since the hand-off:
  `byte_counts`) goes to another worker with the head the master read: the
  app never saw it, nothing of it happened yet;
- one with bytes waiting in its socket gets a `502`: the client sent a
  request nobody answered. It is not sent on, since the worker may have
  read part of it (or a request before it, pipelined) into its own buffer
  without starting it: the counts cannot say what it consumed, only that
  it did, and a request replayed in part, or twice, is worse than a 502;
- an idle one (nothing waiting) is closed, as any idle keep-alive
  connection may be.

The answers name the event that explains them, in the body and in the
`X-Poolwarden-Event` header.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

from poolwarden import channel as ch
from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close
from poolwarden.master.byte_counts import byte_counts, waiting


def _event_reference(event_seq: int | None) -> tuple[tuple[tuple[str, str], ...], str]:
    """The header and the sentence that point a client at the event."""
    if event_seq is None:
        return (), ""
    return (("X-Poolwarden-Event", str(event_seq)),), (
        f" See `poolwarden events show {event_seq}`."
    )


class Custody:
    """One worker's connections, by conn_id, until it says it closed them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: dict[int, socket.socket] = {}
        self.handed: dict[int, tuple[ch.Dispatch, tuple[int, int] | None]] = {}
        """Each connection's Dispatch and its byte counts at the hand-off."""

    def __len__(self) -> int:
        return len(self.connections)

    def keep(self, conn_id: int, sock: socket.socket, message: ch.Dispatch | None = None) -> None:
        self.connections[conn_id] = sock
        if message is not None:
            self.handed[conn_id] = (message, byte_counts(sock))

    def release(self, conn_ids: Iterable[int]) -> None:
        """The worker closed these: close the master's copies too."""
        connections = self.connections
        for conn_id in conn_ids:
            self.handed.pop(conn_id, None)
            sock = connections.pop(conn_id, None)
            if sock is not None:
                sock.close()

    def take(self, conn_id: int) -> socket.socket | None:
        """Take a connection out of custody (the worker handed it back)."""
        self.handed.pop(conn_id, None)
        return self.connections.pop(conn_id, None)

    def abandon(
        self, conn_id: int, answer: bool, event_seq: int | None, request_timeout: float
    ) -> None:
        """Answer for a request that ran too long: `504` if no response byte
        was sent (`answer`), else just the end of the connection. Shutting it
        for writing means nothing the app sends later arrives."""
        sock = self.connections.pop(conn_id, None)
        if sock is None:
            return
        if not answer:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            return
        extra, see = _event_reference(event_seq)
        answer_and_close(
            self.loop,
            sock,
            simple_response(
                504,
                f"Gateway Timeout: the app did not answer within the request time-out "
                f"({request_timeout:g}s).{see}\n",
                reason_code="request_timeout",
                extra_headers=extra,
            ),
        )

    def answer_for_ended(
        self, in_app: set[int], event_seq: int | None, exit_text: str
    ) -> list[tuple[socket.socket, ch.Dispatch]]:
        """The worker ended (or was taken out of service): a request whose
        response had not started (its conn_id in `in_app`), or one waiting
        unread in its socket, gets a 502 naming the event that explains it;
        an idle keep-alive connection is closed. Returned, to be dispatched
        again: the connections the worker never touched."""
        extra, see = _event_reference(event_seq)
        untouched: list[tuple[socket.socket, ch.Dispatch]] = []
        for conn_id, sock in self.connections.items():
            message, counts = self.handed.get(conn_id, (None, None))
            if conn_id in in_app:
                what = "the worker serving this request ended before it answered"
            elif message is not None and counts is not None and byte_counts(sock) == counts:
                untouched.append((sock, message))
                continue
            elif waiting(sock):
                what = "the worker holding this connection ended before it read this request"
            else:
                sock.close()
                continue
            answer_and_close(
                self.loop,
                sock,
                simple_response(
                    502,
                    f"Bad Gateway: {what} ({exit_text}).{see}\n",
                    reason_code="worker_died",
                    extra_headers=extra,
                ),
            )
        self.connections.clear()
        self.handed.clear()
        return untouched
