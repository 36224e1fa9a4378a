"""WSGI apps for the real-process tests: `poolwarden run tests.apps.wsgi_apps:app`.

One app serves every route, so that a test module can share one server:
`/NAME/...` runs route NAME directly, `/v/NAME/...` runs the same route
wrapped in `wsgiref.validate.validator`, which raises (a 500 from the server
and a traceback in its log) or prints to stderr when the server breaks PEP
3333. Query parameters steer a route; `pattern()` makes the bytes a test can
recompute to check a body.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.validate import validator

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]

BLOCK = 65536


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ per 64 KiB block, so misordered data shows."""
    base = hashlib.sha256(b"poolwarden %d" % seed).digest() * (BLOCK // 32)
    blocks = (index.to_bytes(8, "big") + base[8:] for index in range(size // BLOCK + 1))
    return b"".join(blocks)[:size]


def _query(environ: Environ) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_qs(environ["QUERY_STRING"]).items()}


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(
        status,
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _json(start_response: StartResponse, value: object) -> list[bytes]:
    body = json.dumps(value, sort_keys=True).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# routes


def info(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Who asked what: identifies a request (pipelining, keep-alive tests)."""
    body = environ["wsgi.input"].read(-1)
    return _json(
        start_response,
        {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "remote_port": environ["REMOTE_PORT"],
            "body": body.decode("latin-1"),
            "pid": os.getpid(),
        },
    )


def environ_dump(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The CGI variables, and the wsgi.* values that are plain data."""
    dumped: dict[str, object] = {
        key: value for key, value in environ.items() if isinstance(value, str)
    }
    for key in ("wsgi.version", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
        dumped[key] = environ[key]
    dumped["wsgi.input_terminated"] = environ.get("wsgi.input_terminated")
    dumped["has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    return _json(start_response, dumped)


def upload(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Read the body the way `mode` says; answer its length and digest.

    With `echo=1` the body comes back instead, as a stream of `chunk`-sized
    pieces with no Content-Length.
    """
    query = _query(environ)
    mode = query.get("mode", "read")
    size = int(query.get("n", "8192"))
    stream = environ["wsgi.input"]
    pieces: list[bytes] = []
    if mode == "read":
        while piece := stream.read(size):
            pieces.append(piece)
    elif mode == "readline":
        while piece := (stream.readline(size) if size > 0 else stream.readline()):
            pieces.append(piece)
    elif mode == "readlines":
        pieces = stream.readlines()
    elif mode == "iter":
        pieces = list(stream)
    elif mode == "all":
        pieces = [stream.read(-1)]
    body = b"".join(pieces)
    if query.get("echo") == "1":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _chunks(body, int(query.get("chunk", "8192")))
    return _json(
        start_response,
        {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "reads": len(pieces)},
    )


def download(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """`pattern(size, seed)` in `chunk`-sized pieces; Content-Length if `cl=1`."""
    query = _query(environ)
    size = int(query.get("size", "0"))
    headers = [("Content-Type", "application/octet-stream")]
    if query.get("cl") == "1":
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)
    return _chunks(pattern(size, int(query.get("seed", "0"))), int(query.get("chunk", "8192")))


def written(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The body through the `write` callable, then an empty iterable."""
    query = _query(environ)
    data = pattern(int(query.get("size", "0")), int(query.get("seed", "0")))
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for piece in _chunks(data, int(query.get("chunk", "8192"))):
        write(piece)
    return []


def boom(environ: Environ, start_response: StartResponse) -> list[bytes]:
    raise RuntimeError(f"boom {environ['QUERY_STRING']}")


def raise_after_start(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """start_response, then an exception before any body: the server owes a 500."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise RuntimeError(f"raised after start_response {environ['QUERY_STRING']}")


def exc_info_replaced(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The PEP 3333 error path: a second start_response with exc_info, before
    anything was sent, replaces the status and headers."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "yes")])
    try:
        raise ValueError("caught by the app")
    except ValueError:
        body = b"the app handled it"
        start_response(
            "503 Service Unavailable",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            sys.exc_info(),
        )
    return [body]


def exc_info_late(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    """exc_info after the headers went out: start_response must re-raise."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first part\n"
    try:
        raise ValueError(f"failed mid-body {environ['QUERY_STRING']}")
    except ValueError:
        start_response(
            "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
        )
    yield b"never sent\n"


class Closing:
    """An iterable that records `close()` by appending to the `marker` file."""

    def __init__(self, marker: str, chunks: int, size: int, fail_at: int) -> None:
        self.marker = marker
        self.chunks = chunks
        self.size = size
        self.fail_at = fail_at

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.chunks):
            if index == self.fail_at:
                raise RuntimeError(f"failed at chunk {index}")
            yield b"x" * self.size

    def close(self) -> None:
        with open(self.marker, "a") as marker:
            marker.write("closed\n")


def closing(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    query = _query(environ)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(
        query["marker"],
        int(query.get("chunks", "3")),
        int(query.get("size", "10")),
        int(query.get("fail_at", "-1")),
    )


def file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """`wsgi.file_wrapper` on the file at `path` (from `skip` on), or on a
    BytesIO of it with `bytesio=1`; the app's own Content-Length if `cl`."""
    query = _query(environ)
    handle: Any = open(query["path"], "rb")  # noqa: SIM115 - closed by the wrapper
    if query.get("bytesio") == "1":
        with handle:
            handle = io.BytesIO(handle.read())
    if "skip" in query:
        handle.seek(int(query["skip"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "cl" in query:
        headers.append(("Content-Length", query["cl"]))
    start_response("200 OK", headers)
    wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, 32768)
    return wrapper


def short(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """A Content-Length the body does not fill: the framing is broken."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    return [b"only part"]


def ignore_body(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Answers without reading the request body."""
    return _text(start_response, b"not reading your body\n")


def pid(environ: Environ, start_response: StartResponse) -> list[bytes]:
    return _text(start_response, str(os.getpid()).encode())


def log(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Writes `token` to wsgi.errors: a barrier for tests reading the log."""
    errors = environ["wsgi.errors"]
    errors.write(f"log-token {_query(environ)['token']}\n")
    errors.flush()
    return _text(start_response, b"logged\n")


def custom(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """The status (`status`) and extra headers (`hn`/`hv` pairs) the query asks for."""
    params = parse_qs(environ["QUERY_STRING"], keep_blank_values=True)
    status = params.get("status", ["200 OK"])[-1]
    headers = [("Content-Type", "text/plain")]
    headers += zip(params.get("hn", []), params.get("hv", []), strict=True)
    start_response(status, headers)
    return [b"custom\n"]


def no_content(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("204 No Content", [])
    return []


def os_error(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """The OSErrors apps really raise: from a file, a database, after the head."""
    kind, _, marker = environ["QUERY_STRING"].partition("-")
    if kind == "file":
        with open(f"/nonexistent/{marker}.txt", "rb") as missing:
            return [missing.read()]
    if kind == "refused":
        raise ConnectionRefusedError(111, f"connection to the database refused {marker}")
    if kind == "timeout":
        raise TimeoutError(f"the upstream timed out {marker}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _fails_mid_body(marker)


def _fails_mid_body(marker: str) -> Iterator[bytes]:
    yield b"first part\n"
    raise PermissionError(13, f"permission denied mid-body {marker}")


ROUTES: dict[str, Callable[[Environ, StartResponse], Iterable[bytes]]] = {
    "info": info,
    "environ": environ_dump,
    "upload": upload,
    "download": download,
    "written": written,
    "boom": boom,
    "raise-after-start": raise_after_start,
    "exc-info": exc_info_replaced,
    "exc-info-late": exc_info_late,
    "closing": closing,
    "file": file,
    "short": short,
    "ignore-body": ignore_body,
    "pid": pid,
    "log": log,
    "no-content": no_content,
    "custom": custom,
    "os-error": os_error,
}


def _route(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    parts = environ["PATH_INFO"].split("/")
    name = parts[2] if len(parts) > 2 and parts[1] == "v" else parts[1]
    route = ROUTES.get(name)
    if route is None:
        return _text(start_response, b"no such route\n", "404 Not Found")
    return route(environ, start_response)


_validated = validator(_route)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"].startswith("/v/"):
        result: Iterable[bytes] = _validated(environ, start_response)
        return result
    return _route(environ, start_response)
