"""What a WebSocket's app receives: whole messages made of the client's
frames, queued for `receive()` with a bound, then the disconnect.

```
 frames ──MessageAssembler──▶ {"type": "websocket.receive", ...} ──Inbox──▶ app's receive()
  (fragments joined, text       (over the bound: the session stops       (then, for ever,
   checked as UTF-8)             reading the socket until there is room)   websocket.disconnect)
```

No I/O here: the session (`websocket.py`) feeds frames in and reads and
pauses the socket.
"""

from __future__ import annotations

import asyncio
import codecs
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.frames import Frame, Opcode

QUEUE_LIMIT = 32
"""Messages waiting for the app before the socket stops being read
(uvicorn's `ws_max_queue` is 32 too)."""
QUEUE_BYTES = 1 << 20
"""Bytes of messages waiting for the app before the socket stops being read
(one message may be larger: it is let in whole)."""


class MessageAssembler:
    """Data frames in, whole ASGI `websocket.receive` messages out.

    Text is checked as UTF-8 frame by frame, so a bad byte fails the
    connection when it arrives, not when the message ends (RFC 6455 §8.1);
    `add` raises `UnicodeDecodeError` for it. Sizes are bounded before this,
    by the library's `max_size` over the whole message.
    """

    __slots__ = ("_decoder", "_parts", "_size", "_text")

    def __init__(self) -> None:
        self._text = False
        self._parts: list[Any] = []
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None

    def add(self, frame: Frame) -> tuple[dict[str, Any], int] | None:
        """The message `frame` completes and its size in bytes, else None."""
        data = bytes(frame.data)
        if frame.opcode is not Opcode.CONT:
            self._text = frame.opcode is Opcode.TEXT
            if frame.fin:  # the common case: a message in one frame
                if self._text:
                    return {"type": "websocket.receive", "text": data.decode("utf-8")}, len(data)
                return {"type": "websocket.receive", "bytes": data}, len(data)
            self._parts = []
            self._size = 0
            self._decoder = codecs.getincrementaldecoder("utf-8")() if self._text else None
        self._size += len(data)
        decoder = self._decoder
        self._parts.append(decoder.decode(data, final=frame.fin) if decoder is not None else data)
        if not frame.fin:
            return None
        parts, self._parts, self._decoder = self._parts, [], None
        if self._text:
            return {"type": "websocket.receive", "text": "".join(parts)}, self._size
        return {"type": "websocket.receive", "bytes": b"".join(parts)}, self._size


class Inbox:
    """Messages waiting for the app, and the disconnect that ends them.

    `put` says when the queue is past its bound (the caller stops reading
    the socket); `on_room` is called when `receive()` brings it back under
    half of it, so reading resumes without flapping at the edge.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_room: Callable[[], None]) -> None:
        self._loop = loop
        self._on_room = on_room
        self._messages: deque[tuple[dict[str, Any], int]] = deque()
        self._queued = 0
        self._connect_delivered = False
        self._waiter: asyncio.Future[None] | None = None
        self.disconnect: dict[str, Any] | None = None
        """Set once the client side is over; every later `receive()` returns it."""

    def put(self, message: dict[str, Any], size: int) -> bool:
        """Queue `message`; True when the queue is now past its bound."""
        self._messages.append((message, size))
        self._queued += size
        self._wake()
        return len(self._messages) >= QUEUE_LIMIT or self._queued >= QUEUE_BYTES

    def has_room(self) -> bool:
        return len(self._messages) <= QUEUE_LIMIT // 2 and self._queued < QUEUE_BYTES // 2

    def end(self, code: int, reason: str) -> None:
        """The client side is over: after what is queued, `websocket.disconnect`."""
        if self.disconnect is None:
            self.disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._wake()

    async def receive(self) -> dict[str, Any]:
        """The app's `receive()`: `websocket.connect` first, then messages as
        they come, then the disconnect. Every caller waits on one future, so
        none is left behind."""
        if not self._connect_delivered:
            self._connect_delivered = True
            return {"type": "websocket.connect"}
        while True:
            if self._messages:
                message, size = self._messages.popleft()
                self._queued -= size
                if self.has_room():
                    self._on_room()
                return message
            if self.disconnect is not None:
                return self.disconnect
            waiter = self._waiter
            if waiter is None:
                waiter = self._waiter = self._loop.create_future()
            await waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
