"""Serving a WSGI app: one epoll set, a leader thread, and threads in reserve.

```
 channel fd ─┐                ┌─ leader: poll → recv → parse → app → send → next ready fd
 client fds ─┴─ epoll ────────┤
                              ├─ stand-by: takes over when the leader is stuck in a request
                              └─ followers: wait their turn (--threads in all)
```

The thread that takes a ready connection from epoll serves it start to
finish: it reads, parses, runs the app and writes the response. No request
is passed from an I/O thread to an app thread, so a fast request costs no
thread hand-off; a slow one lets a waiting thread take over (see
`WSGIServer`). Pings on the channel are answered by the leader, so when every
thread is stuck in the app, the master sees it.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from poolwarden import channel as ch
from poolwarden.http.fields import valid_field_name
from poolwarden.http.limits import HeadLimits
from poolwarden.http.responses import DATE, simple_response
from poolwarden.http.target import request_bytes, split_target
from poolwarden.http.upgrade import is_websocket_upgrade, websocket_on_wsgi
from poolwarden.routing import routing_table_for
from poolwarden.scoreboard import Scoreboard, SlotWriter
from poolwarden.worker.accesslog import AccessLog
from poolwarden.worker.http11 import ParseError, Request, RequestParser

READ_SIZE = 65536
BODY_TIMEOUT = 60.0
"""Seconds a client may pause while sending a body or reading a response,
like gunicorn's and nginx's 60 s."""
DISCARD_LIMIT = 1 << 20
"""Unread body bytes the worker reads and drops to keep a connection alive;
beyond that it closes the connection instead."""
SWEEP_INTERVAL = 1.0

_READABLE = select.EPOLLIN
EXIT_RUNTIME_FAILURE = 70
"""The worker's exit status after a runtime failure (EX_SOFTWARE)."""
TAKEOVER_AFTER = 0.005
"""Seconds the leader may spend in one request before the stand-by thread
takes over the other connections."""
CLOSED_BATCH = 64
"""Closed connections reported to the master in one message, at most."""
MAIN_THREAD_WAKE = 0.1
"""Seconds between the idle main thread's wake-ups. It only waits for the
end, but it is the thread where CPython runs `sys.remote_exec` scripts (PEP
768: `poolwarden stack` and `debug attach` on Python 3.14+), and only between
bytecodes: a thread parked in one wait never gets there. Waking it this
often (a few microseconds each) lets them run within this time, well inside
the master's `REMOTE_WAIT`."""
_SERVER = b"server: poolwarden\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY_STATUS = frozenset((204, 304))
_SPECIAL_HEADERS = frozenset(
    ("content-length", "connection", "transfer-encoding", "server", "date")
)
"""Response headers the server reads rather than passes on as they are."""
_SOCKET_GONE = frozenset((errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT))
"""`sendfile` errors that come from the client's socket rather than the file."""


class ClientDisconnected(OSError):
    """The client's own socket failed: it went away, reset, or stopped reading.

    Only this is a disconnect. Every other `OSError` that reaches the server
    came from the app (a missing file, a refused database connection, an
    HTTP client's error) and is an app exception: a 500 and a traceback. So
    every read and write on the client's socket turns its errors into this.
    """


class MalformedBody(ClientDisconnected):
    """The request body broke its framing (a bad chunk): the client gets a 400.

    An OSError like a disconnect, because the app must stop reading either
    way; the server still owes the client an answer, which a disconnect is not.
    """

    def __init__(self, error: ParseError) -> None:
        super().__init__(f"malformed request body: {error}")
        self.error = error


def _wait(sock: socket.socket, events: int, timeout: float) -> None:
    poller = select.poll()
    poller.register(sock, events)
    if not poller.poll(timeout * 1000):
        raise ClientDisconnected(errno.ETIMEDOUT, "client too slow")


