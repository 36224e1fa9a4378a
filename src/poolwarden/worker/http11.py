"""Incremental request parsing for a worker's connection.

A connection owns one httptools parser fed with whatever arrives; the
callbacks turn the byte stream into `Request` objects queued in order, so
pipelined requests are answered in order. Body bytes go to the request they
belong to and are consumed by the app as it reads (never buffered whole).

The limits of `poolwarden.http.limits` apply here too: the front end checks a
connection's first head, the worker checks every head that follows; so do
the rules of `poolwarden.http.rules` and `poolwarden.http.fields`. The bytes
reach llhttp through a `RequestStream`, which passes on what llhttp alone
would refuse (extension methods, chunk extensions with whitespace).
"""

from __future__ import annotations

from collections import deque

import httptools

from poolwarden.http.fields import OWS
from poolwarden.http.limits import HeadLimits
from poolwarden.http.rules import Refusal, request_parser, request_verdict
from poolwarden.http.stream import RequestStream


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
        "chunked",
        "complete",
        "content_length",
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
        self.host: bytes | None = None
        self.chunked = False
        """It has Transfer-Encoding (which llhttp accepts only with chunked last)."""
        self.content_length = 0


class RequestParser:
    """httptools callbacks producing complete-headed `Request`s in order."""

    __slots__ = (
        "_building",
        "_current",
        "_head_bytes",
        "_parser",
        "_stream",
        "_unparsed",
        "error",
        "limits",
        "ready",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self._parser = request_parser(self)
        self._stream = RequestStream(self._parser, limits.max_head_bytes)
        self.ready: deque[Request] = deque()
        self._building: Request | None = None
        self._current: Request | None = None
        self._head_bytes = 0
        self._unparsed = 0
        self.error: ParseError | None = None

    @property
    def in_head(self) -> bool:
        """A request has begun but its head is not complete yet."""
        return self._building is not None or self._stream.pending

    def feed(self, data: bytes) -> None:
        """Parse `data`; a refused request sets `error` and stops parsing."""
        if self.error is not None:
            return
        building = self._building
        current = self._current
        received = 0 if current is None else current.body_received
        try:
            self._stream.feed(data)
        except httptools.HttpParserUpgrade:
            if self._current is not None:
                self._current.upgrade = True
                self._current.complete = True
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, ParseError):
                self._refuse(cause)
            else:
                self._refuse(ParseError(400, "bad_request", str(error)))
        except httptools.HttpParserError as error:
            self._refuse(ParseError(400, "bad_request", str(error)))
        else:
            if self._building is not None:
                if self._building is building:
                    self._count_unparsed(len(data), "request head")
            elif current is not None and current is self._current:
                if current.body_received == received:
                    self._count_unparsed(len(data), "chunk framing or trailer section")
                else:
                    self._unparsed = 0

    def _count_unparsed(self, size: int, what: str) -> None:
        """Bound the bytes httptools holds back while they arrive.

        httptools keeps a header line (or a trailer line) to itself until the
        line ends, so `on_header` alone cannot stop a client that never ends
        one. Counted here are whole reads that began and ended inside a head,
        or in a body without giving any of it: never more than what httptools
        holds, and short of it by at most the read where the head began.
        """
        self._unparsed += size
        if self._unparsed > self.limits.max_head_bytes:
            self.error = ParseError(431, "head_too_large", f"{what} larger than the limit")

    def _refuse(self, error: ParseError) -> None:
        """Stop at `error`; a request whose framing it broke is not served.

        llhttp judges `Transfer-Encoding` after `on_headers_complete`, so the
        request is already queued: an app must never see a request whose
        body the parser refused (the heart of request smuggling).
        """
        self.error = error
        current = self._current
        if current is not None and self.ready and self.ready[-1] is current:
            self.ready.pop()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._building = Request()
        self._head_bytes = 0
        self._unparsed = 0

    def on_url(self, url: bytes) -> None:
        request = self._building
        assert request is not None
        request.url += url
        self._head_bytes += len(url)
        if len(request.url) > self.limits.max_request_line:
            raise ParseError(414, "url_too_long", "request line longer than the limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_head_bytes:
            raise ParseError(431, "head_too_large", "request head larger than the limit")
        request = self._building
        if request is None:
            return  # a trailer field of a chunked body: counted, then dropped
        value = value.rstrip(OWS)  # RFC 9112 §5.1 (http.fields.field_value)
        request.headers.append((name, value))
        if len(request.headers) > self.limits.max_header_count:
            raise ParseError(431, "too_many_headers", "too many header fields")
        lowered = name.lower()
        if lowered == b"expect" and value.lower() == b"100-continue":
            request.expect_continue = True
        elif lowered == b"host":
            if request.host is not None:
                raise ParseError(400, "bad_request", "more than one Host header")
            request.host = value
        elif lowered == b"content-length":
            request.content_length = int(value)  # digits: llhttp has checked it
        elif lowered == b"transfer-encoding":
            request.chunked = True

    def on_headers_complete(self) -> None:
        request = self._building
        assert request is not None
        parser = self._parser
        request.method = self._stream.method or parser.get_method()
        request.keep_alive = parser.should_keep_alive()
        # Known here, not only when llhttp stops at the upgrade: by then
        # on_message_complete has already let go of the request.
        request.upgrade = parser.should_upgrade()
        # "METHOD SP target SP HTTP/x.y", measured as the front end does.
        if len(request.method) + len(request.url) + 10 > self.limits.max_request_line:
            raise ParseError(414, "url_too_long", "request line longer than the limit")
        verdict = request_verdict(
            request.method, parser.get_http_version(), request.url, request.chunked
        )
        if isinstance(verdict, Refusal):
            raise ParseError(*verdict)
        request.http_version = verdict
        if request.http_version == "1.1" and request.host is None:
            raise ParseError(400, "bad_request", "HTTP/1.1 request without a Host header")
        if request.expect_continue and request.http_version == "1.0":
            request.expect_continue = False  # RFC 9110 10.1.1: ignored in HTTP/1.0
        self._building = None
        self._current = request
        self._unparsed = 0
        self.ready.append(request)
        self._stream.head_complete(request.chunked, request.content_length)

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
