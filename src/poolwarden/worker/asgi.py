"""Serving an ASGI 3.0 app on the worker's asyncio loop (uvloop when installed).

```
 channel ──Dispatch(+fd)──▶ connect_accepted_socket ──▶ HttpProtocol ◀──▶ httptools
                                                        │  each head: HeadReader (asgi_head)
                                                        │  a later request of another pool:
                                                        │    handed back (asgi_routing)
                                                        │ one RequestCycle
                                                        ▼ per request, in order
                                                   app(scope, receive, send)
```

Pings are answered by the same loop that runs the app, so an app that blocks
the loop stops answering and the master can tell.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import traceback
from collections import deque
from typing import Any

import httptools

from poolwarden import channel as ch
from poolwarden.http.fields import valid_field_name
from poolwarden.http.limits import HeadLimits
from poolwarden.http.responses import DATE, STATUS_LINES, simple_response, status_line
from poolwarden.http.rules import request_parser
from poolwarden.http.stream import RequestStream
from poolwarden.importer import describe_failure
from poolwarden.routing import routing_table_for
from poolwarden.scoreboard import Scoreboard, SlotWriter
from poolwarden.worker import websocket_upgrade
from poolwarden.worker.accesslog import AccessLog
from poolwarden.worker.asgi_head import ASGI_VERSIONS, HeadReader, Refused, http_scope
from poolwarden.worker.asgi_routing import handed_back, root_path_here
from poolwarden.worker.task_dump import describe_tasks, request_task_name

LINGER_SECONDS = 2.0
"""How long an error answer waits for the client to close before the socket
is closed anyway (nginx's lingering close is similar)."""
HIGH_WATER = 65536
"""Body bytes buffered for an app before the socket stops being read."""

_SERVER = b"server: poolwarden\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = frozenset((204, 304))
_DISCONNECT = {"type": "http.disconnect"}


class _NullSlot:
    """Stands in for a scoreboard slot when every slot is taken."""

    def begin(self, *args: Any) -> None:
        pass

    def responding(self, status: int) -> None:
        pass

    def end(self) -> None:
        pass


class RequestCycle:
    """One request: the app's receive and send, and the response's framing."""

    __slots__ = (
        "app_date",
        "app_server",
        "body",
        "body_delivered",
        "body_received",
        "chunked",
        "close_after",
        "complete",
        "continue_sent",
        "disconnected",
        "expect_continue",
        "hand_back",
        "head_only",
        "http_version",
        "keep_alive",
        "length",
        "pending_head",
        "protocol",
        "response_complete",
        "response_started",
        "scope",
        "sent_body",
        "started",
        "status",
        "target",
        "waiter",
    )

    def __init__(self, protocol: HttpProtocol, scope: dict[str, Any], keep_alive: bool) -> None:
        self.protocol = protocol
        self.scope = scope
        self.keep_alive = keep_alive
        self.http_version = scope["http_version"]
        self.body: deque[bytes] = deque()
        self.body_received = 0
        self.target = b""
        self.hand_back = False
        self.complete = False
        self.body_delivered = False
        self.disconnected = False
        self.expect_continue = False
        self.continue_sent = False
        self.response_started = False
        self.response_complete = False
        self.pending_head = b""
        self.status = 0
        self.length: int | None = None
        self.chunked = False
        self.app_server = False
        self.app_date = False
        """The app sent its own Server (Date): it replaces the server's, as
        a second one would duplicate a single-valued field."""
        self.close_after = not keep_alive
        self.head_only = scope["method"] == "HEAD"
        self.sent_body = 0
        self.started = time.time()
        self.waiter: asyncio.Future[None] | None = None

    def log_to(self, access_log: AccessLog, client: str) -> None:
        """This request's line in the access log, once it is done."""
        scope = self.scope
        headers = dict(scope["headers"])
        access_log.write(
            client=client,
            method=scope["method"],
            target=self.target.decode("latin-1"),
            version=self.http_version,
            status=self.status,
            size=self.sent_body,
            referer=headers.get(b"referer", b"").decode("latin-1"),
            user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
            duration=time.time() - self.started,
        )

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_disconnected(self) -> bool:
        return self.disconnected

    async def run(self, slot: SlotWriter | _NullSlot) -> None:
        protocol = self.protocol
        server = protocol.server
        scope = self.scope
        slot.begin(
            protocol.conn_id,
            self.started,
            scope["method"].encode("latin-1")[:12],
            self.target[:200],
            protocol.client[:52],
        )
        protocol.settle()
        try:
            await server.app(scope, self.receive, self.send)
        except BaseException as error:
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            server.log_exception(f"error in the app serving {scope['method']} {scope['path']}")
            if not self.response_started:
                self.status = 500
                protocol.write(
                    simple_response(500, "Internal Server Error\n", head_only=self.head_only)
                )
            self.close_after = True
        else:
            if not self.response_started:
                sys.stderr.write(
                    f"the app returned without starting a response to {scope['method']} {scope['path']}\n"
                )
                self.status = 500
                protocol.write(
                    simple_response(500, "Internal Server Error\n", head_only=self.head_only)
                )
                self.close_after = True
            elif not self.response_complete:
                self.close_after = True
        finally:
            slot.end()
            protocol.cycle_done(self, slot)

    async def receive(self) -> dict[str, Any]:
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        protocol = self.protocol
        if self.body_delivered:
            # Nothing more will come but the end: block until the client goes
            # or the response is done, as the spec says, rather than hand out
            # empty messages that would make a listening app spin. Every
            # caller waits on the same future, so none is left behind.
            waiter = self.waiter
            if waiter is None:
                waiter = self.waiter = protocol.loop.create_future()
            await waiter
            return _DISCONNECT
        if self.expect_continue and not self.continue_sent and not self.response_started:
            self.continue_sent = True
            protocol.write(_CONTINUE)
        if not self.body and not self.complete:
            protocol.resume_reading()
            self.waiter = protocol.loop.create_future()
            await self.waiter
            self.waiter = None
            if self.is_disconnected() and not self.body:
                return _DISCONNECT
        body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        if self.complete:
            self.body_delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        protocol.resume_reading()
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            # Started only once the head is valid: a refused head still gets a 500.
            self._start(message["status"], message.get("headers", ()))
            self.response_started = True
        elif kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.response_complete:
                raise RuntimeError("http.response.body sent after the response completed")
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            self._body(body, more_body)
            if not more_body:
                self.response_complete = True
                self.wake()
            writable = self.protocol.writable
            if writable is not None:
                # The client reads slower than the app writes: wait, rather
                # than hold the rest of the response in memory.
                await writable
        elif self.disconnected:
            return
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _start(self, status: int, headers: Any) -> None:
        self.status = status
        lines = [STATUS_LINES.get(status) or status_line(status)]
        close = self.close_after or self.protocol.server.draining
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self.length = int(value)
                continue
            elif lowered == b"connection":
                if value.lower() == b"close":
                    close = True
                continue
            elif lowered == b"transfer-encoding":
                continue
            elif lowered == b"server":
                self.app_server = True
            elif lowered == b"date":
                self.app_date = True
            if b"\n" in value or b"\r" in value or not valid_field_name(name):
                # A line break would let a header smuggle in another one; a
                # name that is not a token (RFC 9110 §5.1) would be misread.
                raise RuntimeError(f"invalid response header {name!r}: {value!r}")
            lines.append(b"%s: %s\r\n" % (name, value))
        self.close_after = close
        self.pending_head = b"".join(lines)
        self.protocol.server_slot_responding(status)

    def _finish_head(self, body: bytes, more_body: bool) -> bytes:
        extra = []
        status = self.status
        if status in _NO_BODY_STATUS or status < 200:
            pass
        elif self.length is not None:
            extra.append(b"content-length: %d\r\n" % self.length)
        elif not more_body:
            self.length = len(body)
            extra.append(b"content-length: %d\r\n" % self.length)
        elif self.http_version == "1.1":
            self.chunked = True
            extra.append(b"transfer-encoding: chunked\r\n")
        else:
            self.close_after = True
        if self.close_after:
            extra.append(b"connection: close\r\n")
        elif self.http_version == "1.0":
            extra.append(b"connection: keep-alive\r\n")
        if not self.app_server:
            extra.append(_SERVER)
        if not self.app_date:
            extra.append(DATE.header())
        head = self.pending_head + b"".join(extra) + b"\r\n"
        self.pending_head = b""
        return head

    def _body(self, body: bytes, more_body: bool) -> None:
        protocol = self.protocol
        head = self._finish_head(body, more_body) if self.pending_head else b""
        if self.head_only or self.status in _NO_BODY_STATUS:
            if head:
                protocol.write(head)
            return
        if self.length is not None:
            room = self.length - self.sent_body
            if len(body) > room:
                body = body[:room]
            self.sent_body += len(body)
            if not more_body and self.sent_body < self.length:
                self.close_after = True
            if head or body:
                protocol.write(head + body)
        elif self.chunked:
            self.sent_body += len(body)
            data = head + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"")
            if not more_body:
                data += b"0\r\n\r\n"
            if data:
                protocol.write(data)
        else:
            self.sent_body += len(body)
            protocol.write(head + body)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests and runs their cycles in order."""

    def __init__(self, server: ASGIServer, dispatch: ch.Dispatch) -> None:
        self.server = server
        self.loop = server.loop
        self.dispatch = dispatch
        self.conn_id = dispatch.conn_id
        self.client = f"{dispatch.peer_host}:{dispatch.peer_port}".encode("latin-1")
        # The scope's addresses, once per connection (see connection_made).
        self.client_address: tuple[str, int] | None = (dispatch.peer_host, dispatch.peer_port)
        self.server_address: tuple[str, int | None] = (dispatch.server_host, dispatch.server_port)
        self.log_client = dispatch.peer_host
        self.limits = server.limits
        self.head = HeadReader(
            server.limits,
            on_headers_complete=self.on_headers_complete,
            on_body=self.on_body,
            on_message_complete=self.on_message_complete,
        )
        self.parser = request_parser(self.head)
        self.stream = RequestStream(self.parser, self.limits.max_head_bytes)
        self.transport: asyncio.Transport | None = None
        self.cycle: RequestCycle | None = None  # receiving its body
        self.active: RequestCycle | None = None  # running in the app
        self.pipeline: deque[RequestCycle] = deque()
        self.paused = False
        self.closing = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.error: tuple[int, str, str] | None = None
        self.active_slot: SlotWriter | _NullSlot | None = None
        self.routed_first = False
        self.handed_back = False
        self.settled = False
        """Its first request started, or it ended before one (`Scoreboard.settle`)."""
        self.writable: asyncio.Future[None] | None = None
        """Set while the transport's write buffer is above its high-water mark."""

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        if not self.dispatch.server_port:
            # Only a unix socket has no port. The spec's form for one: the
            # server is (path, None), and a client without an address is
            # None, not ("", 0).
            self.server_address = (transport.get_extra_info("sockname") or "", None)
            self.client_address = None
            self.log_client = "-"
        buffered = self.dispatch.buffered
        if buffered:
            self.data_received(buffered)
        else:
            self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.error is not None:
            return
        in_head = self.head.in_head
        cycle = self.cycle
        received = 0 if cycle is None else cycle.body_received
        try:
            self.stream.feed(data)
        except httptools.HttpParserUpgrade:
            websocket_upgrade.take_over(self, self.stream.upgraded)
            if self.cycle is not None:
                self.cycle.complete = True
                self.cycle.close_after = True
        except httptools.HttpParserCallbackError as failure:
            cause = failure.__context__
            if isinstance(cause, Refused):
                self._refuse(cause.status, cause.reason_code, str(cause))
            else:
                self._refuse(400, "bad_request", str(failure))
        except httptools.HttpParserError as failure:
            self._refuse(400, "bad_request", str(failure))
        else:
            self._count_unparsed(len(data), in_head, cycle, received)
        # Started only once the parser has judged the whole head: llhttp
        # checks Transfer-Encoding after on_headers_complete, and a request
        # whose framing it refused must never reach the app.
        if self.active is None and self.pipeline:
            self._start(self.pipeline.popleft())

    def _count_unparsed(
        self, size: int, in_head: bool, cycle: RequestCycle | None, received: int
    ) -> None:
        """Bound what httptools holds back: a header or trailer line never ended.

        httptools keeps an unfinished line to itself, so `on_header` alone
        cannot stop a client that never ends one. Counted are whole reads
        that began and ended inside one head, or inside a body without
        giving any of it.
        """
        head = self.head
        held_back = (head.in_head and in_head) or (
            cycle is not None and cycle is self.cycle and cycle.body_received == received
        )
        head.unparsed = head.unparsed + size if held_back else 0
        if head.unparsed > self.limits.max_head_bytes:
            self._refuse(431, "head_too_large", "request head larger than the limit")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.resume_writing()  # a send waiting for the client would wait forever
        for cycle in (self.active, self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.disconnected = True
                cycle.wake()
        self.pipeline.clear()
        self.settle()
        self.server.connection_closed(self)

    def settle(self) -> None:
        """The master counts this connection in use until its first request
        is in a slot or it is gone: say it is no longer waiting, once."""
        if not self.settled:
            self.settled = True
            self.server.scoreboard.settle()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable = self.writable
        if writable is not None:
            self.writable = None
            writable.set_result(None)

    # httptools callbacks (those of the head are the HeadReader's)

    def on_headers_complete(self) -> None:
        head = self.head
        parser = self.parser
        method = self.stream.method or parser.get_method()
        http_version = head.complete(method, parser.get_http_version())
        scope = http_scope(
            method,
            http_version,
            head.url,
            head.headers,
            dispatch=self.dispatch,
            server=self.server_address,
            client=self.client_address,
            state=self.server.state.copy(),
        )
        cycle = RequestCycle(self, scope, parser.should_keep_alive())
        cycle.target = head.url
        if self.server.table is not None:
            self._route(cycle)
        cycle.expect_continue = head.expect_continue and http_version != "1.0"
        self.cycle = cycle
        self.pipeline.append(cycle)
        if self.active is not None:
            self.pause_reading()
        self.stream.head_complete(head.chunked, head.content_length)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        assert cycle is not None
        cycle.body_received += len(body)
        if cycle.response_complete or cycle.disconnected:
            return
        cycle.body.append(body)
        if len(cycle.body) > 1 and sum(map(len, cycle.body)) > HIGH_WATER:
            self.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.cycle
        assert cycle is not None
        cycle.complete = True
        self.cycle = None
        cycle.wake()

    # the connection's own logic

    def _route(self, cycle: RequestCycle) -> None:
        """Mount path of a later request on this connection, or hand it back
        when its turn comes (`asgi_routing`)."""
        if not self.routed_first:
            self.routed_first = True
            return
        server = self.server
        assert server.table is not None
        root_path = root_path_here(
            server.table,
            self.dispatch.binding,
            self.head.host,
            cycle.scope["raw_path"],
            server.pool_name,
        )
        if root_path is not None:
            cycle.scope["root_path"] = root_path
        else:
            cycle.hand_back = True

    def _hand_back(self, cycle: RequestCycle) -> None:
        """Give the connection back to the front end with this request's bytes
        (as `worker.wsgi.Connection.hand_back` does, and with the same 421
        when they cannot be given back whole)."""
        message = handed_back(
            self.dispatch,
            cycle.scope["method"],
            cycle.target,
            cycle.http_version,
            cycle.scope["headers"],
            cycle.body,
            complete=cycle.complete,
        )
        transport = self.transport
        if (
            transport is None
            or self.pipeline
            or self.head.in_head
            or self.stream.pending
            or self.error is not None
            or message is None
        ):
            self.write(
                simple_response(
                    421,
                    "Misdirected Request: send this request on a new connection.\n",
                    reason_code="misdirected",
                )
            )
            self.close()
            return
        self.handed_back = True
        self.server.hand_back(transport.get_extra_info("socket").fileno(), message)
        self.closing = True
        transport.abort()  # closes this process's copy only: no FIN, no reset

    def _start(self, cycle: RequestCycle) -> None:
        if cycle.hand_back:
            self._hand_back(cycle)
            return
        self.active = cycle
        slot = self.server.take_slot()
        self.active_slot = slot
        self.loop.create_task(cycle.run(slot), name=request_task_name(self.conn_id))

    def server_slot_responding(self, status: int) -> None:
        slot = self.active_slot
        if slot is not None:
            slot.responding(status)

    def cycle_done(self, cycle: RequestCycle, slot: SlotWriter | _NullSlot) -> None:
        """A request finished: log it, then start the next one or idle."""
        server = self.server
        server.give_slot(slot)
        server.request_done()
        self.active = None
        self.active_slot = None
        if server.access_log is not None:
            cycle.log_to(server.access_log, self.log_client)
        transport = self.transport
        if transport is None or self.closing:
            return
        # A response sent while draining said `Connection: close`; one
        # that promised keep-alive before is handed back below.
        if cycle.close_after or (
            not cycle.complete and cycle.expect_continue and not cycle.continue_sent
        ):
            self.close()
            return
        if not cycle.complete:
            # The app did not read the whole body: drop the rest as it comes.
            cycle.response_complete = True
        if self.pipeline:
            self._start(self.pipeline.popleft())
            self.resume_reading()
            return
        if self.error is not None:
            self._write_error()
            return
        if server.draining and self.hand_back_if_idle():
            return
        self.resume_reading()
        self._arm_idle_timer()

    def _arm_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.idle_timer = self.loop.call_later(self.server.keepalive_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self.idle_timer = None
        if self.active is None:
            if self.head.in_head or self.stream.pending:
                self.write(simple_response(408, "Request Timeout\n", reason_code="head_timeout"))
            self.close()

    def _refuse(self, status: int, reason_code: str, message: str) -> None:
        """Stop parsing; answer `status` once the requests before it are done.

        A request whose framing the parser refused is never started, and one
        already running while its body turned out malformed sees a
        disconnect: in both cases the app gets no bytes past the error.
        """
        self.error = (status, reason_code, message)
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None
            if self.pipeline and self.pipeline[-1] is cycle:
                self.pipeline.pop()
            else:
                cycle.disconnected = True
                cycle.close_after = True
                cycle.wake()
        if self.active is None and not self.pipeline:
            self._write_error()

    def _write_error(self) -> None:
        assert self.error is not None
        status, reason_code, message = self.error
        self.write(simple_response(status, message + "\n", reason_code=reason_code))
        self._linger()

    def _linger(self) -> None:
        """Close after an error answer without losing it to a reset.

        Closing with unread input makes the kernel send a reset, which can
        discard the answer before the client reads it; so the write side is
        shut, what the client still sends is dropped (`error` is set, so
        `data_received` ignores it), and the socket closes at EOF or after
        `LINGER_SECONDS`.
        """
        transport = self.transport
        if transport is None or self.closing:
            return
        self.resume_reading()
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            self.close()
            return
        self.loop.call_later(LINGER_SECONDS, self.close)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.paused and self.transport is not None and not self.closing:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def hand_back_if_idle(self) -> bool:
        """Draining: give an idle keep-alive connection back to the front end
        rather than close it, so the client's next request goes to another
        worker and no client sees the recycle. Idle means nothing of a next
        request was read (the loop has fed all it read to the parser): what
        the client sent since is in the socket, for the front end to read.
        A connection with part of a request here keeps it, and is served
        (with `Connection: close`) when the rest arrives. True if handed back."""
        transport = self.transport
        if (
            transport is None
            or self.closing
            or self.active is not None
            or self.cycle is not None
            or self.pipeline
            or self.head.in_head
            or self.error is not None
        ):
            return False
        dispatch = self.dispatch
        self.handed_back = True
        self.server.hand_back(
            transport.get_extra_info("socket").fileno(),
            ch.HandBack(
                conn_id=self.conn_id,
                peer_host=dispatch.peer_host,
                peer_port=dispatch.peer_port,
                binding=dispatch.binding,
                buffered=b"",
            ),
        )
        self.closing = True
        transport.abort()  # closes this process's copy only: no FIN, no reset
        return True


class Lifespan:
    """The ASGI lifespan protocol: start-up before Ready, shut-down at drain."""

    def __init__(self, app: Any, app_spec: str, state: dict[str, Any]) -> None:
        self.app = app
        self.app_spec = app_spec
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received_startup = False
        self.unsupported = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> ch.StartupFailure | None:
        """None when the app started (or does not speak lifespan)."""
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.started
        if self.unsupported:
            return None
        if self.error is not None:
            return describe_failure("lifespan", self.app_spec, self.error)
        if message is not None:
            return ch.StartupFailure(
                phase="lifespan",
                app=self.app_spec,
                exception_type="LifespanStartupFailed",
                message=message or "lifespan.startup.failed",
            )
        return None

    async def shutdown(self, timeout: float) -> None:
        if self.unsupported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(asyncio.shield(self.stopped), timeout)
        except TimeoutError:
            sys.stderr.write("the app's lifespan shut-down did not finish in time\n")

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSIONS, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as error:
            if not self.received_startup:
                self.unsupported = True
            else:
                self.error = error
                if self.started.done():
                    traceback.print_exc()
        finally:
            if not self.started.done():
                self.started.set_result(None)
            if not self.stopped.done():
                self.stopped.set_result(None)

    async def _receive(self) -> dict[str, Any]:
        message = await self.inbox.get()
        if message["type"] == "lifespan.startup":
            self.received_startup = True
        return message

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            if not self.started.done():
                self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            if not self.started.done():
                self.started.set_result(
                    str(message.get("message", "")) or "lifespan.startup.failed"
                )
        elif kind == "lifespan.shutdown.complete":
            if not self.stopped.done():
                self.stopped.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            sys.stderr.write(f"the app's lifespan shut-down failed: {message.get('message', '')}\n")
            if not self.stopped.done():
                self.stopped.set_result(None)


class ASGIServer:
    """The connections of one ASGI worker, on its event loop."""

    def __init__(
        self,
        app: Any,
        boot: ch.Boot,
        channel: socket.socket,
        scoreboard: Scoreboard,
        access_log: AccessLog | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.app = app
        self.boot = boot
        self.channel = channel
        self.loop = loop
        self.access_log = access_log
        self.limits = HeadLimits(**boot.head_limits)  # type: ignore[arg-type]
        self.keepalive_timeout = boot.keepalive_timeout
        self.pool_name = boot.pool
        self.table = routing_table_for(boot.routes, boot.pool)
        self.connections: set[HttpProtocol] = set()
        self.scoreboard = scoreboard
        self.free_slots: list[SlotWriter] = [
            scoreboard.writer(index) for index in reversed(range(scoreboard.slots))
        ]
        self.null_slot = _NullSlot()
        self.state: dict[str, Any] = {}
        self.websockets = websocket_upgrade.OpenWebSockets(loop, boot)
        self.draining = False
        self.done: asyncio.Future[None] = loop.create_future()
        self.served = 0
        self.request_limit = boot.request_limit
        self.leaving = False
        """It asked the master to replace it (SIGTERM from outside)."""

    def take_slot(self) -> SlotWriter | _NullSlot:
        return self.free_slots.pop() if self.free_slots else self.null_slot

    def give_slot(self, slot: SlotWriter | _NullSlot) -> None:
        if slot is not self.null_slot:
            self.free_slots.append(slot)  # type: ignore[arg-type]

    def start(self) -> None:
        self.channel.setblocking(False)
        self.loop.add_reader(self.channel.fileno(), self._on_channel)

    def _on_channel(self) -> None:
        while True:
            try:
                payload, fd = ch.receive(self.channel)
            except BlockingIOError:
                return
            except OSError:
                payload, fd = b"", None
            if not payload:
                self.loop.remove_reader(self.channel.fileno())
                if not self.done.done():
                    self.done.set_result(None)
                return
            message = ch.decode_to_worker(payload)
            if type(message) is ch.Dispatch:
                assert fd is not None
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                self.loop.create_task(self._adopt(sock, message))
            elif type(message) is ch.Ping:
                self.send(ch.Pong(message.seq))
            elif type(message) is ch.Drain:
                self.drain()
            elif type(message) is ch.Routes:
                self.table = routing_table_for(message.routes, self.pool_name)
            elif type(message) is ch.Abandon:
                self._abandon(message.conn_id)
            elif type(message) is ch.DumpTasks:
                self.send(describe_tasks(message.seq, self.loop))

    def request_done(self) -> None:
        """Count a served request; at the pool's limit, ask for the recycle
        now rather than when the master next looks (once a second)."""
        self.served += 1
        if self.served == self.request_limit:
            self.send(ch.RecycleRequest("requests", self.served))

    def sigterm(self) -> None:
        """SIGTERM from outside (`kill`, `docker stop`, systemd): drain as if
        the master asked. The master is told first and answers `Drain`, so
        every connection it dispatched before it knew arrives before the
        drain and is served."""
        if self.leaving or self.draining:
            return
        self.leaving = True
        self.send(ch.RecycleRequest("SIGTERM", self.served))

    def _abandon(self, conn_id: int) -> None:
        """The master answered the connection (request time-out): the app
        sees a disconnect at its next `receive()`, and what it sends is
        dropped. The task is not cancelled: like a WSGI thread, it runs on."""
        for protocol in list(self.connections):
            if protocol.conn_id == conn_id and protocol.transport is not None:
                protocol.transport.close()

    async def _adopt(self, sock: socket.socket, dispatch: ch.Dispatch) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: HttpProtocol(self, dispatch), sock)
        except OSError:
            sock.close()
            self.scoreboard.settle()
            self.send(ch.Closed([dispatch.conn_id]))

    def send(self, message: ch.ToMaster) -> None:
        try:
            self.channel.send(ch.encode(message))
        except BlockingIOError:
            self.loop.call_later(0.01, self.send, message)
        except OSError:
            if not self.done.done():
                self.done.set_result(None)

    def hand_back(self, fd: int, message: ch.HandBack) -> None:
        try:
            socket.send_fds(self.channel, [ch.encode(message)], [fd])
        except OSError:
            if not self.done.done():
                self.done.set_result(None)

    def connection_closed(self, protocol: HttpProtocol) -> None:
        self.connections.discard(protocol)
        if not protocol.handed_back:
            self.send(ch.Closed([protocol.conn_id]))
        if self.draining and not self.connections and not self.done.done():
            self.done.set_result(None)

    def drain(self) -> None:
        self.draining = True
        self.websockets.drain()
        for protocol in list(self.connections):
            protocol.hand_back_if_idle()
        if not self.connections and not self.done.done():
            self.done.set_result(None)

    def log_exception(self, headline: str) -> None:
        sys.stderr.write(f"{headline}\n{traceback.format_exc()}")
        sys.stderr.flush()
