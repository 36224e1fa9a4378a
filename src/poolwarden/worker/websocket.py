"""One WebSocket connection's ASGI session (ASGI spec "WebSocket", 2.4).

```
 HttpProtocol ──upgrade head──▶ websocket_upgrade.take_over ──set_protocol──▶ WebSocketSession
                                                                    │  ▲
     socket bytes ──▶ websockets.ServerProtocol (frames) ──▶ Inbox ─┘  │ receive() / send()
                                                                       ▼
                                                        app(scope, receive, send) task
```

The `websockets` library's sans-I/O `ServerProtocol` checks the handshake,
negotiates permessage-deflate, parses and builds frames, answers the
client's pings and runs the close handshake; this module drives it: it
feeds it the socket's bytes, writes what it produces, hands whole messages
to the app (`websocket_inbox`), pings the client (`Keepalive`), and maps
the app's ASGI messages onto it.

The app answers the handshake: `websocket.accept` sends the 101 (with the
app's subprotocol and headers), `websocket.close` before it a 403, and
`websocket.http.response.*` an HTTP response of the app's own (the denial
extension). An app that raises before answering gets a 500, one that raises
after a close 1011, one that returns without closing a close 1000.

Flow control goes both ways: the socket is not read while the app lets
messages pile up (`websocket_inbox.QUEUE_LIMIT`), and a `send` waits while
the transport's write buffer is above its high-water mark.
"""

from __future__ import annotations

import asyncio
import enum
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol

from poolwarden.http.responses import DATE, simple_response, status_line
from poolwarden.http.upgrade import requested_subprotocols
from poolwarden.scoreboard import SlotWriter
from poolwarden.worker.task_dump import request_task_name
from poolwarden.worker.websocket_inbox import Inbox, MessageAssembler
from poolwarden.worker.websocket_wire import CLOSE_TIMEOUT, Wire

if TYPE_CHECKING:
    from poolwarden.worker.asgi import ASGIServer, HttpProtocol

EARLY_LIMIT = 1 << 16
"""Bytes a client may send before the app accepts; past it reading stops."""
ABNORMAL_CLOSURE = 1006
"""RFC 6455 §7.4.1: the connection ended without a close frame."""
_DEFLATE = ServerPerMessageDeflateFactory(
    server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
)
"""websockets' own defaults for permessage-deflate: 4 KiB windows and a
smaller memory level cost about 1/8 of zlib's default memory per connection
for most of its compression."""


class Stage(enum.Enum):
    """Where the session is, as the app sees it."""

    HANDSHAKE = "handshake"
    """The app has not answered the handshake yet."""
    DENIAL = "denial"
    """The app is sending an HTTP response instead of accepting."""
    OPEN = "open"
    """The 101 went out; messages flow until the close handshake."""
    ANSWERED = "answered"
    """An HTTP answer went out (refusal, 403, 500, denial): nothing more."""


class WebSocketClosed(OSError):
    """A `send` on a WebSocket that is closed (ASGI 2.4: an `OSError`)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ClientDisconnected(WebSocketClosed):
    """The client closed the WebSocket or went away, or the server closed it
    (protocol error, ping time-out, shut-down): not the app's doing."""


class ClosedByApp(WebSocketClosed):
    """The app itself closed the WebSocket (or refused it), then sent more."""