def send_all(sock: socket.socket, data: bytes | memoryview) -> None:
    """Send everything on a non-blocking socket, waiting only when it is full."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    except OSError as error:
        raise ClientDisconnected(error.errno, f"client connection: {error.strerror}") from error
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            _wait(sock, select.POLLOUT, BODY_TIMEOUT)
            continue
        except OSError as error:
            raise ClientDisconnected(error.errno, f"client connection: {error.strerror}") from error
        view = view[sent:]


def environ_key(name: bytes) -> str | None:
    """The environ key for a request header, or None to drop it.

    Headers with an underscore are dropped, as nginx and gunicorn drop them:
    `X_Forwarded_For` would land on the same key as `X-Forwarded-For`, which
    a proxy in front may be vouching for.
    """
    text = name.decode("latin-1")
    if "_" in text:
        return None
    key = text.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return key
    key = "HTTP_" + key
    if len(_ENVIRON_KEYS) < 1024:
        _ENVIRON_KEYS[name] = key
    return key


_ENVIRON_KEYS: dict[bytes, str] = {}
"""Header name → environ key, for the names seen so far (bounded)."""


class _EmptyInput:
    """`wsgi.input` of a request without a body: shared, nothing to read."""

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> _EmptyInput:
        return self

    def __next__(self) -> bytes:
        raise StopIteration


_NO_BODY = _EmptyInput()


class FileWrapper:
    """`wsgi.file_wrapper`: a file sent with `os.sendfile` when it has an fd."""

    def __init__(self, filelike: Any, block_size: int = 8192) -> None:
        self.filelike = filelike
        self.block_size = block_size
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.block_size)
        if data:
            return bytes(data)
        raise StopIteration


class WSGIInput:
    """`wsgi.input`: the request body, read from the socket as the app asks.

    What arrived but was not read yet is `_buffer[_pos:]`: a read or a line
    is one slice of it, so reading a body in small pieces (a form parser
    reading lines) does not copy the rest of the buffer each time. Reads that
    span several arrivals gather them in a list and join once.
    """

    __slots__ = ("_buffer", "_connection", "_pos", "_request")

    def __init__(self, connection: Connection, request: Request) -> None:
        self._connection = connection
        self._request = request
        self._buffer = b""
        self._pos = 0

    def _piece(self) -> bytes | None:
        """The next piece of the body, from the socket if need be; None at its end."""
        request = self._request
        while not request.body:
            if request.complete:
                return None
            self._connection.fill(request)
        return request.body.popleft()

    def _gather(self, size: int, line: bool) -> bytes:
        """Buffer pieces until `size` bytes (any, if < 0), a newline if `line`, or the end."""
        pieces = [self._buffer[self._pos :]]
        have = len(pieces[0])
        while size < 0 or have < size:
            piece = self._piece()
            if piece is None:
                break
            pieces.append(piece)
            have += len(piece)
            if line and b"\n" in piece:
                break
        data = b"".join(pieces)
        self._buffer = data
        self._pos = 0
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            data = self._gather(-1, False)
            self._buffer = b""
            return data
        buffer, pos = self._buffer, self._pos
        if len(buffer) - pos < size:
            buffer, pos = self._gather(size, False), 0
        end = min(pos + size, len(buffer))
        self._pos = end
        return buffer[pos:end]

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None or size < 0 else size
        buffer, pos = self._buffer, self._pos
        end = buffer.find(b"\n", pos)
        if end < 0 and (limit < 0 or len(buffer) - pos < limit):
            buffer, pos = self._gather(limit, True), 0
            end = buffer.find(b"\n")
        end = len(buffer) if end < 0 else end + 1
        if 0 <= limit < end - pos:
            end = pos + limit
        self._pos = end
        return buffer[pos:end]

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> WSGIInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class Response:
    """`start_response` and the writing of one response."""

    __slots__ = (
        "chunked",
        "close_after",
        "connection",
        "head_only",
        "headers",
        "headers_sent",
        "length",
        "request",
        "sent_body",
        "slot",
        "status",
        "status_code",
    )

    def __init__(self, connection: Connection, request: Request, slot: SlotWriter) -> None:
        self.connection = connection
        self.request = request
        self.slot = slot
        self.status: str | None = None
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False
        self.length: int | None = None
        self.chunked = False
        self.close_after = not request.keep_alive
        self.head_only = request.method == b"HEAD"
        self.sent_body = 0

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        # (CR and LF in the status are refused with the headers', in `_head`.)
        if (
            not isinstance(status, str)
            or len(status) < 4
            or status[3] != " "
            or not status[:3].isdigit()
        ):
            raise ValueError(f"invalid status {status!r}")
        self.status = status
        self.status_code = int(status[:3])
        self.headers = headers
        return self.write

    def _head(self, first_chunk: bytes | None) -> bytes:
        """Serialize the status and headers, choosing the body's framing.

        `first_chunk` is the whole body when the app returned exactly one
        chunk, which lets the common case get a Content-Length, not chunks.
        Nothing about the response changes unless the head is valid, so that
        an invalid one can still be answered with a 500.
        """
        if self.status is None:
            raise AssertionError("the app did not call start_response")
        lines = [b"HTTP/1.1 " + self.status.encode("latin-1") + b"\r\n"]
        length = None
        connection_close = self.close_after or self.connection.server.draining
        request = self.request
        if request.expect_continue and not request.continue_sent and not request.complete:
            # The client still holds its body back, and may send it anyway
            # later; on this connection it could not be told from a request.
            connection_close = True
        own_server = own_date = False
        for name, value in self.headers:
            if not valid_field_name(name):
                # Not a token (RFC 9110 §5.1): a space or a colon in it would
                # make a client read another field, or a malformed head.
                raise ValueError(f"invalid response header name {name!r}")
            lowered = name.lower()
            if lowered in _SPECIAL_HEADERS:
                if lowered == "content-length":
                    length = int(value)
                    if length < 0:
                        raise ValueError(f"invalid Content-Length {value!r}")
                    continue
                if lowered == "connection":
                    if value.lower() == "close":
                        connection_close = True
                    continue
                if lowered == "transfer-encoding":
                    continue
                # The app's own Server or Date replaces the server's: a
                # second one would be a duplicate of a single-valued field.
                if lowered == "server":
                    own_server = True
                else:
                    own_date = True
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        code = self.status_code
        no_body = code in _NO_BODY_STATUS or code < 200
        chunked = False
        if no_body:
            pass
        elif length is not None:
            lines.append(b"content-length: %d\r\n" % length)
        elif first_chunk is not None:
            length = len(first_chunk)
            lines.append(b"content-length: %d\r\n" % length)
        elif request.http_version == "1.1":
            chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        else:
            connection_close = True
        if connection_close:
            lines.append(b"connection: close\r\n")
        elif request.http_version == "1.0":
            lines.append(b"connection: keep-alive\r\n")
        if not own_server:
            lines.append(_SERVER)
        if not own_date:
            lines.append(DATE.header())
        lines.append(b"\r\n")
        head = b"".join(lines)
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
            # A CR or LF inside the status or a header would end a line early:
            # the app could forge headers, or a whole second response.
            raise ValueError("CR or LF inside the status or a response header")
        self.length = length
        self.chunked = chunked
        self.head_only = self.head_only or no_body
        self.close_after = connection_close
        self.headers_sent = True
        self.slot.responding(code)
        return head

    def write(self, data: bytes) -> None:
        """Send a body chunk, the head first if it has not gone yet."""
        head = b"" if self.headers_sent else self._head(None)
        if self.head_only:
            if head:
                send_all(self.connection.sock, head)
            return
        if self.length is not None:
            room = self.length - self.sent_body
            if len(data) > room:
                data = data[:room]
        self.sent_body += len(data)
        if self.chunked and data:
            send_all(self.connection.sock, b"%s%x\r\n%s\r\n" % (head, len(data), data))
        elif head or data:
            send_all(self.connection.sock, head + data if head else data)

    def write_single(self, data: bytes) -> None:
        """The whole body in one chunk: one send for head and body."""
        head = self._head(data)
        if self.head_only:
            send_all(self.connection.sock, head)
            return
        if self.length is not None and len(data) != self.length:
            if len(data) > self.length:
                data = data[: self.length]
            else:
                self.close_after = True  # promised more than it has
        self.sent_body += len(data)
        send_all(self.connection.sock, head + data)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile; False to iterate it instead.

        The file's size from its position on becomes the Content-Length,
        unless the app gave one (it may mean to send only part of the file).
        """
        if self.headers_sent and self.chunked:
            return False  # sendfile cannot frame chunks
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            offset = filelike.tell() if hasattr(filelike, "tell") else 0
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False  # a pipe or a device has no size to send
        size = max(0, info.st_size - offset)
        if not self.headers_sent and not any(
            name.lower() == "content-length" for name, _ in self.headers
        ):
            self.headers = [*self.headers, ("Content-Length", str(size))]
        self.write(b"")
        if self.head_only:
            return True
        sock = self.connection.sock
        remaining = size if self.length is None else min(size, self.length - self.sent_body)
        while remaining > 0:
            try:
                sent = os.sendfile(sock.fileno(), fd, offset, remaining)
            except BlockingIOError:
                _wait(sock, select.POLLOUT, BODY_TIMEOUT)
                continue
            except OSError as error:
                if error.errno not in _SOCKET_GONE:
                    raise  # the file's own error (EIO): the app's, a 500
                raise ClientDisconnected(
                    error.errno, f"client connection: {error.strerror}"
                ) from error
            if sent == 0:
                break
            offset += sent
            remaining -= sent
            self.sent_body += sent
        self.finish()
        return True

    def finish(self) -> None:
        """End the body; a short body breaks framing, so the connection closes."""
        if not self.headers_sent:
            self.write_single(b"")
            return
        if self.head_only:
            return
        if self.chunked:
            send_all(self.connection.sock, b"0\r\n\r\n")
        elif self.length is not None and self.sent_body < self.length:
            self.close_after = True


