"""A WebSocket's byte stream as its session uses it: writes (and what the
scoreboard says of them), half-close and the timers that end a connection,
and flow control both ways.

```
 WebSocketSession ──write / end_stream / linger / drop_after──▶ Wire ──▶ asyncio transport
                  ◀── writable (a future while the buffer is full) ──┘
                                                                    └──▶ scoreboard slot:
                                       WEBSOCKET_WRITING around each write, WEBSOCKET once
                                       the transport's buffer is empty (a frame boundary)
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poolwarden.scoreboard import SlotWriter

CLOSE_TIMEOUT = 5.0
"""Seconds the other side has to finish the close handshake, and a client
to close its end afterwards, before the connection is dropped (websockets
waits 10 s; a worker that drains cannot wait that long)."""
LINGER_SECONDS = 2.0
"""How long an HTTP answer (a refusal or a denial) waits for the client to
close before the socket is closed anyway, as `asgi.LINGER_SECONDS`."""
BUFFER_CHECK = 0.01
"""Seconds between looks at a write buffer that still holds part of a frame,
until it is empty and the scoreboard may say "frame boundary" again."""


class Wire:
    """The transport of one WebSocket, and the slot that watches its frames."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, write_paused: bool
    ) -> None:
        self.loop = loop
        self.transport = transport
        self.slot: SlotWriter | None = None
        """Set once the 101 is sent: from then on every write is a frame."""
        self.lost = False
        self.reading_paused = False
        self.writable: asyncio.Future[None] | None = loop.create_future() if write_paused else None
        """Set while the transport's write buffer is above its high-water mark."""
        self._close_timer: asyncio.TimerHandle | None = None
        self._buffer_timer: asyncio.TimerHandle | None = None

    def write(self, data: bytes) -> None:
        """One write. The rule the master relies on: the slot says
        `WEBSOCKET_WRITING` from before the write until the transport's
        buffer is empty, since a buffered frame dies half sent with the
        worker; only then `WEBSOCKET` (a frame boundary) again."""
        transport = self.transport
        if transport.is_closing():
            return
        slot = self.slot
        if slot is not None:
            slot.websocket(writing=True)
        transport.write(data)
        if slot is not None:
            self._note_buffer()

    def _note_buffer(self) -> None:
        self._buffer_timer = None
        slot = self.slot
        if slot is None or self.lost:
            return
        if self.transport.get_write_buffer_size() == 0:
            slot.websocket(writing=False)
        else:
            self._buffer_timer = self.loop.call_later(BUFFER_CHECK, self._note_buffer)

    def end_stream(self) -> None:
        """Our side is done (close handshake, failed connection, HTTP answer):
        half-close, and drop the connection if the client does not close its
        end within `CLOSE_TIMEOUT` (RFC 6455 §7.1.1: the server closes first)."""
        transport = self.transport
        if transport.is_closing():
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.drop_after(CLOSE_TIMEOUT)

    def linger(self) -> None:
        """After an HTTP answer: half-close, then close at the client's EOF
        or after `LINGER_SECONDS`, so that unread input cannot make the kernel
        reset the connection before the answer is read."""
        self.resume_reading()
        self.end_stream()
        self._set_timer(LINGER_SECONDS, self.transport.close)

    def drop_after(self, delay: float) -> None:
        """Abort the connection if it is still open after `delay` seconds."""
        self._set_timer(delay, self.transport.abort)

    def _set_timer(self, delay: float, action: Callable[[], object]) -> None:
        """The sooner end wins: a close handshake that ends after a drain's
        1001 must not push the drop past the shut-down time limit."""
        timer = self._close_timer
        if timer is not None:
            if timer.when() <= self.loop.time() + delay:
                return
            timer.cancel()
        self._close_timer = self.loop.call_later(delay, action)

    def close(self) -> None:
        self.transport.close()

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.lost:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.lost:
            self.reading_paused = False
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable = self.writable
        if writable is not None:
            self.writable = None
            writable.set_result(None)
        self._note_buffer()

    def connection_lost(self) -> None:
        """Nothing more will be written: timers off, waiting senders woken."""
        self.lost = True
        for timer in (self._close_timer, self._buffer_timer):
            if timer is not None:
                timer.cancel()
        self.resume_writing()
