"""Request targets and requests written out again: shared by both workers."""

from __future__ import annotations

from collections.abc import Iterable


def split_target(url: bytes) -> tuple[bytes, bytes]:
    """(raw path, query) of a request target.

    An absolute-form target (`http://host/path`) keeps its path only. A
    target with a fragment never gets here: `http.rules` refuses it.
    """
    query_at = url.find(b"?")
    if query_at >= 0:
        raw_path, query = url[:query_at], url[query_at + 1 :]
    else:
        raw_path, query = url, b""
    if raw_path[:1] != b"/" and raw_path != b"*":
        scheme_end = raw_path.find(b"://")
        slash = raw_path.find(b"/", scheme_end + 3 if scheme_end >= 0 else 0)
        raw_path = raw_path[slash:] if slash >= 0 else b"/"
    return raw_path, query


def request_bytes(
    method: bytes,
    target: bytes,
    http_version: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    chunked: bool,
) -> bytes:
    """A parsed request written out again, for handing it to another pool.

    A chunked body (complete, by the caller's check) becomes one chunk and
    the last chunk; a Content-Length body is the bytes received so far, and
    the rest follows from the socket.
    """
    if chunked:
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return b"".join(
        [
            method,
            b" ",
            target,
            b" HTTP/",
            http_version.encode("ascii"),
            b"\r\n",
            *(name + b": " + value + b"\r\n" for name, value in headers),
            b"\r\n",
            body,
        ]
    )
