"""Each request head on an ASGI connection: read under the limits, made a scope.

```
 HttpProtocol.data_received ──feed_data──▶ httptools parser
                                             │ on_message_begin, on_url, on_header
                                             ▼
                               HeadReader: request line, fields, Host, Expect, checked
                                             │ against `http.limits` (Refused: 414, 431, 400)
                                             │ on_headers_complete, on_body, on_message_complete
                                             ▼
                               HttpProtocol ──complete(), http_scope()──▶ one RequestCycle
```

httptools looks each callback up once, on the object it is given when the
parser is made: the head's callbacks are this reader's own methods, and
the other three are the connection's, handed in, so every call goes
straight to its owner with nothing in between. The front end checks a
connection's first head by the same limits; the worker checks every head
that follows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from poolwarden import channel as ch
from poolwarden.http.fields import OWS
from poolwarden.http.limits import HeadLimits
from poolwarden.http.rules import Refusal, request_verdict
from poolwarden.http.target import split_target

ASGI_VERSIONS = {"version": "3.0", "spec_version": "2.4"}
"""The scopes' `asgi` key: the ASGI and HTTP-spec versions spoken."""


class Refused(Exception):
    """A request head the worker refuses, with the status to answer with."""

    def __init__(self, status: int, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason_code = reason_code


class HeadReader:
    """One connection's request heads as httptools reports them, one at a time."""

    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "head_bytes",
        "headers",
        "host",
        "in_head",
        "limits",
        "on_body",
        "on_headers_complete",
        "on_message_complete",
        "unparsed",
        "url",
    )

    def __init__(
        self,
        limits: HeadLimits,
        *,
        on_headers_complete: Callable[[], None],
        on_body: Callable[[bytes], None],
        on_message_complete: Callable[[], None],
    ) -> None:
        self.limits = limits
        self.on_headers_complete = on_headers_complete
        self.on_body = on_body
        self.on_message_complete = on_message_complete
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        """Names lowered, as ASGI wants them."""
        self.head_bytes = 0
        self.in_head = False
        """A request has begun and its head is not complete yet."""
        self.expect_continue = False
        self.host: bytes | None = None
        self.chunked = False
        """The head has a Transfer-Encoding (llhttp has judged its framing)."""
        self.content_length = 0
        self.unparsed = 0

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.in_head = True
        self.expect_continue = False
        self.host = None
        self.chunked = False
        self.content_length = 0
        self.unparsed = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if len(self.url) > self.limits.max_request_line:
            raise Refused(414, "url_too_long", "request line longer than the limit")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_head_bytes:
            raise Refused(431, "head_too_large", "request head larger than the limit")
        if not self.in_head:
            return  # a trailer field of a chunked body: counted, then dropped
        name = name.lower()
        value = value.rstrip(OWS)  # RFC 9112 §5.1 (http.fields.field_value)
        self.headers.append((name, value))
        if len(self.headers) > self.limits.max_header_count:
            raise Refused(431, "too_many_headers", "too many header fields")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif name == b"host":
            if self.host is not None:
                raise Refused(400, "bad_request", "more than one Host header")
            self.host = value
        elif name == b"content-length":
            self.content_length = int(value)  # digits: llhttp has checked it
        elif name == b"transfer-encoding":
            self.chunked = True

    # the connection's

    def complete(self, method: bytes, parsed_version: str) -> str:
        """The head is whole: judge what only the whole head tells, and return
        the HTTP version to serve it as. What follows it (a chunked body's
        trailer) is counted from nothing."""
        self.in_head = False
        # "METHOD SP target SP HTTP/x.y", measured as the front end does.
        if len(method) + len(self.url) + 10 > self.limits.max_request_line:
            raise Refused(414, "url_too_long", "request line longer than the limit")
        http_version = request_verdict(method, parsed_version, self.url, self.chunked)
        if isinstance(http_version, Refusal):
            raise Refused(*http_version)
        if http_version == "1.1" and self.host is None:
            raise Refused(400, "bad_request", "HTTP/1.1 request without a Host header")
        self.head_bytes = 0
        return http_version


def http_scope(
    method: bytes,
    http_version: str,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    dispatch: ch.Dispatch,
    server: tuple[str, int | None],
    client: tuple[str, int] | None,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The ASGI `http` scope of one request (`root_path` as the front end
    routed the connection's first request)."""
    raw_path, query = split_target(url)
    path = raw_path.decode("ascii", "replace")
    if "%" in path:
        path = unquote(path)
    return {
        "type": "http",
        "asgi": ASGI_VERSIONS,
        "http_version": http_version,
        "server": server,
        "client": client,
        "scheme": dispatch.scheme,
        "method": method.decode("ascii"),
        "root_path": dispatch.script_name,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "state": state,
    }