class Keepalive:
    """The server's pings: one every `interval`; no pong within `timeout`
    and `on_timeout` runs, unless `patient()` says the pong may be among
    the bytes the session does not read yet (the app is slow to receive,
    which is not the client's fault)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        timeout: float,
        send_ping: Callable[[bytes], None],
        on_timeout: Callable[[], None],
        patient: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._interval = interval
        self._timeout = timeout
        self._send_ping = send_ping
        self._on_timeout = on_timeout
        self._patient = patient
        self._count = 0
        self._awaited: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._timer = self._loop.call_later(self._interval, self._ping)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pong(self, payload: bytes) -> None:
        """A pong came; the one for our ping ends the wait for it."""
        if self._awaited is not None and payload == self._awaited:
            self._awaited = None
            self.stop()
            self.start()

    def _ping(self) -> None:
        self._count += 1
        payload = struct.pack("!I", self._count)
        self._send_ping(payload)
        if self._timeout > 0:
            self._awaited = payload
            self._timer = self._loop.call_later(self._timeout, self._missing)
        else:
            self.start()

    def _missing(self) -> None:
        if self._patient():
            self._timer = self._loop.call_later(self._timeout, self._missing)
        else:
            self._timer = None
            self._on_timeout()


class DenialResponse:
    """The app's own HTTP answer to a handshake (`websocket.http.response`).

    A body with the app's Content-Length goes out as it comes; one without
    is gathered and sent whole with its length once complete. The
    connection closes after it either way.
    """

    def __init__(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        lines = [status_line(status)]
        self.length: int | None = None
        for name, value in headers:
            lowered = bytes(name).lower()
            if lowered == b"content-length":
                self.length = int(value)
            elif lowered in (b"connection", b"transfer-encoding"):
                continue
            lines.append(_header_line(name, value))
        lines += [b"connection: close\r\n", b"server: poolwarden\r\n", DATE.header()]
        self._head = b"".join(lines)
        self._gathered: list[bytes] = []
        self.sent_body = 0

    def body(self, body: bytes, more_body: bool) -> bytes:
        """What to write now for this part of the body."""
        if self.length is not None:
            data = self._head + b"\r\n" + body if self._head else body
            self._head = b""
            self.sent_body += len(body)
            return data
        self._gathered.append(body)
        if more_body:
            return b""
        payload = b"".join(self._gathered)
        self.sent_body = len(payload)
        return self._head + b"content-length: %d\r\n\r\n" % len(payload) + payload


class WebSocketSession(asyncio.Protocol):
    """One WebSocket: the app's receive and send over the library's framing."""

    def __init__(
        self,
        server: ASGIServer,
        http: HttpProtocol,
        scope: dict[str, Any],
        target: bytes,
        transport: asyncio.Transport,
        write_paused: bool,
    ) -> None:
        options = server.boot.websocket
        self.server = server
        self.http = http
        self.loop = server.loop
        self.wire = Wire(server.loop, transport, write_paused)
        self.target = target
        self.headers = scope["headers"]
        self.scope = websocket_scope(scope)
        self.ws = ServerProtocol(
            state=State.OPEN,  # the head was parsed already; frames follow the 101
            extensions=[_DEFLATE] if options.per_message_deflate else None,
            max_size=options.max_size or None,
        )
        self.stage = Stage.HANDSHAKE
        self.handshake: Response | None = None
        self.denial: DenialResponse | None = None
        self.status = 0
        self.started = time.time()
        self.slot: SlotWriter | None = None
        """The scoreboard slot, None when every slot is taken."""
        self.task: asyncio.Task[None] | None = None
        self.app_done = False
        self.lost = False
        self.closed_by_app = False
        self.inbox = Inbox(self.loop, self._resume_reading)
        self.assembler = MessageAssembler()
        self.keepalive = Keepalive(
            self.loop,
            options.ping_interval,
            options.ping_timeout,
            self._send_ping,
            self._pong_missing,
            lambda: self.wire.reading_paused,
        )
        self.early = bytearray()
        self.received = 0
        self.sent = 0
        self.sent_bytes = 0

    # start and end of the app

    def start(self, rest: bytes) -> None:
        """Take the connection: refuse it, or run the app with the handshake."""
        sessions = self.server.websockets
        if sessions.going_away:
            self.answer(503, _shutting_down())
            return
        if not sessions.admit(self):
            message = "Service Unavailable: this worker holds max_websockets open WebSockets.\n"
            self.answer(503, simple_response(503, message, reason_code="queue_full"))
            return
        request = Request(self.target.decode("latin-1"), Headers(_text_headers(self.headers)))
        response = self.ws.accept(request)
        if response.status_code != 101:
            self.answer(response.status_code, response.serialize(), len(response.body))
            return
        response.headers["Server"] = "poolwarden"
        self.handshake = response
        self.early += rest
        slot = self.server.take_slot()
        if isinstance(slot, SlotWriter):
            self.slot = slot
            client = self.http.client[:52]
            slot.begin(self.http.conn_id, self.started, b"GET", self.target[:200], client)
        name = request_task_name(self.http.conn_id)
        self.task = self.loop.create_task(self._run(), name=name)

    async def _run(self) -> None:
        try:
            await self.server.app(self.scope, self.inbox.receive, self.send)
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            if not isinstance(error, WebSocketClosed):
                self.server.log_exception(f"error in the app serving WebSocket {self.target!r}")
            self._app_ended(1011)
        else:
            if self.stage is Stage.HANDSHAKE:
                sys.stderr.write(
                    "the app returned without accepting or closing the WebSocket "
                    f"{self.target.decode('latin-1')}\n"
                )
            self._app_ended(1000)
        finally:
            self.app_done = True
            self._release_slot()

    def _app_ended(self, code: int) -> None:
        """The app is done: whatever it left open is closed with `code` (1000
        for a return, 1011 for an exception) or, before the 101, a 500."""
        if self.stage is Stage.HANDSHAKE and not self.lost:
            self.answer(500, simple_response(500, "Internal Server Error\n"))
        elif self.stage is Stage.DENIAL:
            self.wire.close()  # a denial cut short: nothing else to say
        elif self.stage is Stage.OPEN and self.ws.state is State.OPEN and not self.lost:
            self._close(code, "")

    # the app's send

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        stage = self.stage
        if stage is Stage.OPEN:
            self._check_open()
            if kind == "websocket.send":
                self._send_message(message)
            elif kind == "websocket.close":
                self.closed_by_app = True
                self._close(message.get("code") or 1000, message.get("reason") or "")
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")
        elif stage is Stage.HANDSHAKE:
            if self.lost:
                raise ClientDisconnected("the client went away before the handshake", 1006)
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self.closed_by_app = True
                refusal = simple_response(403, "Forbidden: the app refused the WebSocket.\n")
                self.answer(403, refusal)
            elif kind == "websocket.http.response.start":
                self._deny(message)
            else:
                raise RuntimeError(
                    f"{kind!r} sent before the handshake was answered: expected websocket.accept,"
                    " websocket.close or websocket.http.response.start"
                )
        elif stage is Stage.DENIAL and kind == "websocket.http.response.body":
            self._denial_body(message.get("body", b""), message.get("more_body", False))
        elif stage is Stage.DENIAL:
            raise RuntimeError(f"unexpected ASGI message {kind!r} during a denial response")
        elif self.closed_by_app:
            raise ClosedByApp("the app answered this WebSocket handshake with HTTP", 1006)
        else:
            raise ClientDisconnected("the WebSocket handshake was answered with HTTP", 1006)
        writable = self.wire.writable
        if writable is not None:
            await writable  # the client reads slower than the app writes

    def _check_open(self) -> None:
        """Sending is over once either side sent a close frame, or the
        connection is gone: say whose doing that was."""
        if self.ws.state is State.OPEN and not self.lost:
            return
        if self.closed_by_app:
            sent = self.ws.close_sent
            raise ClosedByApp("the app closed this WebSocket", sent.code if sent else 1000)
        code, _ = self._disconnect_code()
        raise ClientDisconnected(f"the WebSocket is closed (code {code})", code)

    def _send_message(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        data = message.get("bytes")
        if text is not None and data is None:
            payload = text.encode("utf-8")
            self.ws.send_text(payload)
        elif data is not None and text is None:
            payload = bytes(data)
            self.ws.send_binary(payload)
        else:
            raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
        self.sent += 1
        self.sent_bytes += len(payload)
        if self.slot is not None:
            self.slot.messages(self.received, self.sent)
        self._flush()

    def _accept(self, message: dict[str, Any]) -> None:
        response = self.handshake
        assert response is not None
        for name, value in message.get("headers") or ():
            if bytes(name).lower() == b"sec-websocket-protocol":
                raise RuntimeError("give the subprotocol as 'subprotocol', not as a header")
            _header_line(name, value)  # refuses a line break
            response.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self.ws.subprotocol = subprotocol
        self.stage = Stage.OPEN
        self.status = 101
        self.wire.slot = self.slot
        self.wire.write(response.serialize())
        self.keepalive.start()
        if self.early:
            early = bytes(self.early)
            self.early.clear()
            self.data_received(early)
        if self.inbox.has_room():
            self._resume_reading()

    def _deny(self, message: dict[str, Any]) -> None:
        self.denial = DenialResponse(message["status"], message.get("headers") or ())
        self.stage = Stage.DENIAL
        self.closed_by_app = True
        self.status = message["status"]
        if self.slot is not None:
            self.slot.responding(self.status)

    def _denial_body(self, body: bytes, more_body: bool) -> None:
        denial = self.denial
        assert denial is not None
        data = denial.body(body, more_body)
        if data:
            self.wire.write(data)
        self.sent_bytes = denial.sent_body
        if not more_body:
            self.stage = Stage.ANSWERED
            self.wire.linger()

    def answer(self, status: int, response: bytes, body_size: int | None = None) -> None:
        """Answer the handshake with HTTP and close: a refusal of our own, or
        the app's 403 / 500."""
        self.stage = Stage.ANSWERED
        self.status = status
        if self.slot is not None:
            self.slot.responding(status)
        if body_size is None:
            body_size = len(response) - response.index(b"\r\n\r\n") - 4
        self.sent_bytes = body_size
        self.wire.write(response)
        self.wire.linger()

    # bytes in

    def data_received(self, data: bytes) -> None:
        stage = self.stage
        if stage is Stage.HANDSHAKE:
            self.early += data
            if len(self.early) > EARLY_LIMIT:
                self.wire.pause_reading()
            return
        if stage is not Stage.OPEN:
            return  # after an HTTP answer, what the client sends is dropped
        self.ws.receive_data(data)
        self._take_events()
        self._flush()

    def eof_received(self) -> bool:
        if self.stage is Stage.OPEN:
            self.ws.receive_eof()
            self._take_events()
            self._flush()
        return False  # the transport closes itself: connection_lost follows

    def _take_events(self) -> None:
        for frame in self.ws.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
                try:
                    whole = self.assembler.add(frame)
                except UnicodeDecodeError as error:
                    self._fail(1007, f"invalid UTF-8 at position {error.start}")
                    break
                if whole is not None:
                    self.received += 1
                    if self.slot is not None:
                        self.slot.messages(self.received, self.sent)
                    if self.inbox.put(*whole):
                        self.wire.pause_reading()
            elif opcode is Opcode.PONG:
                self.keepalive.pong(bytes(frame.data))
        ws = self.ws
        if ws.close_rcvd is not None or ws.parser_exc is not None or ws.state is State.CLOSED:
            self.inbox.end(*self._disconnect_code())

    def _disconnect_code(self) -> tuple[int, str]:
        """The code the app is told: the client's close frame, else the one
        the server closed with (not the app's own, which it knows), else 1006."""
        ws = self.ws
        if ws.close_rcvd is not None:
            return ws.close_rcvd.code, ws.close_rcvd.reason
        if ws.close_sent is not None and not self.closed_by_app:
            return ws.close_sent.code, ws.close_sent.reason
        return ABNORMAL_CLOSURE, ""

    # bytes out

    def _flush(self) -> None:
        """Write what the library produced; its EOF marker half-closes."""
        writes = self.ws.data_to_send()
        if not writes:
            return
        data = b"".join(writes)
        if data:
            self.wire.write(data)
        if SEND_EOF in writes:
            self.wire.end_stream()

    def _send_ping(self, payload: bytes) -> None:
        if self.ws.state is State.OPEN and not self.lost:
            self.ws.send_ping(payload)
            self._flush()

    def _pong_missing(self) -> None:
        if self.ws.state is State.OPEN:
            self._fail(1011, "keepalive ping timeout")

    def _close(self, code: int, reason: str) -> None:
        """Start the close handshake; the client has `CLOSE_TIMEOUT` to end it."""
        self.ws.send_close(code, reason)
        self._flush()
        self.wire.drop_after(CLOSE_TIMEOUT)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame, then EOF."""
        if self.lost:
            return
        self.ws.fail(code, reason)
        self._flush()
        self.inbox.end(*self._disconnect_code())

    def going_away(self, wait: float) -> None:
        """The worker is shutting down: close with 1001 (going away) and
        give the client `wait` seconds to answer before dropping it."""
        if self.lost:
            return
        if self.stage is Stage.OPEN and self.ws.state is State.OPEN:
            self.ws.send_close(1001, "server shutting down")
            self._flush()
        elif self.stage is Stage.HANDSHAKE:
            self.answer(503, _shutting_down())
        self.wire.drop_after(wait)

    # flow control and the end

    def _resume_reading(self) -> None:
        """The app made room: read on (never before the handshake's answer)."""
        if self.stage is not Stage.HANDSHAKE:
            self.wire.resume_reading()

    def pause_writing(self) -> None:
        self.wire.pause_writing()

    def resume_writing(self) -> None:
        self.wire.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.keepalive.stop()
        self.wire.connection_lost()
        self.inbox.end(*self._disconnect_code())
        self._log()
        self.server.websockets.remove(self)
        self.server.connection_closed(self.http)
        self._release_slot()

    def _release_slot(self) -> None:
        """The slot is the WebSocket's until its connection is closed and
        its app has returned, whichever comes last."""
        slot = self.slot
        if slot is not None and self.lost and (self.task is None or self.app_done):
            self.slot = self.wire.slot = None
            slot.end()
            self.server.give_slot(slot)

    def close_code(self) -> int:
        """The close code of whichever side closed first; 1006 for none."""
        ws = self.ws
        received, sent = ws.close_rcvd, ws.close_sent
        if sent is not None and (received is None or ws.close_rcvd_then_sent is False):
            return sent.code
        if received is not None:
            return received.code
        return ABNORMAL_CLOSURE

    def _log(self) -> None:
        log = self.server.access_log
        if log is None:
            return
        headers = dict(self.headers)
        log.write(
            client=self.http.log_client,
            method="GET",
            target=self.target.decode("latin-1"),
            version="1.1",
            status=self.status,
            size=self.sent_bytes,
            referer=headers.get(b"referer", b"").decode("latin-1"),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
            duration=time.time() - self.started,
            close_code=self.close_code() if self.status == 101 else None,
        )


def websocket_scope(http_scope: dict[str, Any]) -> dict[str, Any]:
    """The `websocket` scope of a handshake, from the `http` scope its head
    made (path, root_path from routing, headers, addresses, state)."""
    headers = http_scope["headers"]
    return {
        "type": "websocket",
        "asgi": http_scope["asgi"],
        "http_version": http_scope["http_version"],
        "scheme": "wss" if http_scope["scheme"] == "https" else "ws",
        "server": http_scope["server"],
        "client": http_scope["client"],
        "root_path": http_scope["root_path"],
        "path": http_scope["path"],
        "raw_path": http_scope["raw_path"],
        "query_string": http_scope["query_string"],
        "headers": headers,
        "subprotocols": requested_subprotocols(headers),
        "state": http_scope["state"],
        "extensions": {"websocket.http.response": {}},
    }


def _header_line(name: bytes, value: bytes) -> bytes:
    """`name: value` and CRLF; a line break in either would smuggle in a header."""
    name, value = bytes(name), bytes(value)
    if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
        raise RuntimeError(f"invalid response header {name!r}: {value!r}")
    return b"%s: %s\r\n" % (name, value)


def _shutting_down() -> bytes:
    return simple_response(
        503, "Service Unavailable: the worker is shutting down.\n", reason_code="shutting_down"
    )


def _text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