class Connection:
    """One client connection dispatched to this worker."""

    __slots__ = (
        "abandoned",
        "base_environ",
        "binding",
        "busy",
        "client",
        "conn_id",
        "disabled",
        "dispatch",
        "fd",
        "last_active",
        "parser",
        "pending",
        "routed_first",
        "script_name",
        "server",
        "settled",
        "sock",
    )

    def __init__(self, server: WSGIServer, sock: socket.socket, dispatch: ch.Dispatch) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.conn_id = dispatch.conn_id
        self.dispatch = dispatch
        self.client = f"{dispatch.peer_host}:{dispatch.peer_port}".encode("latin-1")[:52]
        self.parser = RequestParser(server.limits)
        self.pending = dispatch.buffered
        self.busy = False
        self.routed_first = False
        self.binding = dispatch.binding
        self.script_name = dispatch.script_name
        self.disabled = False
        self.abandoned = False
        """The master answered it (request time-out): close it when done."""
        self.settled = False
        """Its first request started, or it ended before one (`Scoreboard.settle`)."""
        self.last_active = time.monotonic()
        # What every request on this connection shares, copied per request.
        self.base_environ: dict[str, Any] = {
            "SCRIPT_NAME": dispatch.script_name,
            "SERVER_NAME": dispatch.server_host,
            "SERVER_PORT": str(dispatch.server_port),
            "REMOTE_ADDR": dispatch.peer_host,
            "REMOTE_PORT": str(dispatch.peer_port),
            "SERVER_SOFTWARE": "poolwarden",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": dispatch.scheme,
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": server.threads > 1,
            "wsgi.multiprocess": server.multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
        }

    def fill(self, request: Request) -> None:
        """Read more of `request`'s body from the socket (the app asked)."""
        stopped = self.parser.error
        if stopped is not None:
            # The parser stopped in this body: nothing more will come of it.
            raise MalformedBody(stopped)
        if request.expect_continue and not request.continue_sent:
            request.continue_sent = True
            send_all(self.sock, _CONTINUE)
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except BlockingIOError:
                _wait(self.sock, select.POLLIN, BODY_TIMEOUT)
                continue
            except OSError as error:
                raise ClientDisconnected(
                    error.errno, f"client connection: {error.strerror}"
                ) from error
            break
        if not data:
            raise ClientDisconnected("client closed the connection while sending the body")
        self.parser.feed(data)
        if self.parser.error is not None and not request.complete:
            raise MalformedBody(self.parser.error)

    def serve(self, slot: SlotWriter) -> None:
        """Serve what the socket has ready; re-arm or close before returning."""
        server = self.server
        try:
            data = self.pending
            if data:
                self.pending = b""
            else:
                try:
                    data = self.sock.recv(READ_SIZE)
                except BlockingIOError:
                    server.release(self)
                    return
                if not data:
                    server.close(self)
                    return
            parser = self.parser
            parser.feed(data)
            ready = parser.ready
            while ready:
                request = ready.popleft()
                if server.table is not None and not self.route(request):
                    return  # handed back to the front end, or refused
                if request.upgrade and is_websocket_upgrade(
                    request.method, request.http_version, request.headers
                ):
                    self.refuse_websocket(request)
                    server.close(self)
                    return
                # A response sent while draining said `Connection: close`;
                # one that promised keep-alive before is handed back below.
                if not self.handle(request, slot):
                    server.close(self)
                    return
            if parser.error is not None:
                error = parser.error
                send_all(
                    self.sock,
                    simple_response(error.status, f"{error}\n", reason_code=error.reason_code),
                )
                server.close(self)
                return
            server.release(self)
        except OSError:
            server.close(self)
        except Exception:
            server.log_exception("internal error while serving a connection")
            server.close(self)

    def refuse_websocket(self, request: Request) -> None:
        """A WebSocket handshake reached a WSGI pool: answer 400 naming why
        (RFC 6455 §4.2.2) without running the app, which could not hold the
        connection; the caller closes it, and the worker serves on."""
        started = time.time()
        answer = websocket_on_wsgi(self.server.pool_name)
        send_all(self.sock, answer)
        if self.server.access_log is not None:
            headers = {name.lower(): value for name, value in request.headers}
            self.server.access_log.write(
                client=self.dispatch.peer_host,
                method=request.method.decode("latin-1"),
                target=request.url.decode("latin-1"),
                version=request.http_version,
                status=400,
                size=len(answer) - answer.index(b"\r\n\r\n") - 4,
                referer=headers.get(b"referer", b"").decode("latin-1"),
                user_agent=headers.get(b"user-agent", b"").decode("latin-1"),
                duration=time.time() - started,
            )

    def route(self, request: Request) -> bool:
        """Whether this request is this pool's; if not, hand it back.

        The front end routed the connection's first request. A later one on
        the same keep-alive connection may name another host or path, of
        another application (a new mount path) or another pool (handed back
        to the front end, which dispatches it there).
        """
        if not self.routed_first:
            self.routed_first = True
            return True
        table = self.server.table
        assert table is not None
        path = request.url.split(b"?", 1)[0].decode("latin-1")
        host = (request.host or b"").decode("latin-1")
        match = table.route(self.binding, host, path)
        if match is not None and match.application.pool == self.server.pool_name:
            self.script_name = match.script_name
            self.base_environ["SCRIPT_NAME"] = match.script_name
            return True
        self.hand_back(request)
        return False

    def hand_back(self, request: Request) -> None:
        """Return the connection to the front end with this request's bytes.

        The request is written out again from what was parsed: its head,
        and the body bytes received so far when the body is framed by
        Content-Length (the rest is still in the socket). A connection whose
        bytes cannot be given back whole (a chunked body still arriving, or
        more pipelined requests already read) is answered `421 Misdirected
        Request` and closed, which tells a client to retry on a new one.
        """
        parser = self.parser
        chunked = any(name.lower() == b"transfer-encoding" for name, _ in request.headers)
        if parser.ready or parser.in_head or parser.error or (chunked and not request.complete):
            send_all(
                self.sock,
                simple_response(
                    421,
                    "Misdirected Request: send this request on a new connection.\n",
                    reason_code="misdirected",
                ),
            )
            self.server.close(self)
            return
        data = request_bytes(
            request.method,
            request.url,
            request.http_version,
            request.headers,
            b"".join(request.body),
            chunked=chunked,
        )
        self.server.hand_back(
            self,
            ch.HandBack(
                conn_id=self.conn_id,
                peer_host=self.dispatch.peer_host,
                peer_port=self.dispatch.peer_port,
                binding=self.binding,
                buffered=data,
            ),
        )

    def environ(self, request: Request) -> dict[str, Any]:
        url = request.url
        raw_path, query = split_target(url)
        path = (
            unquote_to_bytes(raw_path).decode("latin-1")
            if b"%" in raw_path
            else raw_path.decode("latin-1")
        )
        script_name = self.script_name
        if script_name and path.startswith(script_name):
            rest = path[len(script_name) :]
            if not rest or rest[0] == "/":  # "/app" is not a prefix of "/apple"
                path = rest
        environ = self.base_environ.copy()
        environ["REQUEST_METHOD"] = request.method.decode("latin-1")
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["RAW_URI"] = url.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + request.http_version
        environ["wsgi.input"] = (
            _NO_BODY if request.complete and not request.body else WSGIInput(self, request)
        )
        for name, value in request.headers:
            key = _ENVIRON_KEYS.get(name)
            if key is None:
                key = environ_key(name)
                if key is None:
                    continue
            text = value.decode("latin-1")
            if key in environ:
                environ[key] += ("; " if key == "HTTP_COOKIE" else ",") + text
            else:
                environ[key] = text
        return environ

    def handle(self, request: Request, slot: SlotWriter) -> bool:
        """Run the app for one request; True when the connection stays open."""
        server = self.server
        started = time.time()
        escaped = False
        environ = self.environ(request)
        slot.begin(self.conn_id, started, request.method[:12], request.url[:200], self.client)
        if not self.settled:
            server.settle(self)
        response = Response(self, request, slot)
        result: Iterable[bytes] | None = None
        failed = False
        try:
            result = server.app(environ, response.start_response)
            if type(result) is list and len(result) == 1:
                response.write_single(result[0])
            elif isinstance(result, FileWrapper) and response.send_file(result):
                pass
            else:
                for chunk in result:
                    if chunk:
                        response.write(chunk)
                response.finish()
        except ClientDisconnected as error:
            failed = True
            response.close_after = True
            if isinstance(error, MalformedBody) and not response.headers_sent:
                self._refuse(response, error.error)
        except Exception:
            failed = True
            server.log_exception(
                f"error in the app serving {request.method.decode('latin-1')} "
                f"{request.url.decode('latin-1')}"
            )
            if not response.headers_sent:
                response.status_code = 500
                try:
                    send_all(
                        self.sock,
                        simple_response(
                            500, "Internal Server Error\n", head_only=response.head_only
                        ),
                    )
                except OSError:
                    pass
            response.close_after = True
        except BaseException:
            # Escapes into the runtime, which ends the worker: the slot stays
            # as it is, so the master sees this request was in flight.
            escaped = True
            raise
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    failed = True
                    response.close_after = True
                    server.log_exception("error in the app's close()")
            if not escaped:
                slot.end()
        if server.access_log is not None:
            server.access_log.write(
                client=self.dispatch.peer_host,
                method=request.method.decode("latin-1"),
                target=request.url.decode("latin-1"),
                version=request.http_version,
                status=response.status_code or 500,
                size=response.sent_body,
                referer=environ.get("HTTP_REFERER", ""),
                user_agent=environ.get("HTTP_USER_AGENT", ""),
                duration=time.time() - started,
            )
        server.request_done()
        if failed or response.close_after or request.upgrade:
            return False
        return self._discard_body(request)

    def _refuse(self, response: Response, error: ParseError) -> None:
        """Answer a request the parser refused after the app began reading it."""
        response.status_code = error.status
        try:
            send_all(
                self.sock,
                simple_response(error.status, f"{error}\n", reason_code=error.reason_code),
            )
        except OSError:
            pass

    def _discard_body(self, request: Request) -> bool:
        """Drop a body the app did not read, so the next request can follow."""
        if request.complete:
            request.body.clear()
            return True
        if request.expect_continue and not request.continue_sent:
            return False
        start = request.body_received
        try:
            while not request.complete and request.body_received - start <= DISCARD_LIMIT:
                request.body.clear()
                self.fill(request)
        except OSError:
            return False
        request.body.clear()
        return request.complete


