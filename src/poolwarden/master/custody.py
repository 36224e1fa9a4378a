"""Custody: the master's copy of every connection it handed to one worker.

```
 WorkerProcess.dispatch ──keep(conn_id, sock)──▶ Custody ◀── release: the worker's Closed
                                                   │     ◀── take: the worker's HandBack
 Pool's request watch ──WorkerProcess.abandon──▶ abandon: 504, or the end of a started response
 the worker ended or was orphaned ──────────────▶ answer_for_ended: 502 or close, each one
```

Custody is what lets the master answer for a worker that died: a connection
whose request was in the app, with no response byte sent (the scoreboard
says so), gets a `502` instead of a reset; any other is closed. The
answers name the event that explains them, in the body and in the
`X-Poolwarden-Event` header.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

from poolwarden.http.responses import simple_response
from poolwarden.master.answer import answer_and_close


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

    def __len__(self) -> int:
        return len(self.connections)

    def keep(self, conn_id: int, sock: socket.socket) -> None:
        self.connections[conn_id] = sock

    def release(self, conn_ids: Iterable[int]) -> None:
        """The worker closed these: close the master's copies too."""
        connections = self.connections
        for conn_id in conn_ids:
            sock = connections.pop(conn_id, None)
            if sock is not None:
                sock.close()

    def take(self, conn_id: int) -> socket.socket | None:
        """Take a connection out of custody (the worker handed it back)."""
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

    def answer_for_ended(self, in_app: set[int], event_seq: int | None, exit_text: str) -> None:
        """The worker ended (or was taken out of service): a request whose
        response had not started (its conn_id in `in_app`) gets a 502 naming
        the event that explains it; an idle keep-alive connection is closed."""
        extra, see = _event_reference(event_seq)
        for conn_id, sock in self.connections.items():
            if conn_id in in_app:
                answer_and_close(
                    self.loop,
                    sock,
                    simple_response(
                        502,
                        "Bad Gateway: the worker serving this request ended before it"
                        f" answered ({exit_text}).{see}\n",
                        reason_code="worker_died",
                        extra_headers=extra,
                    ),
                )
            else:
                sock.close()
        self.connections.clear()
