"""An ASGI worker's WebSockets: taking a connection over from HTTP, counting
the open ones against `max_websockets`, and closing them at a drain.

```
 HttpProtocol.data_received ──HttpParserUpgrade──▶ take_over(protocol, rest)
     │ not a WebSocket handshake: served as HTTP       │ transport.set_protocol
     ▼                                                 ▼
 RequestCycle (the app's http scope)           WebSocketSession ──▶ OpenWebSockets
                                                   (websocket.py)     (admit, drain)
```

A drain (`ch.Drain`) keeps open WebSockets open, as it keeps requests in
flight running, until `graceful_timeout` (the pool's `shutdown_time_limit`)
is about to pass: then each gets a close frame 1001 (going away) and the
rest of the limit (`GOING_AWAY_WAIT` at most) to answer it, so that the
worker exits within the limit whatever its clients do.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from poolwarden import channel as ch
from poolwarden.http.upgrade import is_websocket_upgrade
from poolwarden.worker.websocket import WebSocketSession

if TYPE_CHECKING:
    from poolwarden.worker.asgi import HttpProtocol

GOING_AWAY_WAIT = 2.0
"""Seconds before the shut-down time limit at which a draining worker closes
its WebSockets with 1001, for their clients to finish the close handshake
(a quarter of the limit when that is shorter)."""


def take_over(protocol: HttpProtocol, rest: bytes) -> bool:
    """Hand the connection to a WebSocket session if its last head (the one
    llhttp stopped at) is a WebSocket handshake; `rest` is what followed it.

    A handshake pipelined behind requests not yet answered cannot switch
    protocols under them: it is served as the HTTP request it also is, and
    the connection closes after its response (RFC 9110 §7.8 lets a server
    ignore an Upgrade). So is one that belongs to another pool: it goes back
    to the front end like any other request.
    """
    pipeline = protocol.pipeline
    transport = protocol.transport
    if not pipeline or transport is None:
        return False
    cycle = pipeline[-1]
    scope = cycle.scope
    if cycle.hand_back or not is_websocket_upgrade(
        scope["method"], scope["http_version"], scope["headers"]
    ):
        return False
    if protocol.active is not None or len(pipeline) > 1:
        cycle.close_after = True
        return False
    pipeline.pop()
    protocol.closing = True  # it no longer writes to, reads or closes the transport
    write_paused = protocol.writable is not None
    session = WebSocketSession(
        protocol.server, protocol, scope, cycle.target, transport, write_paused
    )
    transport.set_protocol(session)
    session.start(rest)
    return True


class OpenWebSockets:
    """The WebSockets a worker holds open, and their end at a drain."""

    def __init__(self, loop: asyncio.AbstractEventLoop, boot: ch.Boot) -> None:
        self.loop = loop
        self.limit = boot.websocket.max_websockets
        self.time_limit = boot.graceful_timeout
        self.sessions: set[WebSocketSession] = set()
        self.going_away = False
        """Past the drain's deadline: handshakes still arriving get 503."""
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.sessions)

    def admit(self, session: WebSocketSession) -> bool:
        """Count `session` as open, unless the worker holds `max_websockets`."""
        if self.limit and len(self.sessions) >= self.limit:
            return False
        self.sessions.add(session)
        return True

    def remove(self, session: WebSocketSession) -> None:
        self.sessions.discard(session)

    def drain(self) -> None:
        """The worker drains: close every WebSocket with 1001 shortly before
        the shut-down time limit, unless it closed by then."""
        if self._timer is not None or self.going_away:
            return
        wait = min(GOING_AWAY_WAIT, self.time_limit / 4)
        self._timer = self.loop.call_later(max(0.0, self.time_limit - wait), self._go_away, wait)

    def _go_away(self, wait: float) -> None:
        self._timer = None
        self.going_away = True
        for session in list(self.sessions):
            session.going_away(wait)
