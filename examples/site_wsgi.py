"""The demo site's WSGI app: a few routes that show what the server does."""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

StartResponse = Callable[..., Any]

INDEX = """<!doctype html>
<title>poolwarden demo (WSGI)</title>
<h1>poolwarden demo: WSGI app</h1>
<p>Served by worker process {pid}.</p>
<ul>
<li><a href="/env">/env</a>: the WSGI environ of this request</li>
<li><a href="/stream">/stream</a>: a response streamed in chunks</li>
<li><a href="/slow?seconds=3">/slow?seconds=3</a>: a slow request</li>
<li><code>curl -d 'some body' http://HOST/echo</code>: echoes a request body</li>
<li><a href="/crash">/crash</a>: crashes this worker in C (a segfault), to see the 502 and its event</li>
</ul>
"""


def _respond(
    start_response: StartResponse,
    body: bytes,
    content_type: str = "text/plain",
    status: str = "200 OK",
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _stream(count: int) -> Iterator[bytes]:
    for number in range(count):
        yield f"chunk {number}\n".encode()
        time.sleep(0.2)


def _crash_in_c() -> None:
    """Reads address 0 through ctypes: a segfault, as a buggy C extension would."""
    import ctypes

    ctypes.string_at(0)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/":
        page = INDEX.format(pid=os.getpid()).replace(
            "HOST", html.escape(environ.get("HTTP_HOST", ""))
        )
        return _respond(start_response, page.encode(), "text/html; charset=utf-8")
    if path == "/env":
        shown = {key: str(value) for key, value in sorted(environ.items())}
        return _respond(start_response, json.dumps(shown, indent=2).encode(), "application/json")
    if path == "/echo":
        return _respond(start_response, environ["wsgi.input"].read())
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(5)
    if path == "/crash":
        _crash_in_c()
    if path == "/slow":
        query = dict(
            part.partition("=")[::2] for part in environ["QUERY_STRING"].split("&") if part
        )
        seconds = min(float(query.get("seconds", "3")), 30.0)
        time.sleep(seconds)
        return _respond(start_response, f"slept {seconds} s in worker {os.getpid()}\n".encode())
    return _respond(start_response, b"not found\n", status="404 Not Found")