class WSGIServer:
    """The connections of one worker and the threads that serve them.

    Scheduling is "leader and stand-by": one thread, the leader, waits on
    epoll and serves every ready connection itself, in the order epoll gives
    them. One other thread, the stand-by, wakes every `TAKEOVER_AFTER`
    seconds; when it finds the leader stuck in one request for longer than
    that, it takes over the remaining ready connections and the epoll wait,
    and wakes a new stand-by. The old leader finishes its request and becomes
    a follower. So fast requests run with no thread hand-off at all, and a
    slow request delays the others by at most `TAKEOVER_AFTER`; at most
    `threads` requests run in the app at once.

    Connections are registered level-triggered. The one connection a leader
    is serving when it is overtaken is disabled in epoll, so the new leader
    does not see it, and re-enabled by the thread that finishes it.
    """

    def __init__(
        self,
        app: Any,
        boot: ch.Boot,
        channel: socket.socket,
        scoreboard: Scoreboard,
        access_log: AccessLog | None,
    ) -> None:
        self.app = app
        self.boot = boot
        self.channel = channel
        self.channel_fd = channel.fileno()
        self.scoreboard = scoreboard
        self.access_log = access_log
        self.threads = max(1, boot.threads)
        self.multiprocess = boot.multiprocess
        self.limits = HeadLimits(**boot.head_limits)  # type: ignore[arg-type]
        self.keepalive_timeout = boot.keepalive_timeout
        self.pool_name = boot.pool
        self.table = routing_table_for(boot.routes, boot.pool)
        self.epoll = select.epoll()
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.connections: dict[int, Connection] = {}
        self.ready: deque[int] = deque()
        self.draining = False
        self.stopped = threading.Event()
        self.leader: int | None = None
        self.standby: int | None = None
        self.leader_busy_since = 0.0
        self.leader_connection: Connection | None = None
        self.closed_ids: list[int] = []
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        self._served = itertools.count(1)
        self.request_limit = boot.request_limit
        self.leaving = False
        """It asked the master to replace it (SIGTERM from outside)."""
        self.epoll.register(self.channel_fd, select.EPOLLIN)

    def serve(self) -> None:
        """Run the threads until drained or the master is gone."""
        workers = [
            threading.Thread(
                target=self._run, args=(index,), name=f"poolwarden-wsgi-{index}", daemon=True
            )
            for index in range(self.threads)
        ]
        for thread in workers:
            thread.start()
        # Handlers run in this thread, which wakes every MAIN_THREAD_WAKE.
        signal.signal(signal.SIGTERM, self._on_sigterm)
        while not self.stopped.wait(MAIN_THREAD_WAKE):
            pass
        with self.wakeup:
            self.wakeup.notify_all()
        deadline = time.monotonic() + 5.0
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))

    # roles

    def _run(self, index: int) -> None:
        slot = self.scoreboard.writer(index)
        try:
            while not self.stopped.is_set():
                if self._await_leadership(index):
                    self._lead(index, slot)
        except BaseException as error:
            self._runtime_failed(error)

    def _runtime_failed(self, error: BaseException) -> None:
        """An exception escaped a serving thread (from the app, a
        BaseException the request path does not catch, or a bug here). The
        worker cannot be trusted to serve on: say why, then end at once."""
        text = "".join(traceback.format_exception(error))
        sys.stderr.write(f"poolwarden worker runtime failure:\n{text}")
        sys.stderr.flush()
        try:
            self.channel.send(
                ch.encode(
                    ch.RuntimeFailure(
                        exception_type=type(error).__qualname__,
                        message=str(error),
                        traceback=text,
                    )
                )
            )
        except OSError:
            pass
        os._exit(EXIT_RUNTIME_FAILURE)

    def _await_leadership(self, index: int) -> bool:
        """Wait as stand-by or follower; True once this thread leads."""
        with self.wakeup:
            while not self.stopped.is_set():
                if self.leader is None:
                    self.leader = index
                    if self.standby == index:
                        self.standby = None
                    self.wakeup.notify()
                    return True
                if self.standby is None:
                    self.standby = index
                if self.standby != index:
                    self.wakeup.wait()
                    continue
                self.wakeup.wait(TAKEOVER_AFTER)
                busy_since = self.leader_busy_since
                if busy_since and time.monotonic() - busy_since >= TAKEOVER_AFTER:
                    self._take_over(index)
                    return True
            return False

    def _take_over(self, index: int) -> None:
        """(Lock held.) Become leader while the old one is stuck in a request."""
        stuck = self.leader_connection
        if stuck is not None and not stuck.disabled:
            stuck.disabled = True
            try:
                self.epoll.modify(stuck.fd, 0)
            except OSError:
                pass
        self.leader = index
        self.standby = None
        self.leader_busy_since = 0.0
        self.leader_connection = None
        self.wakeup.notify()

    def _lead(self, index: int, slot: SlotWriter) -> None:
        """Serve ready connections until overtaken or stopped."""
        ready = self.ready
        connections = self.connections
        poll = self.epoll.poll
        channel_fd = self.channel_fd
        lock = self.lock
        while True:
            if not ready:
                if self.closed_ids:
                    self._flush_closed()
                if time.monotonic() >= self._next_sweep:
                    self._sweep()
                if self.stopped.is_set():
                    with lock:
                        self.leader = None
                    return
                try:
                    events = poll(SWEEP_INTERVAL, 256)
                except InterruptedError:
                    continue
                with lock:
                    if self.leader != index:
                        ready.extend(fd for fd, _ in events)
                        return
                ready.extend(fd for fd, _ in events)
                continue
            fd = ready.popleft()
            if fd == channel_fd:
                self._on_channel()
                continue
            connection = connections.get(fd)
            if connection is None or connection.busy:
                continue
            connection.busy = True
            self.leader_connection = connection
            self.leader_busy_since = time.monotonic()
            connection.serve(slot)
            with lock:
                if self.leader != index:
                    # Overtaken while serving: the new leader disabled this
                    # connection in epoll; it may listen again now.
                    if connection.disabled:
                        connection.disabled = False
                        if connections.get(fd) is connection:
                            self.epoll.modify(fd, _READABLE)
                    return
                self.leader_busy_since = 0.0
                self.leader_connection = None

    # connections

    def _on_channel(self) -> None:
        """Take every message waiting on the channel."""
        while True:
            try:
                payload, fd = ch.receive(self.channel, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                payload = b""
            if not payload:
                self._master_gone()
                return
            message = ch.decode_to_worker(payload)
            if type(message) is ch.Dispatch:
                assert fd is not None
                sock = socket.socket(fileno=fd)
                sock.setblocking(False)
                connection = Connection(self, sock, message)
                with self.lock:
                    self.connections[connection.fd] = connection
                self.epoll.register(connection.fd, _READABLE)
                # Its head is already in hand: serve it next.
                self.ready.appendleft(connection.fd)
            elif type(message) is ch.Ping:
                self.send(ch.Pong(message.seq))
            elif type(message) is ch.Drain:
                self.drain()
            elif type(message) is ch.Routes:
                self.table = routing_table_for(message.routes, self.pool_name)
            elif type(message) is ch.Abandon:
                self._abandon(message.conn_id)

    def request_done(self) -> None:
        """Count a served request; at the pool's limit, ask for the recycle
        now rather than when the master next looks (once a second)."""
        served = next(self._served)
        if served == self.request_limit:
            self.send(ch.RecycleRequest("requests", served))

    def _on_sigterm(self, signum: int, frame: object) -> None:
        """SIGTERM from outside (`kill`, `docker stop`, systemd): drain as if
        the master asked. The master is told first and answers `Drain`, so
        every connection it dispatched before it knew arrives before the
        drain and is served."""
        if self.leaving or self.draining:
            return
        self.leaving = True
        self.send(ch.RecycleRequest("SIGTERM", self.scoreboard.served()))

    def _abandon(self, conn_id: int) -> None:
        """The app's thread runs on (nothing can stop a thread); once it
        returns, the connection is closed, not kept alive."""
        with self.lock:
            found = [c for c in self.connections.values() if c.conn_id == conn_id]
        for connection in found:
            connection.abandoned = True
            if not connection.busy:
                self.close(connection)

    def send(self, message: ch.ToMaster) -> None:
        try:
            self.channel.send(ch.encode(message))
        except OSError:
            self._master_gone()

    def release(self, connection: Connection) -> None:
        """A thread is done serving `connection` for now; it stays open
        (while draining, it goes back to the front end)."""
        if connection.abandoned:
            self.close(connection)
            return
        connection.last_active = time.monotonic()
        if self.draining and self.hand_back_idle(connection):
            return
        connection.busy = False

    def hand_back_idle(self, connection: Connection) -> bool:
        """Draining: give an idle keep-alive connection back to the front
        end rather than close it, so a request the client sends now (or has
        sent: it is still in the socket, unread) goes to another worker and
        no client sees the recycle. Not one this worker has read part of a
        request from (its bytes are here): that one is served when the rest
        arrives, with `Connection: close`. True if it was handed back."""
        if connection.parser.in_head or connection.pending or connection.parser.ready:
            return False
        dispatch = connection.dispatch
        self.hand_back(
            connection,
            ch.HandBack(
                conn_id=connection.conn_id,
                peer_host=dispatch.peer_host,
                peer_port=dispatch.peer_port,
                binding=connection.binding,
                buffered=b"",
            ),
        )
        return True

    def settle(self, connection: Connection) -> None:
        """The master counts `connection` in use until its first request is
        in a slot or it is gone: say it is no longer waiting, once."""
        with self.lock:
            if connection.settled:
                return
            connection.settled = True
        self.scoreboard.settle()

    def close(self, connection: Connection) -> None:
        self.settle(connection)
        with self.lock:
            if self.connections.get(connection.fd) is not connection:
                return
            del self.connections[connection.fd]
            empty = not self.connections
            self.closed_ids.append(connection.conn_id)
        try:
            self.epoll.unregister(connection.fd)
        except OSError:
            pass
        sock = connection.sock
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()
        if len(self.closed_ids) >= CLOSED_BATCH or self.leader_connection is not connection:
            self._flush_closed()
        if empty and self.draining:
            self._flush_closed()
            self.stopped.set()

    def hand_back(self, connection: Connection, message: ch.HandBack) -> None:
        """Give the connection back to the master; it is not closed: the
        master still holds it and sends it on."""
        self.settle(connection)
        with self.lock:
            if self.connections.get(connection.fd) is not connection:
                return
            del self.connections[connection.fd]
            empty = not self.connections
        try:
            self.epoll.unregister(connection.fd)
        except OSError:
            pass
        try:
            socket.send_fds(self.channel, [ch.encode(message)], [connection.fd])
        except OSError:
            self._master_gone()
        connection.sock.close()
        if empty and self.draining:
            self._flush_closed()
            self.stopped.set()

    def _flush_closed(self) -> None:
        """Tell the master which connections it may drop, in one message."""
        with self.lock:
            ids, self.closed_ids = self.closed_ids, []
        if ids:
            self.send(ch.Closed(ids))

    def _sweep(self) -> None:
        """Close idle keep-alive connections past their time-out; when
        draining, hand the idle ones back to the front end at once."""
        now = time.monotonic()
        self._next_sweep = now + SWEEP_INTERVAL
        expired: list[Connection] = []
        idle: list[Connection] = []
        with self.lock:
            for connection in self.connections.values():
                if connection.busy:
                    continue
                if now - connection.last_active > self.keepalive_timeout:
                    connection.busy = True
                    expired.append(connection)
                elif self.draining and not connection.pending:
                    connection.busy = True
                    idle.append(connection)
            idle_and_draining = self.draining and not self.connections
        for connection in idle:
            if not self.hand_back_idle(connection):
                connection.busy = False  # part of a request is here: served when it is whole
        for connection in expired:
            if connection.parser.in_head:
                try:
                    connection.sock.send(
                        simple_response(408, "Request Timeout\n", reason_code="head_timeout")
                    )
                except OSError:
                    pass
            self.close(connection)
        if idle_and_draining:
            self._flush_closed()
            self.stopped.set()

    def drain(self) -> None:
        self.draining = True
        self._next_sweep = 0.0

    def _master_gone(self) -> None:
        """The channel hit EOF: the master is gone, so this worker ends too."""
        self.draining = True
        self.stopped.set()

    def log_exception(self, headline: str) -> None:
        text = traceback.format_exc()
        sys.stderr.write(f"{headline}\n{text}")
        sys.stderr.flush()
