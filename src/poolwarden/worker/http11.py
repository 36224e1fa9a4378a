"""Incremental request parsing for a worker's connection.

A connection owns one httptools parser fed with whatever arrives; the
callbacks turn the byte stream into `Request` objects queued in order, so
pipelined requests are answered in order. Body bytes go to the request they
belong to and are consumed by the app as it reads (never buffered whole).

The limits of `poolwarden.http.limits` apply here too: the front end checks a
connection's first head, the worker checks every head that follows.
"""

from __future__ import annotations

from collections import deque

import httptools

from poolwarden.http.limits import HeadLimits


class ParseError(Exception):
    """A request the worker refuses, with the status to answer with."""

    def __init__(self, status: int, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason_code = reason_code


class Request:
    """One request's head, and its body as it arrives."""

    __slots__ = (
        "body",
        "body_received",
        "complete",
        "continue_sent",
        "expect_continue",
        "headers",
        "host",
        "http_version",
        "keep_alive",
        "method",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.http_version = "1.1"
        self.keep_alive = True
        self.body: deque[bytes] = deque()
        self.body_received = 0
        self.complete = False
        self.expect_continue = False
        self.continue_sent = False
        self.upgrade = False
        self.host = b""


class RequestParser:
    """httptools callbacks producing complete-headed `Request`s in order."""

    __slots__ = (
        "_building",
        "_current",
        "_head_bytes",
        "_parser",
        "error",
        "limits",
        "ready",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request] = deque()
        self._building: Request | None = None
        self._current: Request | None = None
        self._head_bytes = 0
        self.error: ParseError | None = None

    @property
    def in_head(self) -> bool:
        """A request has begun but its head is not complete yet."""
        return self._building is not None

    def feed(self, data: bytes) -> None:
        """Parse `data`; a refused request sets `error` and stops parsing."""
        if self.error is not None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._current is not None:
                self._current.upgrade = True
                self._current.complete = True
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, ParseError):
                self.error = cause
            else:
                self.error = ParseError(400, "bad_request", str(error))
        except httptools.HttpParserError as error:
            self.error = ParseError(400, "bad_request", str(error))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._building = Request()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        request = self._building
        assert request is not None
        request.url += url
        self._head_bytes += len(url)
        if len(request.url) > self.limits.max_request_line:
            raise ParseError(414, "url_too_long", "request line longer than the limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._building
        assert request is not None
        request.headers.append((name, value))
        self._head_bytes += len(name) + len(value) + 4
        if len(request.headers) > self.limits.max_header_count:
            raise ParseError(431, "too_many_headers", "too many header fields")
        if self._head_bytes > self.limits.max_head_bytes:
            raise ParseError(431, "head_too_large", "request head larger than the limit")
        lowered = name.lower()
        if lowered == b"expect" and value.lower() == b"100-continue":
            request.expect_continue = True
        elif lowered == b"host":
            request.host = value

    def on_headers_complete(self) -> None:
        request = self._building
        assert request is not None
        parser = self._parser
        request.method = parser.get_method()
        request.http_version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        if request.http_version == "1.1" and not request.host:
            raise ParseError(400, "bad_request", "HTTP/1.1 request without a Host header")
        self._building = None
        self._current = request
        self.ready.append(request)

    def on_body(self, body: bytes) -> None:
        request = self._current
        assert request is not None
        request.body.append(body)
        request.body_received += len(body)

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        request.complete = True
        self._current = None
