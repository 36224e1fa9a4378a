"""Status lines, the Date header and the responses the server writes itself.

Everything here returns bytes ready for the socket; nothing here does I/O.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

SERVER_NAME = b"poolwarden"

STATUS_LINES: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}


def status_line(status: int, phrase: bytes | None = None) -> bytes:
    """The response's first line; an unknown code gets the phrase it was given."""
    if phrase is None:
        cached = STATUS_LINES.get(status)
        if cached is not None:
            return cached
        phrase = b"Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


class DateCache:
    """The `Date` header, formatted at most once a second.

    Formatting an HTTP date costs microseconds; at tens of thousands of
    responses a second that is worth caching.
    """

    __slots__ = ("_header", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: %s\r\n" % formatdate(now, usegmt=True).encode("ascii")
        return self._header


DATE = DateCache()


def simple_response(
    status: int,
    body: str,
    *,
    reason_code: str | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
    head_only: bool = False,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """A complete `Connection: close` response with a plain-text body.

    `reason_code` names why the server answered itself (`queue_full`,
    `startup_failed`, ...); it goes in `X-Poolwarden-Reason` so that clients and
    logs can tell a server answer from one the app gave.
    """
    payload = body.encode("utf-8")
    lines = [
        status_line(status),
        b"server: " + SERVER_NAME + b"\r\n",
        DATE.header(),
        b"content-type: %s\r\n" % content_type.encode("latin-1"),
        b"content-length: %d\r\n" % len(payload),
        b"connection: close\r\n",
    ]
    if reason_code:
        lines.append(b"x-poolwarden-reason: %s\r\n" % reason_code.encode("ascii"))
    for name, value in extra_headers:
        lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    lines.append(b"\r\n")
    if not head_only:
        lines.append(payload)
    return b"".join(lines)
