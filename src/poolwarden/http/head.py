"""Reading a request head in the front end, before any worker sees it.

The front end buffers a connection's first bytes until the head is complete,
then parses it here. A head that breaks a limit or the grammar becomes a
`HeadError` carrying the status to answer with, so that malformed requests are
answered by the front end and never reach (or crash) a worker.

The parser is llhttp (through httptools) in its strict mode: it refuses
conflicting `Content-Length` and `Transfer-Encoding`, duplicate
`Content-Length`, and bad tokens, which is what request smuggling relies on.
Where llhttp and RFC 9110/9112 part, the rules of `http.rules`,
`http.methods` and `http.fields` apply here as in the workers, so that a
head gets the same answer first on a connection or later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools

from poolwarden.http.fields import field_value
from poolwarden.http.limits import HeadLimits
from poolwarden.http.methods import stand_in_method
from poolwarden.http.rules import Refusal, request_parser, request_verdict

HEAD_END = b"\r\n\r\n"


class HeadError(Exception):
    """A request head the front end refuses, with the response it deserves."""

    def __init__(self, status: int, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason_code = reason_code
        self.message = message


@dataclass(slots=True)
class RequestHead:
    """What the front end needs from a head to route and log the request."""

    method: str
    target: bytes
    path: bytes
    query: bytes
    host: str
    http_version: str
    keep_alive: bool
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    head_length: int = 0


class _HeadCollector:
    """httptools callbacks that keep the head and ignore any body bytes."""

    __slots__ = (
        "complete",
        "header_count",
        "headers",
        "host",
        "limits",
        "transfer_coded",
        "url",
    )

    def __init__(self, limits: HeadLimits) -> None:
        self.limits = limits
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_count = 0
        self.host: bytes | None = None
        self.transfer_coded = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_header_count:
            raise HeadError(
                431,
                "too_many_headers",
                f"more than {self.limits.max_header_count} header fields",
            )
        value = field_value(value)
        self.headers.append((name, value))
        if len(name) == 4 and name.lower() == b"host":
            if self.host is not None:
                # Two hosts let a proxy and the app disagree on the target.
                raise HeadError(400, "bad_request", "more than one Host header")
            self.host = value
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self.transfer_coded = True

    def on_headers_complete(self) -> None:
        self.complete = True


def check_incomplete(buffer: bytes, limits: HeadLimits) -> None:
    """Refuse a head that is still arriving but already breaks a size limit.

    Called on every read that did not complete the head, so that a client
    cannot make the front end buffer more than the limits allow, nor wait
    for the head timeout with a head that is already wrong.
    """
    line_end = buffer.find(b"\r\n")
    if line_end > limits.max_request_line or (
        line_end < 0 and len(buffer) > limits.max_request_line
    ):
        raise HeadError(414, "url_too_long", "request line longer than the limit")
    if len(buffer) > limits.max_head_bytes:
        raise HeadError(431, "head_too_large", "request head larger than the limit")
    if buffer.count(b"\n") != buffer.count(b"\r\n"):
        # A head of bare-LF lines never shows the CRLF CRLF that ends it.
        raise HeadError(400, "bad_request", "line ending without CR (bare LF)")


def find_head_end(buffer: bytes) -> int:
    """Index just past the blank line that ends the head, or -1."""
    index = buffer.find(HEAD_END)
    return -1 if index < 0 else index + len(HEAD_END)


def parse_head(buffer: bytes, head_end: int, limits: HeadLimits) -> RequestHead:
    """Parse the complete head `buffer[:head_end]`; raise HeadError if refused."""
    line_end = buffer.find(b"\r\n")
    if line_end > limits.max_request_line:
        raise HeadError(414, "url_too_long", "request line longer than the limit")
    if head_end > limits.max_head_bytes:
        raise HeadError(431, "head_too_large", "request head larger than the limit")
    head, method = _with_stand_in(buffer[:head_end])
    collector = _HeadCollector(limits)
    parser = request_parser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserCallbackError as error:
        cause = error.__context__
        if isinstance(cause, HeadError):
            raise cause from None
        raise HeadError(400, "bad_request", str(error)) from None
    except httptools.HttpParserUpgrade:
        # An Upgrade request (WebSocket): the head itself is complete and valid.
        pass
    except httptools.HttpParserError as error:
        raise HeadError(400, "bad_request", str(error)) from None
    if not collector.complete:
        raise HeadError(400, "bad_request", "incomplete request head")
    if method is None:
        method = parser.get_method()
    version = request_verdict(
        method, parser.get_http_version(), collector.url, collector.transfer_coded
    )
    if isinstance(version, Refusal):
        raise HeadError(*version)
    if version == "1.1" and collector.host is None:
        raise HeadError(400, "bad_request", "HTTP/1.1 request without a Host header")
    try:
        url = httptools.parse_url(collector.url)
    except httptools.HttpParserInvalidURLError:
        raise HeadError(400, "bad_request", "invalid request target") from None
    return RequestHead(
        method=method.decode("ascii"),
        target=collector.url,
        path=url.path or b"/",
        query=url.query or b"",
        host="" if collector.host is None else collector.host.decode("latin-1"),
        http_version=version,
        keep_alive=parser.should_keep_alive(),
        headers=collector.headers,
        head_length=head_end,
    )


def _with_stand_in(head: bytes) -> tuple[bytes, bytes | None]:
    """`head` as llhttp is given it, and its method if llhttp gets a stand-in.

    llhttp refuses extension methods it has no name for (`http.methods`).
    Empty lines before the request line are dropped, as llhttp drops them.
    """
    start = 0
    while head[start : start + 1] in (b"\r", b"\n"):
        start += 1
    space = head.find(b" ", start)
    if space < 0:
        return head, None
    method = head[start:space]
    stand_in = stand_in_method(method)
    if stand_in is None:
        return head, None
    return stand_in + head[space:], method
