"""Limits on a request head, enforced by the front end and by workers alike.

The front end reads every connection's first head; a worker reads the heads of
the requests that follow on a keep-alive connection. Both apply these numbers so
that a client cannot get past a limit by sending its oversized head second.
"""

from __future__ import annotations

import msgspec


class HeadLimits(msgspec.Struct, frozen=True):
    """Bounds on what a client may send before its request is dispatched."""

    max_request_line: int = 8190
    """Longest request line in bytes, else 414. nginx's default buffer is 8 KiB;
    gunicorn allows 4094."""

    max_header_count: int = 100
    """Most header fields, else 431. Same as gunicorn's limit_request_fields."""

    max_head_bytes: int = 32768
    """Longest whole head (request line and headers) in bytes, else 431. nginx
    allows 4 buffers of 8 KiB; IIS's MaxRequestBytes is 16 KiB."""

    head_timeout: float = 10.0
    """Seconds a client has to send its whole head, else 408. nginx waits 60 s,
    IIS 120 s; 10 s keeps slow-loris clients from holding connections open."""
